"""Nothing lost: exact resume after SIGKILL / SIGTERM, a non-finite loss
stops cleanly, and every kind of bad input is a one-line error (issue 7)."""
import math
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import paddle
import pytest

import main_single_gpu
from conftest import (GUARD_DIR, REPO, TINY, assert_cli_error, assert_same, demo_argv,
                      run_in_process, run_python)
from tiny_model import TINY_PREFIX, TinyHashNet

# The stop/resume invariants hold for any network: checked on --arch tiny
# (tests/tiny_model.py), whose checkpoints are small.
TRAIN = ["-bs", "16", "-e", "3", "-ee", "3", "--debug_steps", "1",
         "--step_continuation", "1", "--de_step", "1", *TINY]


def train_argv(demo, out, *extra):
    """python argv: main_single_gpu.py with the tiny arch registered."""
    return ["-c", TINY_PREFIX, "main_single_gpu.py", *demo_argv(demo, out, *TRAIN, *extra)]


def params(out):
    return paddle.load(os.path.join(str(out), "output", "last_16.pdparams"))


def run_until(argv, marker, sig):
    """Start training, send `sig` once `marker` is printed; return the exit code."""
    proc = subprocess.Popen([sys.executable, "-u", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR])))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=300)
    assert any(marker in line for line in seen), "".join(seen) + rest
    return proc.returncode, "".join(seen) + rest


