"""Pure value types and rules: entries (what happened), commands (what was asked), quantities,
identifiers (DEA numbers, NDCs), roles and principals, the registrant's policy, alert rules and
the projections (the one state machine that turns entries into stock). No SQLAlchemy, no I/O."""
