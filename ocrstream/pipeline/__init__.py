"""The embedded one-process pipeline (``embedded``)."""
