"""The base layer: errors, flags, files, processes, downloads and checkpoint files.

It imports nothing else of the project (tests/test_layering.py checks it)."""
