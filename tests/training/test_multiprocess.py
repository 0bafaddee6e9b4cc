"""Right with several processes, on CPU.

* threads: the default is this machine's cores shared by its processes, for
  Paddle's kernels and the numba mAP kernel alike;
* metrics are computed once, by rank 0, and handed to the others;
* --skip-bad-images works with several processes, and a skipped training
  image leaves the memory bank in every process at the same step;
* the all-process stop check runs every STOP_CHECK_STEPS steps;
* --deterministic sets Paddle's GPU determinism flags (the GPU itself is
  exercised by scripts/gpu_check.sh, not here).

The 2-process run is ``python tests/training/test_multiprocess.py OUT_DIR
FLAGS...`` (tests/ on PYTHONPATH: support.cli.run_test_script):
main_multi_gpu.py's launcher running :func:`recording_worker` (bottom) in
two gloo processes, each of which reports what it did in OUT_DIR.
"""
import functools
import json
import os
import re
import shutil
import sys

import numba
import numpy as np
import paddle
import pytest

from support.cli import TINY, run_test_script
from support.demo_set import demo_argv
from support.threads import THREADS
from utils.base import distributed as dist
from utils.base import runtime
from utils.training import engine
from utils.training.step import STOP, STOP_CHECK_STEPS, stop_agreed
from utils.training.config import parse_args
from utils.data.loaders import ShardedBatchSampler
from utils.methods import hashnet
from utils.methods.hashnet import HashNetLoss

NPROCS = 2


def without_threads_flag(argv):
    """demo_argv minus its ``--num_threads 2``: the run picks its default."""
    i = argv.index("--num_threads")
    return argv[:i] + argv[i + 2:]


# ---------------------------------------------------------------- threads
def test_default_threads_share_the_cores(monkeypatch, demo, make_args, tmp_path):
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    assert [runtime.threads_per_process(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "8")  # what paddle.distributed.launch sets
    assert dist.local_process_count() == 8
    args = parse_args(without_threads_flag(demo_argv(demo, tmp_path)))
    assert args.num_threads is None
    try:
        engine.setup_runtime(args)
        assert args.num_threads == 1            # 8 cores / 8 processes, recorded in args
        assert numba.get_num_threads() == 1     # the mAP kernel's threads too
        explicit = make_args("--num_threads", "2")
        engine.setup_runtime(explicit)
        assert explicit.num_threads == 2 and numba.get_num_threads() == 2
    finally:
        runtime.set_num_threads(THREADS)  # conftest's setting, for the tests after this one


def test_num_threads_below_one_is_refused(demo, tmp_path):
    from support.errors import user_error
    assert "--num_threads must be >= 1, got 0" in user_error(
        parse_args, demo_argv(demo, tmp_path, "--num_threads", "0"))


# ---------------------------------------------------------------- determinism
def test_deterministic_sets_the_gpu_flags(monkeypatch, make_args):
    assert runtime.set_deterministic() == {}  # this CPU build has no cuDNN flags: no error
    used = []
    monkeypatch.setattr(engine, "set_deterministic", lambda: used.append(1))
    engine.setup_runtime(make_args())
    assert used == []                         # off by default: GPU speed
    engine.setup_runtime(make_args("--deterministic"))
    assert used == [1]
    # what it sets in a CUDA build
    calls = []
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle, "set_flags", calls.append)
    assert runtime.set_deterministic() == runtime.DETERMINISTIC_GPU_FLAGS
    assert calls == [runtime.DETERMINISTIC_GPU_FLAGS]
    assert calls[0]["FLAGS_cudnn_deterministic"] is True
    assert calls[0]["FLAGS_cudnn_exhaustive_search"] is False


