"""The core: entries, rules, chain and Merkle tree, stock, audit math, persistence.

Nothing here imports FastAPI or ReportLab; the pure domain modules (entries, canonical,
quantities, identifiers, merkle, checkpoints, projections) import no SQLAlchemy either.
"""
