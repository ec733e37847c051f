"""Use cases: one function per command (validate every field, then append through
``Ledger.execute`` in one transaction), and the reads built on the ledger: stock, the
accountability audit, alerts, verify, offline bundles, backup."""
