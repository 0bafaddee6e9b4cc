"""Plain modules the test files import (``from support.cli import run_python``):
one noun each. tests/ is on sys.path while pytest runs (it imports
tests/conftest.py from there); a test file run as a script gets it through
PYTHONPATH (``support.cli.run_test_script``)."""
