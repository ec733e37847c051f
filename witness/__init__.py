"""``csledger-witness``: an independent C2SP tlog-witness meant to run on another machine. It
imports only ``ledger.integrity`` (the formats), never the server (checked by ``lint-imports``)."""
