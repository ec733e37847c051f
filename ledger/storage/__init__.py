"""The database: SQLModel tables, the ledger's unit of work and append path (``store``), the
verifiable log's signed checkpoints and Merkle nodes (``log``), and the patient registry key."""
