"""utils/training/caffe.py, the authors' Caffe recipe (--recipe caffe, spec §8):

* its flags and presets, and the scripts that set the authors' values;
* two streams: deterministic, independent, sharded by contiguous blocks;
* the run: 2 processes x b == 1 process x 2b, and a run stopped mid-way
  then resumed equals the uninterrupted one bit for bit.

The loss is tested in tests/methods/test_hashnet_caffe.py, its schedules in
tests/training/test_schedules.py.
"""
import os
import re
import signal
import subprocess
import sys

import paddle
import pytest

from support.demo_set import demo_argv
from support.errors import user_error
from support.paths import REPO
from support.cli import TINY
from support.two_processes import (NODROPOUT, TWO_BY_B_TOLERANCE,  # 2 gloo processes
                                   TinyWithoutDropout, assert_same_update, ok, worker)
from support.weights import assert_same, state_numpy
from support.docs import demo_sh_settings, read
from utils.training import caffe
from utils.training import engine
from utils.training.caffe import StreamBatches, TwoStreams
from utils.training.config import parse_args
from utils.training.step import STOP, train_step


def test_caffe_flags_and_presets(demo):
    coco = parse_args(["--recipe", "caffe", "--bit", "48"])
    assert (coco.batch_size, coco.base_lr, coco.class_num, coco.topK, coco.max_iter) ==\
        (256, 5e-5, 1.0, 5000, 10000)
    assert coco.sigmoid_param == pytest.approx(10 / 48) and coco.eval_iter == 10000
    imagenet = parse_args(["--recipe", "caffe", "--dataset", "imagenet"])
    assert (imagenet.base_lr, imagenet.class_num, imagenet.topK) == (2e-4, 100.0, 1000)
    assert parse_args(["--recipe", "caffe", "--dataset", "nuswide_81_m"]).class_num == 5.0
    reference = parse_args([])
    assert (reference.recipe, reference.batch_size) == ("reference", 128)
    for flags, fragment in ((["-op", "adamw"], "momentum SGD only"),
                            (["--skip-bad-images"], "two streams of unequal size"),
                            (["--base_lr", "0"], "--base_lr must be > 0"),
                            (["--max_iter", "0"], "--max_iter must be >= 1")):
        assert fragment in user_error(parse_args, ["--recipe", "caffe", *flags])


@pytest.mark.parametrize("nprocs, entry, batch", [("", "main_single_gpu.py", 256),
                                                  ("2", "main_multi_gpu.py", 128)])
def test_coco_script_sets_the_authors_values(tmp_path, nprocs, entry, batch):
    """scripts/train_caffe_recipe.sh with `python` replaced by a recorder of
    the training command (recipe.sh's own `python -c` still runs): its flags
    parse to the prototxts' settings (as the README states them)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "argv"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\n[ "$1" = -c ] && exec {sys.executable} "$@"\n'
                                    'printf "%s\\n" "$@" > "$RECORD"\n')
    (bin_dir / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", RECORD=str(record),
               NPROCS=nprocs)
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "train_caffe_recipe.sh"), "48"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = record.read_text().splitlines()
    assert argv[0] == entry
    args = parse_args(argv[1:])
    assert (args.recipe, args.dataset, args.bit, args.batch_size * (int(nprocs or 1)),
            args.max_iter, args.base_lr, args.class_num, args.weight_decay, args.momentum,
            args.topK, args.skip_no_relevant_in_database, args.seed) ==\
        ("caffe", "coco", 48, 256, 10000, 5e-5, 1.0, 5e-4, 0.9, 5000, True, 200)
    assert args.batch_size == batch and args.sigmoid_param == pytest.approx(10 / 48)


def test_readme_caffe_demo_settings_are_the_scripts():
    """README's DEMO_RECIPE=caffe paragraph states what scripts/demo.sh sets."""
    script = demo_sh_settings(read("scripts/demo.sh"))
    stated = re.search(r"two streams\s+of (\d+) images, (\d+) iterations.*?their base_lr ([0-9.e-]+)",
                       read("README.md"), re.S)
    assert stated, "README no longer states the Caffe demo settings"
    assert (int(script["CAFFE_BATCH"]), int(script["CAFFE_ITER"]), float(script["CAFFE_LR"])) ==\
        (int(stated[1]), int(stated[2]), float(stated[3]))


# ---------------------------------------------------------------- two streams


class Indices:
    """A dataset whose items are their index (and the epoch they were read in)."""

    def __init__(self, n):
        self.n, self.epoch = n, 0

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        return i, self.epoch


