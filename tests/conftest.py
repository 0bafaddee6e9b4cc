"""Shared fixtures: a tiny generated demo set, an ``args`` builder, helpers.

Everything is sized for a 2-core CPU: 72 px images cropped to 64 px, a few
dozen images, ``--backbone random``, 2 Paddle threads.
"""
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import traceback
import types

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from utils.training.config import parse_args  # noqa: E402
from scripts.demo.data import generate  # noqa: E402
from utils.base.errors import UserError  # noqa: E402
from utils.base.runtime import set_num_threads  # noqa: E402

set_num_threads(2)

# glibc's malloc keeps freed memory in the process instead of handing each big
# buffer back to the kernel, which would page-fault and zero it again at the
# next step: a 1-epoch AlexNet run's system time 4.5 s -> 2.6 s. glibc reads
# these at start-up, so they reach the Python processes the tests start and
# the xdist workers (started after this file is imported), not the process
# that imports this file (under -n 3 it runs no test). Results are unchanged.
for name, value in {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296",
                    "MALLOC_TOP_PAD_": "536870912"}.items():
    os.environ.setdefault(name, value)

# No test may reach past 127.0.0.1: the guard refuses other connections in
# this process and, via sitecustomize on PYTHONPATH, in every Python it starts
# (tests/netguard/loopback_only.py); each refusal is logged and fails the test.
GUARD_DIR = os.path.join(REPO, "tests", "netguard")
sys.path.insert(0, GUARD_DIR)
import loopback_only  # noqa: E402

loopback_only.install()

import tiny_model  # noqa: E402  registers --arch tiny (engine invariants run on it)
import plain_pairwise  # noqa: E402, F401  registers --method plain_pairwise (a test-only method)

TINY = ["--arch", tiny_model.TINY]
tiny_model.skip_engine_plots()  # in this process; the AlexNet CLI subprocess still draws them
if os.environ.get("PYTEST_XDIST_WORKER") or loopback_only.LOG_ENV not in os.environ:
    # one log per pytest process: an xdist worker must not count the other's refusals
    os.environ[loopback_only.LOG_ENV] = os.path.join(tempfile.mkdtemp(prefix="netguard-"),
                                                     "refused.txt")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [REPO, GUARD_DIR] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


# The slowest files, slowest first (seconds of --durations=0 on a 2-core CPU,
# two workers). README's test command runs the files on three xdist workers
# (-n 3 --dist loadfile: the third keeps both cores busy while another waits
# for a subprocess or the disk); xdist hands files out in collection order, so
# the longest go first and the short ones fill in at the end (longest
# processing time first). xdist's own order, most tests first, left a 100-s
# file for last.
SLOWEST_FILES = (
    "test_tipc.py",             # 123 s
    "test_training.py",         # 118
    "test_backbones.py",        # 82
    "test_distributed.py",      # 60
    "test_tipc_reference.py",   # 52
    "test_download.py",         # 47
    "test_gpu_check.py",        # 44
    "test_export_infer.py",     # 36
    "test_index.py",            # 35
    "test_predict.py",          # 20
    "test_onnx.py",             # 18
    "test_safe_pickle.py",      # 17
    "test_robustness.py",       # 15
    "test_resilience.py",       # 14
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist: keep the order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: files stay whole


def refused_connections():
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

# The tiny demo set every data-driven test shares.
N_TRAIN, N_TEST, N_EXTRA, IMAGE_SIZE = 48, 24, 24, 72
CROP, RESIZE = 64, 72


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """Generate the tiny demo set once: images under ``image_dir``, lists
    under ``list_dir``; also returns the counts ``generate`` reported."""
    root = tmp_path_factory.mktemp("demo")
    image_dir, list_dir = str(root / "images"), str(root / "lists")
    counts = generate(image_dir, list_dir, N_TRAIN, N_TEST, N_EXTRA, IMAGE_SIZE, seed=0)
    return types.SimpleNamespace(image_dir=image_dir, list_dir=list_dir, counts=counts)


def demo_argv(demo, out_dir, *extra, bit=16):
    """Command-line flags of a tiny run on the demo set, writing under out_dir."""
    return ["--dataset", "demo", "--data-path", demo.image_dir, "--list-dir", demo.list_dir,
            "--bit", str(bit), "--crop_size", str(CROP), "--resize_size", str(RESIZE),
            "--backbone", "random", "--num_threads", "2", "--seed", "0",
            "--output-dir", os.path.join(str(out_dir), "output"),
            "--log_path", os.path.join(str(out_dir), "logs"), *extra]


@pytest.fixture
def make_args(demo, tmp_path):
    """``make_args(*flags, bit=16, out=tmp_path)`` -> an ``args`` namespace
    from ``utils.training.config.parse_args`` for a tiny run on the demo set."""
    def build(*extra, bit=16, out=None):
        return parse_args(demo_argv(demo, out or tmp_path, *extra, bit=bit))
    return build


@pytest.fixture
def no_evaluation(monkeypatch):
    """For in-process runs whose mAP no test reads: the engine skips the
    evaluation and the model_best save (a GB written, hashed and fsynced for
    VGG16) and records where it would have evaluated, in the returned list
    ([(unit, done)]), so a test can still check the schedule."""
    from utils.training import engine
    due = []
    monkeypatch.setattr(engine, "evaluate_and_keep_best",
                        lambda args, recipe, model, loaders, training, state, *rest:
                        due.append((recipe.unit, state[recipe.unit])))
    return due


def backend_params():
    """Both Hamming backends for ``pytest.mark.parametrize``: numba's cases are
    reported as skipped, with the reason, where numba is not installed
    (instead of vanishing from the collection)."""
    from utils.retrieval import hamming
    missing = "numba" not in hamming.available_backends()
    return ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
        missing, reason="numba is not installed (pip install -r requirements-dev.txt)"))]


