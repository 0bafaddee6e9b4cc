"""utils/base/distributed.py: data-parallel training and evaluation, on CPU
with 2 gloo processes.

* main_multi_gpu.py under ``python -m paddle.distributed.launch`` trains one
  epoch and evaluates on the tiny demo set: one log folder, rank 0 writes,
  lr scaled by the world size, checkpoints like single-process ones;
* 2 processes x batch b update the parameters like 1 process x 2b;
* multi-process evaluation gives the single-process mAP;
* a bad input is one error line; a process that dies makes the run fail
  within seconds; a stop signal to one process stops all at the same step.

The other runs start their processes with main_multi_gpu.py's own launcher
(utils.base.distributed.launch, i.e. paddle.distributed.spawn), some through
tests/support/two_processes.py, which runs one of its worker functions in
every process.
"""
import json
import os
import re
import signal
import time
import types

import numpy as np
import paddle
import pytest

from models.alexnet import AlexNetHash
from support.cli import TINY, run_python
from support.demo_set import demo_argv
from support.errors import assert_cli_error
from support.logs import log_lines
from support.two_processes import (MULTI, NODROPOUT, NPROCS, TWO_BY_B_TOLERANCE,
                                   TinyWithoutDropout, assert_same_update, ok, worker)
from support.weights import state_numpy
from utils.base import distributed as dist
from utils.base.checkpoint import load_weights
from utils.training import engine
from utils.training.step import STOP_CHECK_STEPS


DEATH_DEADLINE = 120  # seconds within which a run with a dead process must end


def multi(*argv, timeout=300):
    return run_python("main_multi_gpu.py", *argv, *MULTI, timeout=timeout)


def sub_lists(demo, root, **counts):
    """A list dir with the first ``counts[split]`` lines of the demo's lists
    (same images), e.g. odd sizes, so that the sampler has to pad."""
    os.makedirs(root, exist_ok=True)
    for split in ("train", "test", "database"):
        with open(os.path.join(demo.list_dir, f"{split}.txt")) as f:
            lines = f.readlines()[:counts.get(split)]
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.writelines(lines)
    return str(root)


# ---------------------------------------------------------------- train + eval


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """One epoch + evaluation by main_multi_gpu.py, started the other way,
    by ``python -m paddle.distributed.launch``: 48 training images, 8 per
    process -> 3 steps of a global batch of 16."""
    out = tmp_path_factory.mktemp("multi")
    ok(run_python("-m", "paddle.distributed.launch", "--nproc_per_node", str(NPROCS),
                  "--log_dir", str(out / "launch"), "main_multi_gpu.py",
                  *demo_argv(demo, out, "-bs", "8", "-e", "1", "-ee", "1", "--debug_steps", "1",
                             "--num_threads", "1")))
    return out


def test_two_processes_train_and_evaluate(trained, demo):
    out = trained
    runs = os.listdir(out / "logs")
    assert len(runs) == 1, runs  # both processes agreed on the timestamped folder
    files = sorted(os.listdir(out / "logs" / runs[0]))
    assert "config.json" in files, files
    assert [f for f in files if f.startswith("log")] == ["log.txt", "log_1.txt"], files
    steps = log_lines(out / "logs", r"Step\[(\d+)/(\d+)\], Loss: ([\d.]+)")
    assert [(m[1], m[2]) for m in steps] == [("0001", "0003"), ("0002", "0003"), ("0003", "0003")]
    # lr0 = 1e-3 x 8 per process x 2 processes / 64
    (epoch_line,) = log_lines(out / "logs", r"HashNet\[ 1/1\] bit:16, lr:([\d.]+)")
    assert float(epoch_line[1]) == pytest.approx(1e-3 * 8 * NPROCS / 64)
    assert log_lines(out / "logs", r"HashNet epoch:1, bit:16, dataset:demo, MAP:[\d.]+")
    # rank 0 alone prints (the launcher keeps each process's output in workerlog.<rank>)
    printed = [open(out / "launch" / f"workerlog.{r}").read() for r in range(NPROCS)]
    assert [len(re.findall(r"Step\[0001/0003\]", text)) for text in printed] == [1, 0]


