"""Nothing lost: exact resume after SIGKILL / SIGTERM, a non-finite loss
stops cleanly, and every kind of bad input is a one-line error (issue 7)."""
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import GUARD_DIR, REPO, assert_cli_error, assert_same, demo_argv, run_python

TRAIN = ["-bs", "16", "-e", "3", "-ee", "3", "--debug_steps", "1",
         "--step_continuation", "1", "--de_step", "1"]


def train_argv(demo, out, *extra):
    return ["main_single_gpu.py", *demo_argv(demo, out, *TRAIN, *extra)]


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


def test_sigkill_after_epoch_then_resume_is_bit_identical(demo, tmp_path, uninterrupted):
    code, output = run_until(train_argv(demo, tmp_path), "last_16 (epoch 2,", signal.SIGKILL)
    assert code == -signal.SIGKILL, output[-2000:]
    resumed = run_python(*train_argv(demo, tmp_path, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at the end of epoch 2" in resumed.stdout
    assert "HashNet[ 3/3]" in resumed.stdout and "HashNet[ 1/3]" not in resumed.stdout
    assert_bit_identical(params(tmp_path), uninterrupted)


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


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_last(demo, tmp_path, make_args,
                                                                  monkeypatch):
    from utils import engine
    from utils.errors import UserError
    args = make_args("-bs", "16", "-e", "3", "-ee", "5")
    real_step = engine.train_step
    calls = {"n": 0}

    def poisoned_step(*a):  # finite for epoch 1 (3 steps), NaN at epoch 2 step 2
        calls["n"] += 1
        return float("nan") if calls["n"] == 5 else real_step(*a)

    monkeypatch.setattr(engine, "train_step", poisoned_step)
    with pytest.raises(UserError, match="non-finite loss nan at epoch 2, step 2"):
        engine.run_train(args)
    last = os.path.join(args.output_dir, "last_16.pdopt")
    assert paddle.load(last)["training"]["epoch"] == 1  # epoch 1's checkpoint, intact


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
    return run_python("main_single_gpu.py", *argv)


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
    skipped = cli(demo, tmp_path, "--skip-bad-images", images=images, lists=lists)
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
    from models import HashNet
    from utils.io import atomic_save
    atomic_save(HashNet(48).state_dict(), str(tmp_path / "h48.pdparams"))
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
    from utils.config import parse_args
    from conftest import user_error
    assert fragment in user_error(parse_args, demo_argv(demo, tmp_path, *flags))


def test_resume_refuses_a_bank_of_another_training_set():
    from utils.engine import load_bank
    from utils.loss import HashNetLoss
    from conftest import user_error
    saved = HashNetLoss(48, 16, 10).state_dict()
    message = user_error(load_bank, HashNetLoss(50, 16, 10), saved, "output/last_16")
    assert "memory bank U is [48, 16], this run needs [50, 16]" in message
    load_bank(HashNetLoss(48, 16, 10), saved, "output/last_16")  # same shapes load
