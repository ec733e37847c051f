"""Commands of the `csledger` CLI for api; registered on `cli.app` when `cli` is imported."""

from __future__ import annotations

from .cli import app  # noqa: F401