def test_checkpoint_interchangeable_and_bank_global(trained, demo):
    out = trained
    prefix = str(out / "output" / "last_16")
    params = paddle.load(prefix + ".pdparams")
    model = AlexNetHash(16)
    assert sorted(params) == sorted(model.state_dict())  # no "_layers." prefix
    load_weights(model, prefix)
    bank = paddle.load(prefix + ".pdopt")["training"]["bank"]
    # every process wrote the whole global batch into its bank: all 48 rows
    # were written (a per-shard bank would hold only rank 0's 24)
    written = np.abs(bank["U"].numpy()).sum(axis=1) > 0
    assert written.sum() == demo.counts["train"]
    assert np.array_equal(bank["Y"].numpy().sum(axis=1) > 0, written)


def test_multi_process_eval_map_equals_single_process(demo, make_args, tmp_path):
    """On a model whose codes differ between images (a 1-epoch random model
    collapses to ~2 codes, where any ordering gives the same mAP)."""
    from support.centred_model import codes_of, make_checkpoint
    from support.demo_set import database_batch
    prefix = str(tmp_path / "centred_16")
    model = make_checkpoint(prefix, demo, arch=TINY[1])   # the engine's, whatever the net
    distinct = len(np.unique(codes_of(model, database_batch(demo)[:47]), axis=0))
    assert distinct > 20, distinct
    # 23 queries and 47 database images: odd sizes, so the sampler pads
    lists = sub_lists(demo, tmp_path / "lists", test=23, database=47)
    flags = ["--list-dir", lists, "--eval", "--pretrained", prefix, "-bs", "5", *TINY]
    ok(worker("eval", tmp_path, demo_argv(demo, tmp_path / "multi", *flags)))
    (run,) = os.listdir(tmp_path / "multi" / "logs")
    with open(tmp_path / "multi" / "logs" / run / "metrics.json") as f:
        multi_metrics = json.load(f)
    single = engine.run(make_args(*flags, out=tmp_path / "single"))
    assert (multi_metrics["num_queries"], multi_metrics["num_database"]) == (23, 47)
    # exact: the same codes (the centred model keeps |z| far above the last
    # bits that a shard's batch shape may change), gathered into dataset
    # order, then the same float64 metric code on them
    assert multi_metrics["map"] == single["map"]


# ---------------------------------------------------------------- 2 x b == 1 x 2b
# Two processes sum the gathered batch's gradient in another order than one:
# equal within TWO_BY_B_TOLERANCE (docs/training.md, Several GPUs), and within
# 1 % of the step itself where that is larger (support/two_processes.py).


@pytest.fixture(scope="module")
def two_by_b(demo, tmp_path_factory):
    """The module's one 2-process training on the tiny net without dropout,
    its processes first gathering unequal shards (gather_worker): flags,
    output folder and the run's stdout."""
    root = tmp_path_factory.mktemp("two_by_b")
    flags = ["--list-dir", sub_lists(demo, root / "lists", train=40), "-bs", "8",
             "-lr", "5", "-wd", "0", "--seed", "3", "-e", "1"]
    proc = ok(worker("nodropout", root / "multi", demo_argv(demo, root / "multi", *flags)))
    return types.SimpleNamespace(flags=flags, root=root, stdout=proc.stdout)


def test_two_by_b_equals_one_by_two_b(two_by_b, make_args):
    """One epoch on 40 images: 2 processes x 8 and 1 process x 16 take the
    same 3 steps (16, 16, then a short 8), the memory bank carrying over.
    Dropout is off (its masks differ between the two), and so is weight
    decay, so that parameters move by the loss gradient alone."""
    root = two_by_b.root
    engine.run(make_args(*two_by_b.flags, "-bs", "16", "--arch", NODROPOUT, out=root / "single"))
    got, ref = (paddle.load(str(root / run / "output" / "last_16.pdparams"))
                for run in ("multi", "single"))
    paddle.seed(3)
    init = state_numpy(TinyWithoutDropout(16))  # what the engine built after set_seed(3)
    for key, value in ref.items():
        multi, single = got[key].numpy(), value.numpy()
        np.testing.assert_allclose(multi, single, rtol=0, atol=TWO_BY_B_TOLERANCE, err_msg=key)
    # and relative to the step itself: a gradient off by any factor (e.g.
    # DataParallel's mean left as is, half the gradient) fails here
    assert_same_update(got, ref, init)
    got, ref = (paddle.load(str(root / run / "output" / "last_16.pdopt"))["training"]
                for run in ("multi", "single"))
    # the bank is written from z of the same steps: the parameters' tolerance
    np.testing.assert_allclose(got["bank"]["U"].numpy(), ref["bank"]["U"].numpy(),
                               atol=TWO_BY_B_TOLERANCE)
    assert got["history"][0]["loss"] == pytest.approx(ref["history"][0]["loss"],
                                                      abs=TWO_BY_B_TOLERANCE)


