"""Where the repo, the tests and the network guard are."""
import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
# sitecustomize.py there installs the loopback-only guard in every Python
# started with it on PYTHONPATH (tests/netguard/loopback_only.py)
GUARD_DIR = os.path.join(TESTS, "netguard")
