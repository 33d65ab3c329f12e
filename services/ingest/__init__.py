"""The ingest service: ``handler.py`` (pure step) and ``main.py`` (wiring)."""
