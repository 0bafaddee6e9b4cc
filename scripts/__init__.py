"""Command-line tools (``python -m scripts.NAME``) and the shell scripts beside them.

No library module (utils/, models/) imports anything from here."""