def run_python(*argv, cwd=REPO, timeout=300, extra_env=None):
    """Run ``python *argv`` in the repo (``extra_env``: variables to add);
    returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR]), **(extra_env or {}))
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_tiny(script, *argv, timeout=300):
    """``python script *argv`` with ``--arch tiny`` registered (tests/tiny_model.py)."""
    return run_python("-c", tiny_model.TINY_PREFIX, script, *argv, timeout=timeout)


def run_in_process(main, *argv):
    """``main(argv)`` through ``run_cli`` in this process, as ``python
    entry.py *argv`` would run it; returns a CompletedProcess (returncode,
    stdout, stderr). Seconds instead of a Paddle import per call: the CLI
    error contract (exit 2, one ``error:`` line, no traceback) is tested this
    way; each entry point keeps one subprocess test for its ``__main__``
    wiring. An uncaught exception prints its traceback and gives 1, as the
    interpreter does."""
    from utils.base.errors import run_cli
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cli(main, [str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
        except Exception:  # noqa: BLE001 - reported as the interpreter would
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def user_error(fn, *args, **kwargs):
    """Call fn, require a UserError, return its message."""
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def assert_cli_error(proc, *fragments):
    """A bad-input exit: code 2, one ``error: ...`` line, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def state_numpy(layer):
    """{key: numpy copy} of a layer's state dict."""
    return {k: v.numpy() for k, v in layer.state_dict().items()}


def assert_same(actual, expected, key=""):
    """Exact equality; fast on the 37M-element fc6 (numpy's detailed report
    only when they differ)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape or not np.array_equal(actual, expected):
        np.testing.assert_array_equal(actual, expected, err_msg=key)


def check_backbone_load(model, path, alexnet_state):
    """model.load_backbone(path) must set features.* and fc6/fc7
    (classifier_plus.1/.4) to ``alexnet_state`` (torchvision keys, Paddle
    shapes) exactly and leave the hash layer (classifier_plus.6) alone."""
    before = state_numpy(model)
    model.load_backbone(path)
    got = state_numpy(model)
    for key, value in got.items():
        if key.startswith("classifier_plus.6."):
            assert_same(value, before[key], key)
        else:
            assert_same(value, alexnet_state[key.replace("classifier_plus.", "classifier.")], key)
    assert not np.array_equal(before["features.0.weight"], got["features.0.weight"])


def log_lines(log_dir_root, pattern):
    """Lines of every log.txt under log_dir_root matching regex ``pattern``
    (as match objects), in run order (log dirs sort by start time)."""
    found = []
    for run in sorted(os.listdir(log_dir_root)):
        path = os.path.join(log_dir_root, run, "log.txt")
        if os.path.isfile(path):
            with open(path) as f:
                found += [m for m in map(re.compile(pattern).search, f) if m]
    return found
