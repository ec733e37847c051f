"""The core of csledger: what a controlled-substance record is, how it is proved, kept and used.

Layers, each importing only those below it (checked by ``lint-imports``; see docs/architecture.md):

- ``ledger.services``  use cases: one function per command, reports' figures, verify, backup
- ``ledger.storage``   the database: tables, the unit of work and append path, the signed log
- ``ledger.domain``    pure value types and rules: entries, commands, quantities, projections
- ``ledger.integrity`` the formats a third party checks: canonical bytes, RFC 9162 Merkle tree,
                       C2SP signed notes and checkpoints (no other csledger import)

``ledger.settings`` (pydantic-settings) is read by the interfaces and the reports; the domain and
the integrity formats never read it. Nothing here imports FastAPI or ReportLab.
"""