def test_gathered_gradient_is_scaled_by_the_process_count(monkeypatch):
    """In one process, as rank 1 of 3 (the collective replaced by a concat
    with other ranks' rows): the gradient reaching this process's rows is
    its slice of the incoming gradient times W = 3, undoing DataParallel's
    mean (the two-process test below checks the whole update)."""
    others = [paddle.full([2, 4], 7.0), paddle.full([1, 4], -7.0)]   # ranks 0 and 2
    monkeypatch.setattr(dist, "world_size", lambda: 3)
    monkeypatch.setattr(dist, "rank", lambda: 1)
    monkeypatch.setattr(dist, "_all_gather_rows",
                        lambda x, sizes: paddle.concat([others[0], x, others[1]]))
    z = paddle.to_tensor(np.arange(12, dtype="float32").reshape(3, 4), stop_gradient=False)
    gathered = dist._GatherRows.apply(z, [2, 3, 1])                  # [6, 4]
    weights = paddle.to_tensor(np.arange(24, dtype="float32").reshape(6, 4))
    (gathered * weights).sum().backward()
    # exact: rows copied, and 3·w is one float32 product on both sides
    np.testing.assert_array_equal(gathered.numpy()[2:5], z.numpy())
    np.testing.assert_array_equal(z.grad.numpy(), 3 * weights.numpy()[2:5])


def test_gather_rows_of_unequal_shards(two_by_b):
    """gather_in_order with shards of 3 and 2 rows (not from the sampler),
    in the processes of the 2 x b run."""
    assert "gather ok" in two_by_b.stdout, two_by_b.stdout


# ---------------------------------------------------------------- failures


def test_bad_input_is_one_error_line(demo, tmp_path):
    proc = multi(*demo_argv(demo, tmp_path, "--eval", "--pretrained", str(tmp_path / "none")))
    assert_cli_error(proc, "none.pdparams not found")


def test_dead_process_fails_the_run_quickly(demo, tmp_path):
    """Process 1 is killed (SIGKILL) at its 2nd step: the run must end with
    an error within DEATH_DEADLINE, not hang in a collective."""
    start = time.time()
    proc = worker("kill", tmp_path, demo_argv(demo, tmp_path, "-bs", "4", "-e", "2", *TINY),
                  timeout=DEATH_DEADLINE)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert time.time() - start < DEATH_DEADLINE
    assert "error: process 1 was killed by signal SIGKILL" in proc.stderr, proc.stderr[-3000:]
    assert not os.path.exists(tmp_path / "output" / "last_16.pdparams")  # died in epoch 1


def test_signal_to_one_process_stops_all_at_the_same_step(demo, tmp_path):
    """SIGTERM reaches process 1 only, at its 2nd step: every process stops
    after the next stop check (every STOP_CHECK_STEPS global steps),
    rank 0 saves `last` mid-epoch, the run exits 128+15."""
    proc = worker("term", tmp_path, demo_argv(demo, tmp_path, "-bs", "4", "-e", "2", *TINY),
                  timeout=DEATH_DEADLINE)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    steps = demo.counts["train"] // (4 * NPROCS)                 # 6 per epoch
    check = -(-2 // STOP_CHECK_STEPS) * STOP_CHECK_STEPS
    assert check < 2 * steps and check % steps                   # mid-epoch, within the run
    epoch, step = check // steps + 1, check % steps
    training = paddle.load(str(tmp_path / "output" / "last_16.pdopt"))["training"]
    assert (training["partial"]["epoch"], training["partial"]["step"]) == (epoch, step)
    (run,) = os.listdir(tmp_path / "logs")
    for name in ("log.txt", "log_1.txt"):
        with open(tmp_path / "logs" / run / name) as f:
            assert f"stopped by signal 15 at epoch {epoch}, step {step}" in f.read(), name


@pytest.mark.parametrize("name, value", [("PADDLE_LOCAL_SIZE", "0"), ("PADDLE_LOCAL_SIZE", "two"),
                                         ("PADDLE_RANK_IN_NODE", "-1")])
def test_a_bad_launcher_variable_is_one_line(monkeypatch, name, value):
    from support.errors import user_error
    from utils.base import distributed as dist
    monkeypatch.setenv(name, value)
    read = dist.local_process_count if name == "PADDLE_LOCAL_SIZE" else dist.local_rank
    assert f"{name}={value!r} is not a whole number" in user_error(read)