# ---------------------------------------------------------------- stop check
def test_stop_is_checked_every_few_steps_with_several_processes(monkeypatch):
    asked = []

    def any_process(flag):
        asked.append(flag)
        return flag
    monkeypatch.setattr(dist, "any_process", any_process)
    monkeypatch.setattr(STOP, "signum", None)
    monkeypatch.setattr(STOP, "agreed", False)   # stop_agreed sets it: restored after
    k = STOP_CHECK_STEPS
    assert k > 1
    for world in (2, 1):
        monkeypatch.setattr(dist, "world_size", lambda: world)
        STOP.signum, asked[:] = None, []
        stops = []
        for step in range(1, 2 * k + 2):
            if step == 3:
                STOP.signum = 15       # reaches this process at step 3
            stops.append(stop_agreed(step))
        first = stops.index(True) + 1
        if world == 2:   # a collective every k-th step only; the stop lands at step k
            assert len(asked) == 2 and first == k
        else:            # one process asks nobody: it stops at once
            assert len(asked) == len(stops) and first == 3


def test_docs_state_the_stop_check_interval():
    from support.docs import read
    stated = re.search(r"within (\d+) steps \(whether a signal reached any\s+process is "
                       r"asked every (\d+)th step, `STOP_CHECK_STEPS`", read("docs/training.md"))
    assert stated, "docs/training.md no longer states the stop check interval"
    assert int(stated.group(1)) == int(stated.group(2)) == STOP_CHECK_STEPS


# ---------------------------------------------------------------- sampler
@pytest.mark.parametrize("world", [1, 2, 3])
def test_global_batches_are_the_union_of_the_shards(world):
    """What every process can compute alone (no collective) is exactly what
    the gathered batch holds: the engine finds skipped images by the difference."""
    samplers = [ShardedBatchSampler(23, 4, True, seed=5, rank=r, world_size=world)
                for r in range(world)]
    for skip in (0, 1):
        for s in samplers:
            s.set_epoch(2, skip=skip)
        steps = list(zip(*samplers))                 # step t: every rank's batch
        globals_ = list(samplers[0].global_batches())
        assert len(globals_) == len(steps) == len(samplers[0]) - skip
        for batches, wanted in zip(steps, globals_):
            assert sorted(sum(batches, [])) == sorted(wanted.tolist())


# ---------------------------------------------------------------- 2 processes
def bad_copy(demo, root):
    """The demo set with the first training image and the last database
    image (not a query) corrupted; returns (images, lists, bad train index)."""
    images, lists = str(root / "images"), str(root / "lists")
    shutil.copytree(demo.image_dir, images)
    shutil.copytree(demo.list_dir, lists)
    for split, line in (("train", 0), ("database", -1)):
        with open(os.path.join(lists, f"{split}.txt")) as f:
            rel = f.readlines()[line].split()[0]
        with open(os.path.join(images, rel), "wb") as f:
            f.write(b"not an image")
    return images, lists, 0