@pytest.fixture(scope="module")
def uninterrupted(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run_python(*train_argv(demo, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return params(out)


def assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert_same(a[key].numpy(), b[key].numpy(), key)


def test_sigterm_mid_epoch_saves_and_resumes_exactly(demo, tmp_path, uninterrupted):
    code, output = run_until(train_argv(demo, tmp_path), "Epoch[002/003], Step[0001/0003]",
                             signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, output[-2000:]
    stopped = re.search(r"stopped by signal 15 at epoch 2, step (\d)", output)
    assert stopped, output[-2000:]
    resumed = run_python(*train_argv(demo, tmp_path, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at epoch 2, step {stopped.group(1)}" in resumed.stdout
    assert_bit_identical(params(tmp_path), uninterrupted)


def test_mid_epoch_resume_restores_the_rng_streams(make_args):
    """In one process, no training: a checkpoint saved mid-epoch holds the
    python, numpy and paddle RNG states, and resuming it restores them, so
    the draws after the resume (dropout, here paddle.rand) are the draws that
    would have followed the save. (The SIGTERM test above shows the end result.)"""
    import logging
    import random
    from utils.methods.hashnet import HashNetLoss
    from utils.training import engine, recipes, reference
    from utils.training.config import build_method
    from utils.training.schedules import build_optimizer
    args = make_args("-bs", "16", *TINY)

    def run_state():
        model = TinyHashNet(16)
        return (model, build_optimizer("sgd", model.parameters(), 0.1, 5e-4),
                HashNetLoss(48, 16, 10))

    def draws():
        return paddle.rand([6]).numpy(), np.random.rand(3), random.random()

    paddle.seed(11), np.random.seed(11), random.seed(11)
    model, optimizer, criterion = run_state()
    state = {"epoch": 0, "best_map": 0.0, "best_epoch": 0, "history": [],
             "partial": reference.EpochProgress(1, step=2, loss_sum=2.5)}
    engine.save(args, "last", model, optimizer, criterion, state)
    expected = draws()
    paddle.seed(99), np.random.seed(99), random.seed(99)   # a fresh process
    model, optimizer, criterion = run_state()
    resumed = {"epoch": 0}
    args.resume = os.path.join(args.output_dir, "last_16")
    engine.resume(args, recipes.build(args, build_method(args)), (model, optimizer, criterion),
                  resumed, logging.getLogger("test"))
    assert resumed["partial"] == reference.EpochProgress(1, step=2, loss_sum=2.5)
    got = draws()
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


# Runs main_single_gpu.py's flow (argv as JSON) with the checkpoint writer
# patched: the 3rd file (epoch 2's last_16.pdopt, the first of its pair) is
# written half into its temp file, then a marker file appears and the
# process waits there to be killed.
HALF_WRITE_DRIVER = r"""
import json, os, sys, time
import paddle
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
import tiny_model  # registers --arch tiny
tiny_model.skip_engine_plots()
from utils.base import checkpoint, io
from utils.training.config import parse_args
from utils.training.engine import run

argv, marker = json.loads(sys.argv[1]), sys.argv[2]
calls = []


def half_then_wait(obj, path):
    calls.append(path)
    if len(calls) != 3:
        return io.atomic_save(obj, path)

    def write(tmp):
        paddle.save(obj, marker + ".full")
        with open(marker + ".full", "rb") as f:
            data = f.read()
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        with open(marker, "w") as f:
            f.write(tmp)
        time.sleep(600)
    io.atomic_write(path, write)


checkpoint.atomic_save = half_then_wait
run(parse_args(argv))
"""


def test_sigkill_mid_checkpoint_write_resumes_from_previous(demo, tmp_path, uninterrupted):
    """SIGKILL while epoch 2's checkpoint is half written: epoch 1's files
    are still whole and consistent, and --resume from them ends with the
    uninterrupted run's weights, bit for bit. (This is also the test of a
    SIGKILL after a complete checkpoint: epoch 1's.)"""
    import json
    import time
    marker = str(tmp_path / "half_written")
    argv = demo_argv(demo, tmp_path, *TRAIN)
    proc = subprocess.Popen([sys.executable, "-c", HALF_WRITE_DRIVER, json.dumps(argv), marker],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR])))
    deadline = time.time() + 300
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    try:
        assert os.path.exists(marker), proc.communicate(timeout=10)[0][-3000:]
        time.sleep(0.2)  # the marker is written after the half file
        partial = open(marker).read()
        assert os.path.basename(partial).startswith(".last_16.pdopt")
        assert 0 < os.path.getsize(partial) < os.path.getsize(marker + ".full")
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    out = tmp_path / "output"
    saved = paddle.load(str(out / "last_16.pdopt"))["training"]   # whole, and epoch 1's
    assert saved["epoch"] == 1 and "partial" not in saved
    resumed = run_python(*train_argv(demo, tmp_path, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at the end of epoch 1" in resumed.stdout
    assert "HashNet[ 2/3]" in resumed.stdout and "HashNet[ 1/3]" not in resumed.stdout
    assert_bit_identical(params(tmp_path), uninterrupted)


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_last(demo, tmp_path, make_args,
                                                                  monkeypatch):
    """The weights go NaN just before epoch 2's 2nd step (a NaN image would
    not do: ReLU maps NaN to 0): the real train_step sees a NaN loss and the
    run stops naming epoch and step, epoch 1's checkpoint intact."""
    import models
    from utils.training import engine
    from utils.base.errors import UserError
    args = make_args("-bs", "16", "-e", "3", "-ee", "5")
    calls = []

    class PoisonedHashNet(TinyHashNet):
        def forward(self, x):
            calls.append(self.training)
            if calls.count(True) == 5:  # 3 steps per epoch: epoch 2, step 2
                bias = self.hash_layer.bias
                bias.set_value(np.full(bias.shape, np.nan, dtype="float32"))
            return super().forward(x)

    monkeypatch.setitem(models.ARCHS, "poisoned", PoisonedHashNet)   # registered for this test
    args.arch = "poisoned"
    with pytest.raises(UserError, match="non-finite loss nan at epoch 2, step 2"):
        engine.run_train(args)
    last = os.path.join(args.output_dir, "last_16.pdopt")
    assert paddle.load(last)["training"]["epoch"] == 1  # epoch 1's checkpoint, intact


def test_non_finite_loss_takes_no_step():
    """The real train_step on a batch with a NaN image: the loss is NaN, and
    neither the parameters nor the momentum move; the next finite batch
    trains normally (no NaN gradient left behind)."""
    from conftest import state_numpy
    from utils.methods.hashnet import HashNetLoss
    from utils.training.schedules import build_optimizer
    from utils.training.step import train_step
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(12, 8))
    criterion = HashNetLoss(6, 8, 3)
    optimizer = build_optimizer("sgd", model.parameters(), 0.5, 5e-4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 2, 2)).astype("float32")
    y = paddle.to_tensor(np.eye(3, dtype="float32")[[0, 1, 0, 2]])
    ind = paddle.to_tensor(np.array([0, 1, 2, 3]))
    value = train_step(model, criterion, optimizer, paddle.to_tensor(x), y, ind)
    assert math.isfinite(value)
    before = state_numpy(model), {k: np.asarray(v) for k, v in optimizer.state_dict().items()
                                  if "velocity" in k}
    poisoned = x.copy()
    poisoned[1, 0, 0, 0] = np.nan
    value = train_step(model, criterion, optimizer, paddle.to_tensor(poisoned), y, ind)
    assert math.isnan(value)
    after = state_numpy(model), {k: np.asarray(v) for k, v in optimizer.state_dict().items()
                                 if "velocity" in k}
    for was, now in zip(before, after):
        assert was.keys() == now.keys() and was
        for key in was:
            assert_same(now[key], was[key], key)
    value = train_step(model, criterion, optimizer, paddle.to_tensor(x), y, ind)
    assert math.isfinite(value)
    moved = state_numpy(model)
    assert all(np.isfinite(v).all() for v in moved.values())
    assert any(not np.array_equal(moved[k], before[0][k]) for k in moved)


# ---------------------------------------------------------------- bad input
def copy_demo(demo, tmp_path):
    images, lists = str(tmp_path / "images"), str(tmp_path / "lists")
    shutil.copytree(demo.image_dir, images)
    shutil.copytree(demo.list_dir, lists)
    return images, lists


def first_train_image(lists, images):
    with open(os.path.join(lists, "train.txt")) as f:
        return os.path.join(images, f.readline().split()[0])


def cli(demo, tmp_path, *extra, images=None, lists=None):
    argv = demo_argv(demo, tmp_path, "-bs", "16", "-e", "1", *extra)
    if images:
        argv += ["--data-path", images, "--list-dir", lists]
    return run_in_process(main_single_gpu.main, *argv)


def test_missing_image(demo, tmp_path):
    images, lists = copy_demo(demo, tmp_path)
    os.remove(first_train_image(lists, images))
    proc = cli(demo, tmp_path, images=images, lists=lists)
    assert_cli_error(proc, "train.txt:1:", "not found", "--skip-bad-images")
    assert not os.path.exists(tmp_path / "output" / "last_16.pdparams")


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_unreadable_or_truncated_image_and_skip_bad_images(demo, tmp_path, content):
    images, lists = copy_demo(demo, tmp_path)
    path = first_train_image(lists, images)
    if content == "truncated":
        with open(path, "rb") as f:
            content = f.read()[:400]
    with open(path, "wb") as f:
        f.write(content)
    proc = cli(demo, tmp_path, images=images, lists=lists)
    assert_cli_error(proc, os.path.basename(path), "unreadable or corrupt")
    skipped = cli(demo, tmp_path, "--skip-bad-images", *TINY, images=images, lists=lists)
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert f"skipped: image {path} is unreadable" in skipped.stdout


@pytest.mark.parametrize("line, fragment", [
    ("images/x.jpg 0 1 0", "train.txt:2: 3 labels, expected 10"),
    ("images/x.jpg 0 1 0 0 0 0 0 0 0 2", "train.txt:2: labels must be 0 or 1"),
])
def test_malformed_list_line(demo, tmp_path, line, fragment):
    images, lists = copy_demo(demo, tmp_path)
    path = os.path.join(lists, "train.txt")
    with open(path) as f:
        rows = f.read().splitlines()
    rows[1] = line
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")
    assert_cli_error(cli(demo, tmp_path, images=images, lists=lists), fragment)


def test_empty_list(demo, tmp_path):
    images, lists = copy_demo(demo, tmp_path)
    open(os.path.join(lists, "test.txt"), "w").close()
    assert_cli_error(cli(demo, tmp_path, images=images, lists=lists), "test.txt is empty")


@pytest.mark.parametrize("flag, value, fragment", [
    ("--dataset", "imagenette", "invalid choice: 'imagenette'"),
    ("--bit", "24", "invalid choice: 24"),
])
def test_unknown_dataset_and_unsupported_bit(demo, tmp_path, flag, value, fragment):
    proc = cli(demo, tmp_path, flag, value)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr


def test_missing_data_path(demo, tmp_path):
    proc = cli(demo, tmp_path, "--data-path", str(tmp_path / "nowhere"))
    assert_cli_error(proc, "data path", "nowhere", "not found")


def test_missing_backbone_weights(demo, tmp_path):
    proc = cli(demo, tmp_path, "--backbone", str(tmp_path / "alexnet.pdparams"))
    assert_cli_error(proc, "alexnet.pdparams not found", "convert_alexnet", "--backbone random")


def test_checkpoint_of_other_bit_and_not_hashnet(demo, tmp_path):
    from models.alexnet import AlexNetHash
    from utils.base.io import atomic_save
    atomic_save(AlexNetHash(48).state_dict(), str(tmp_path / "h48.pdparams"))
    atomic_save({"linear.weight": paddle.zeros([2, 2])}, str(tmp_path / "other.pdparams"))
    proc = cli(demo, tmp_path, "--eval", "--pretrained", str(tmp_path / "h48"))
    assert_cli_error(proc, "48-bit weights but --bit is 16")
    proc = cli(demo, tmp_path, "--eval", "--pretrained", str(tmp_path / "other"))
    assert_cli_error(proc, "not a HashNet checkpoint")


def test_unwritable_output_dir(demo, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = cli(demo, tmp_path, "--output-dir", str(blocker / "out"))
    assert_cli_error(proc, "--output-dir", "is not writable")


def test_batch_larger_than_training_set(demo, tmp_path):
    proc = cli(demo, tmp_path, "-bs", "4096")
    assert_cli_error(proc, "--batch-size 4096", "larger than the training set (48 images)")
    assert not os.path.exists(tmp_path / "output" / "last_16.pdparams")


def test_debug_shows_the_traceback(demo, tmp_path):
    proc = cli(demo, tmp_path, "--data-path", str(tmp_path / "nowhere"), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.parametrize("flags, fragment", [
    (["-ee", "0"], "-ee/--eval_epoch must be >= 1, got 0"),
    (["--debug_steps", "0"], "--debug_steps must be >= 1"),
    (["--step_continuation", "-1"], "--step_continuation must be >= 1"),
    (["-bs", "0"], "-bs/--batch-size must be >= 1"),
    (["--topK", "0"], "--topK must be -1 (whole database) or >= 1, got 0"),
])
def test_non_positive_numeric_flags(demo, tmp_path, flags, fragment):
    from utils.training.config import parse_args
    from conftest import user_error
    assert fragment in user_error(parse_args, demo_argv(demo, tmp_path, *flags))


def test_resume_refuses_a_bank_of_another_training_set():
    from utils.training.engine import load_bank
    from utils.methods.hashnet import HashNetLoss
    from conftest import user_error
    saved = HashNetLoss(48, 16, 10).state_dict()
    message = user_error(load_bank, HashNetLoss(50, 16, 10), saved, "output/last_16")
    assert "memory bank U is [48, 16], this run needs [50, 16]" in message
    load_bank(HashNetLoss(48, 16, 10), saved, "output/last_16")  # same shapes load