def test_two_streams_are_shuffled_passes_sharded_in_blocks():
    streams = TwoStreams(Indices(10), seed=3)
    one = [[streams[k] for k in batch] for batch in StreamBatches(4, 0, 5)]
    # stream 1 = rows 0-3 of each batch: its first 20 positions are two passes
    s1 = [item for batch in one for item in batch[:4]]
    s2 = [item for batch in one for item in batch[4:]]
    for stream, epochs in ((s1, (0, 2)), (s2, (1, 3))):
        for r in range(2):
            assert sorted(i for i, _ in stream[10 * r:10 * r + 10]) == list(range(10))
            assert {e for _, e in stream[10 * r:10 * r + 10]} == {epochs[r]}  # own augmentation
    assert [i for i, _ in s1[:10]] != [i for i, _ in s2[:10]]  # independent shuffles
    assert [i for i, _ in s1[:10]] != [i for i, _ in s1[10:]]  # reshuffled per pass
    # 2 processes x 2: rank-order concatenation of the stream blocks is the 1 x 4 batch
    ranks = [list(StreamBatches(2, 0, 5, rank=r, world_size=2)) for r in range(2)]
    for k, batch in enumerate(StreamBatches(4, 0, 5)):
        blocks = [ranks[r][k] for r in range(2)]
        assert [key for b in blocks for key in b[:2]] == batch[:4]
        assert [key for b in blocks for key in b[2:]] == batch[4:]
    assert list(StreamBatches(4, 3, 5)) == list(StreamBatches(4, 0, 5))[3:]  # resume at 3


# ---------------------------------------------------------------- the run


CAFFE = ["--recipe", "caffe", "--base_lr", "0.02", "--debug_steps", "1"]


def test_two_by_b_equals_one_by_two_b(demo, make_args, tmp_path, monkeypatch):
    """5 iterations of 2 streams x 24 images (48 training images: each
    stream starts a new pass every 2 iterations): 2 processes x 12 per
    stream and 1 process x 24 give the same parameters. N = 24 > 16 bits,
    so the α quirk covers 1.5 rows and the gathered row order must be the
    one-process order. Dropout is off (its masks differ between the two)."""
    flags = [*CAFFE, "--max_iter", "5", "--seed", "3"]
    ok(worker("nodropout", tmp_path / "multi",
              demo_argv(demo, tmp_path / "multi", *flags, "-bs", "12")))
    engine.run(make_args(*flags, "-bs", "24", "--arch", NODROPOUT, out=tmp_path / "single"))
    got, ref = (paddle.load(str(tmp_path / run / "output" / "last_16.pdparams"))
                for run in ("multi", "single"))
    paddle.seed(3)
    init = state_numpy(TinyWithoutDropout(16))
    assert_same_update(got, ref, init)   # within 1 % of each update, or 1e-5 where that is less
    got, ref = (paddle.load(str(tmp_path / run / "output" / "last_16.pdopt"))["training"]
                for run in ("multi", "single"))
    assert (got["iter"], got["world_size"], ref["world_size"]) == (5, 2, 1)
    assert got["history"][0]["loss"] == pytest.approx(ref["history"][0]["loss"],
                                                      abs=TWO_BY_B_TOLERANCE)


def test_stopped_then_resumed_equals_uninterrupted(make_args, tmp_path, monkeypatch):
    """A stop signal after iteration 2 of 4 saves `last` and exits 128+15;
    --resume continues at iteration 2 and ends bit-identical (weights and
    momentum) to the run that was never stopped."""
    flags = [*CAFFE, "--max_iter", "4", "-bs", "8", *TINY]   # the engine's, on the tiny net
    whole = tmp_path / "whole"
    engine.run(make_args(*flags, out=whole))
    step, calls = train_step, []

    def stopped_at_two(*a):
        calls.append(1)
        if len(calls) == 2:
            STOP.signum = signal.SIGTERM
        return step(*a)
    monkeypatch.setattr(caffe, "train_step", stopped_at_two)
    parted = tmp_path / "parted"
    with pytest.raises(SystemExit) as stop:
        engine.run(make_args(*flags, out=parted))
    assert stop.value.code == 128 + signal.SIGTERM
    assert paddle.load(str(parted / "output" / "last_16.pdopt"))["training"]["iter"] == 2
    monkeypatch.setattr(caffe, "train_step", step)
    state = engine.run(make_args(*flags, "--resume", out=parted))
    assert state["iter"] == 4 and [h["iter"] for h in state["history"]] == [4]
    # exact: one machine and thread count, the same kernels in the same order
    for name in ("pdparams", "pdopt"):
        a, b = (paddle.load(str(run / "output" / f"last_16.{name}")) for run in (whole, parted))
        if name == "pdopt":
            a, b = a["optimizer"], b["optimizer"]
        assert sorted(a) == sorted(b)
        for key in a:
            if hasattr(a[key], "numpy"):
                assert_same(a[key].numpy(), b[key].numpy(), key)


def test_each_recipe_refuses_the_others_checkpoint(make_args, tmp_path):
    reference, caffe = tmp_path / "reference", tmp_path / "caffe"
    engine.run(make_args("-bs", "16", "-e", "1", "-ee", "1", *TINY, out=reference))
    engine.run(make_args(*CAFFE, "--max_iter", "1", "-bs", "8", *TINY, out=caffe))
    assert "not a --recipe caffe checkpoint" in user_error(
        engine.run, make_args(*CAFFE, "--max_iter", "2", "-bs", "8", "--resume", *TINY,
                             out=reference))
    assert "is a --recipe caffe checkpoint" in user_error(
        engine.run, make_args("-bs", "16", "-e", "2", "--resume", *TINY, out=caffe))
