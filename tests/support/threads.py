"""How many threads the tests' processes compute on: both cores (2), or
what HASHNET_TEST_THREADS says (.ci/run's second pass, on other kernels, sets
1). tests/conftest.py sets it in the test processes; the tests pass it as
``--num_threads`` to the entry points they start."""
import os

THREADS_ENV = "HASHNET_TEST_THREADS"
THREADS = int(os.environ.get(THREADS_ENV, "2"))
