"""What several test folders share: the session's set-up (``pytest_configure``),
the slowest-files-first order and the durations file that drives it, the
network guard's check after every test, the tiny demo set, the ``args``
builder, the local download server and a file where a folder should be.

Helpers live in support/ (plain modules, imported by name); fixtures used by
one folder live in that folder's conftest.py. pytest (its default "prepend"
import mode) puts tests/ on sys.path when it imports this file: the test
files import support/, tiny_model and download_fixtures from there.
"""
import json
import os
import shutil
import sys
import tempfile

import pytest

from support.paths import GUARD_DIR, REPO, TESTS
from support.threads import THREADS

DURATIONS = os.path.join(TESTS, "durations.json")


def pytest_configure(config):
    """The session's set-up, before collection imports any test file and
    before pytest-xdist starts its workers (each worker runs it again).
    Nothing here has to precede the first Paddle import: the malloc
    variables are read by glibc when a process starts (so they reach the
    processes started after this: xdist's workers and the tests'
    subprocesses), and the rest acts on this process's objects."""
    # glibc's malloc keeps freed memory in the process instead of handing each
    # big buffer back to the kernel, which would page-fault and zero it again at
    # the next step: a 1-epoch AlexNet run's system time 4.5 s -> 2.6 s. Results
    # are unchanged.
    for name, value in {"MALLOC_MMAP_THRESHOLD_": "4294967296",
                        "MALLOC_TRIM_THRESHOLD_": "4294967296",
                        "MALLOC_TOP_PAD_": "536870912"}.items():
        os.environ.setdefault(name, value)

    # No test may reach past 127.0.0.1: the guard refuses other connections in
    # this process and, via sitecustomize on PYTHONPATH, in every Python it starts
    # (tests/netguard/loopback_only.py); each refusal is logged and fails the test.
    if GUARD_DIR not in sys.path:
        sys.path.insert(0, GUARD_DIR)
    import loopback_only
    loopback_only.install()
    if os.environ.get("PYTEST_XDIST_WORKER") or loopback_only.LOG_ENV not in os.environ:
        # one log per pytest process: an xdist worker must not count the other's refusals
        log_dir = tempfile.mkdtemp(prefix="netguard-")
        config.add_cleanup(lambda: shutil.rmtree(log_dir, ignore_errors=True))
        os.environ[loopback_only.LOG_ENV] = os.path.join(log_dir, "refused.txt")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [REPO, GUARD_DIR] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

    # --arch tiny, on which the engine's invariants run (tests/tiny_model.py); its
    # in-process runs skip the engine's figures (the AlexNet CLI run still draws them)
    import tiny_model
    tiny_model.skip_engine_plots()
    # --method plain_pairwise, a method only the tests register (tests/plain_pairwise.py)
    import plain_pairwise  # noqa: F401

    from utils.base.runtime import set_num_threads
    set_num_threads(THREADS)   # 2, or 1 in .ci/run's second pass (support/threads.py)

    # .ci/run runs these a second time on other kernels: for each pair of
    # kernels the suite compares (onnxruntime / Paddle, oneDNN / dygraph,
    # Paddle / numpy, OpenCV / numpy, two orders of summation) the cheapest
    # tests that compare them, within the 10 % of the suite's time the pass
    # may take (docs/contributing.md#the-tests)
    config.addinivalue_line("markers", "float_sensitive: compares the floats of two kernels or "
                            "orders of summation; run again on other kernels by .ci/run")

    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist: keep our order
        config.option.loadscopereorder = False


# ---------------------------------------------------------------- slowest files first
# README's test command runs the files on three xdist workers (-n 3 --dist
# loadfile: the third keeps both cores busy while another waits for a
# subprocess or the disk); xdist hands files out in collection order, so the
# longest go first and the short ones fill in at the end (longest processing
# time first). Each file's seconds come from tests/durations.json, which the
# suite itself rewrites at the end of every complete run (below).
def durations_key(nodeid_or_path):
    """A test file's key in durations.json: its path under tests/."""
    path = str(nodeid_or_path).split("::")[0]
    if os.path.isabs(path):
        path = os.path.relpath(path, TESTS)
    elif path.startswith("tests/"):
        path = path[len("tests/"):]
    return path.replace(os.sep, "/")


