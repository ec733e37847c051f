"""The interfaces: HTTP API (``api.http``), clinic-floor pages (``api.web``) and the command line
(``api.cli``). Each parses, authenticates, calls one service, renders; none holds a rule."""
