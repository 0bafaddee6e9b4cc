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


def exhaustive_spec(name, kind):
    """``name:kind`` at the parameters where its search reaches every item
    (``CodeIndex.exhaustive``): an approximate kind then equals the exact scan."""
    from utils.retrieval.index import BACKENDS
    params = BACKENDS[name].exhaustive.get(kind, {})
    return ",".join([f"{name}:{kind}"] + [f"{key}={value}" for key, value in params.items()])


def index_specs():
    """Every registered backend's kinds as (name, kind) params, skipped with
    what to install where the backend's packages are missing."""
    from utils.retrieval.index import BACKENDS
    for name, cls in sorted(BACKENDS.items()):
        marks = [] if cls.installed() else [pytest.mark.skip(reason=f"{name} needs "
                                                                    f"{cls.requires}")]
        for kind in cls.kinds:
            yield pytest.param(name, kind, marks=marks, id=f"{name}:{kind}")
