"""The base layer: errors, flags, files, processes (one or several: distributed.py),
downloads and checkpoint files.

It imports nothing else of the project (the layering test checks it)."""
