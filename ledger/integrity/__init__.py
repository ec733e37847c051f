"""The formats an outside verifier needs and nothing else: RFC 8785 canonical bytes, the RFC 9162
Merkle tree and proofs, C2SP signed notes and checkpoints. Imports no other csledger module, so
the independent witness and an inspector's offline checks depend on this package alone."""
