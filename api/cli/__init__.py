"""``csledger``: the command line (typer). ``main`` defines the app; each module adds a group."""
