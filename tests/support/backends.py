"""The Hamming kernels' backends, for ``pytest.mark.parametrize``."""
import pytest


def backend_params():
    """Both Hamming backends: numba's cases are reported as skipped, with the
    reason, where numba is not installed (instead of vanishing from the
    collection)."""
    from utils.retrieval import hamming
    missing = "numba" not in hamming.available_backends()
    return ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
        missing, reason="numba is not installed (pip install -r requirements-dev.txt)"))]