def read_durations():
    try:
        with open(DURATIONS) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def pytest_collection_modifyitems(items):
    seconds = read_durations()
    first = {}   # test file -> its position in the collection
    for item in items:
        first.setdefault(durations_key(item.path), len(first))
    # ties in collection order: every xdist worker must reach the same order
    known = sorted((name for name in first if name in seconds),
                   key=lambda name: (-seconds[name], first[name]))
    rank = {name: i for i, name in enumerate(known)}
    # stable: files stay whole, those missing from the file after the others
    items.sort(key=lambda item: rank.get(durations_key(item.path), len(rank)))


MEASURED = {}   # test file -> seconds of this session's test reports


def pytest_runtest_logreport(report):
    """Every phase's seconds (setup, call, teardown), per test file. Under
    pytest-xdist the controller receives every worker's reports here."""
    name = durations_key(report.nodeid)
    MEASURED[name] = MEASURED.get(name, 0.0) + report.duration


def narrowed(config):
    """A run that left tests of its files out (-k, -m, node ids, --deselect,
    stopped at a failure): its per-file sums would be too small."""
    option = config.option
    return bool(option.keyword or option.markexpr or getattr(option, "deselect", None)
                or any("::" in str(arg) for arg in config.args) or option.maxfail
                or getattr(option, "lf", False) or getattr(option, "collectonly", False))


def pytest_sessionfinish(session, exitstatus):
    """Merge this run's per-file seconds into tests/durations.json (the
    controller alone under xdist; entries of files that did not run are
    kept, those of files that no longer exist dropped)."""
    config = session.config
    if hasattr(config, "workerinput") or exitstatus not in (0, 1) or narrowed(config):
        return
    if not MEASURED:
        return
    durations = {name: value for name, value in read_durations().items()
                 if os.path.isfile(os.path.join(TESTS, name))}
    durations.update({name: round(value, 1) for name, value in MEASURED.items()})
    tmp = f"{DURATIONS}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(dict(sorted(durations.items())), f, indent=1)
        f.write("\n")
    os.replace(tmp, DURATIONS)


# ---------------------------------------------------------------- every test
def refused_connections():
    import loopback_only
    path = os.environ[loopback_only.LOG_ENV]
    return open(path).read().splitlines() if os.path.exists(path) else []


@pytest.fixture(autouse=True)
def loopback_only_network():
    """Fail any test during which some process tried a non-loopback address."""
    before = len(refused_connections())
    yield
    refused = refused_connections()[before:]
    if refused:
        pytest.fail(f"network guard refused connections to: {refused}")


# ---------------------------------------------------------------- shared fixtures
@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The tiny demo set, generated once (support/demo_set.py): images under
    ``image_dir``, lists under ``list_dir``, and the ``counts`` of each list."""
    from support.demo_set import make_demo
    return make_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def make_args(demo, tmp_path):
    """``make_args(*flags, bit=16, out=tmp_path)`` -> an ``args`` namespace
    from ``utils.training.config.parse_args`` for a tiny run on the demo set."""
    from support.demo_set import demo_argv
    from utils.training.config import parse_args

    def build(*extra, bit=16, out=None):
        return parse_args(demo_argv(demo, out or tmp_path, *extra, bit=bit))
    return build


@pytest.fixture
def a_file(tmp_path):
    """A file where a command expects a folder."""
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return str(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The local download server (tests/download_fixtures.py) over a tree
    holding the tiny COCO and AlexNet fixtures."""
    from download_fixtures import make_fixtures, serve
    root = tmp_path_factory.mktemp("mirror")
    checksums = make_fixtures(str(root))
    srv = serve(root)
    srv.checksums = checksums
    yield srv
    srv.shutdown()


@pytest.fixture
def mirror(server, monkeypatch):
    """Point every URL at the fixture server, with the fixtures' checksums."""
    from utils.base import download
    monkeypatch.setenv(download.BASE_ENV, server.base)
    monkeypatch.setenv(download.CHECKSUMS_ENV, server.checksums)
    server.seen.clear()
    return server
