"""HTTP adapter (FastAPI). Imports the core; the core never imports this."""