def test_two_processes_skip_bad_images_and_compute_metrics_once(demo, make_args, tmp_path):
    """One epoch + evaluation in 2 processes, default threads, one unreadable
    training and one unreadable database image, --skip-bad-images."""
    images, lists, bad = bad_copy(demo, tmp_path)
    out = tmp_path / "multi"
    argv = without_threads_flag(demo_argv(demo, out, "--data-path", images, "--list-dir", lists,
                                          "-bs", "8", "-e", "1", "-ee", "1",
                                          "--skip-bad-images", "--nprocs", str(NPROCS), *TINY))
    proc = run_test_script(os.path.abspath(__file__), str(out), *argv, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "skipped: image" in proc.stdout
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(NPROCS)]
    threads = runtime.threads_per_process(NPROCS)  # 1 on a 2-core machine
    for report in reports:
        assert report["num_threads"] == threads
        assert report["numba_threads"] == min(threads, numba.config.NUMBA_NUM_THREADS)
        assert report["excluded"] == [bad]     # the same bank row left, in every process
    assert [r["metrics_calls"] for r in reports] == [1, 0]        # rank 0 alone computes
    # ... and shares the mAP; exact: rank 0's mAP is broadcast, and each process
    # computes the loss of the same gathered batch with the same kernels and threads
    assert reports[0]["history"] == reports[1]["history"]
    assert reports[1]["history"][0]["map"] is not None
    (run,) = os.listdir(out / "logs")
    assert json.loads((out / "logs" / run / "config.json").read_text())["num_threads"] == threads
    # the saved bank: the bad image is excluded, not a zero row among the others
    bank = paddle.load(str(out / "output" / "last_16.pdopt"))["training"]["bank"]
    keep, U = bank["keep"].numpy(), bank["U"].numpy()
    assert np.flatnonzero(keep == 0).tolist() == [bad]
    written = np.abs(U).sum(axis=1) > 0
    assert not written[bad] and written.sum() == demo.counts["train"] - 1
    # evaluation skipped the bad database image, in dataset order: one process agrees
    metrics = json.loads((out / "logs" / run / "metrics.json").read_text())
    assert (metrics["num_queries"], metrics["num_database"]) == (demo.counts["test"],
                                                                 demo.counts["database"] - 1)
    single = engine.run(make_args("--data-path", images, "--list-dir", lists, "--eval", *TINY,
                                  "--skip-bad-images", "--pretrained",
                                  str(out / "output" / "last_16"), out=tmp_path / "single"))
    # exact: metrics.json and the history hold the one mAP rank 0 computed;
    # one process gets it too because both runs' codes are sign(z) of the same
    # weights, 1 and 2 processes' z agree within TWO_BY_B_TOLERANCE (their
    # documented tolerance) and no evaluated z is that near 0, so no bit
    # differs; then the same float64 metric code on the same codes
    from support.two_processes import TWO_BY_B_TOLERANCE
    z = evaluated_outputs(demo, str(out / "output" / "last_16"))
    assert np.abs(z).min() > TWO_BY_B_TOLERANCE, np.abs(z).min()
    assert single["map"] == metrics["map"] == reports[0]["history"][0]["map"]


def evaluated_outputs(demo, prefix):
    """Dygraph z of the images the evaluation encodes (every test image and
    the database without its corrupted last image), under ``prefix``."""
    from support.demo_set import CROP, RESIZE, database_batch
    from tiny_model import TinyHashNet
    from utils.base.checkpoint import load_weights
    from utils.data.loaders import ImageList
    from utils.inference.encoder import dygraph_forward
    model = TinyHashNet(16)
    load_weights(model, prefix)
    test = ImageList(os.path.join(demo.list_dir, "test.txt"), demo.image_dir, 10, train=False,
                     resize_size=RESIZE, crop_size=CROP)
    x = np.concatenate([np.stack([test[i][0] for i in range(len(test))]),
                        database_batch(demo)[:-1]])
    return dygraph_forward(model)(x)


# ---------------------------------------------------------------- worker side
def recording_worker(out, args):
    """engine.run, then a report of this process: metric computations,
    threads, the bank rows its loss excluded, the run's history."""
    calls, losses = [], []
    metrics = engine.retrieval_metrics

    def counted_metrics(*a, **k):
        calls.append(1)
        return metrics(*a, **k)

    class RecordedLoss(HashNetLoss):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            losses.append(self)

    engine.retrieval_metrics, hashnet.HashNetLoss = counted_metrics, RecordedLoss
    state = engine.run(args)
    report = {"metrics_calls": len(calls), "num_threads": args.num_threads,
              "numba_threads": numba.get_num_threads(),
              "excluded": np.flatnonzero(losses[0].keep.numpy() == 0).tolist(),
              "history": state["history"]}
    with open(os.path.join(out, f"rank{dist.rank()}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":  # python tests/training/test_multiprocess.py OUT_DIR FLAGS... (tests/ on PYTHONPATH)
    out_dir, flags = sys.argv[1], sys.argv[2:]
    os.makedirs(out_dir, exist_ok=True)
    dist.launch(functools.partial(recording_worker, out_dir), parse_args(flags, batch_size=64))
