"""Loaded by every Python started with this folder on PYTHONPATH (the test
suite's subprocesses): no connection except to 127.0.0.1 (see loopback_only.py)."""
import loopback_only

loopback_only.install()
