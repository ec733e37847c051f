"""Alembic migrations for SQLite and PostgreSQL alike (run with ``csledger init`` / ``migrate``)."""
