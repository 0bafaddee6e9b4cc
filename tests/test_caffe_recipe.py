"""The authors' Caffe recipe (--recipe caffe, spec §8, issue 10).

* CaffePairwiseLoss: the loss against a float64 numpy transcription of the
  .cu forward, its gradient against one of the .cu backward (continuous
  similarity on/off, class_num, ignored pairs, the threshold branch, the α
  on the first N flat elements only);
* schedules: β and lr at the issue's iterations; lr / weight-decay
  multipliers of every parameter, measured from one optimiser step;
* two streams: deterministic, independent, sharded by contiguous blocks;
* the run: 2 processes x b == 1 process x 2b, and a run stopped mid-way
  then resumed equals the uninterrupted one bit for bit;
* the authors' evaluation rule (skip queries with no relevant item in the
  database).
"""
import math
import os
import re
import signal
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import REPO, TINY, assert_same, demo_argv, state_numpy, user_error
from models.alexnet import AlexNetHash
from test_distributed import NODROPOUT, TinyWithoutDropout, ok, worker  # 2 gloo processes
from test_docs import demo_sh_settings, read
from utils.training import engine
from utils.training.step import STOP, train_step
from utils.training.schedules import build_caffe_optimizer, caffe_lr
from utils.methods.hashnet_caffe import caffe_beta
from utils.training import caffe
from utils.training.caffe import StreamBatches, TwoStreams
from utils.training.config import parse_args
from utils.methods.hashnet_caffe import CaffePairwiseLoss
from utils.retrieval.metrics import mean_average_precision_reference, retrieval_metrics

BIT = 16


# ---------------------------------------------------------------- the loss
def caffe_similarity(l1, l2):
    """.cu SimilarityProcess: -1 ignored (R < 0 or R >= C), 1 similar, else R (0)."""
    R = l1 @ l2.T
    return R, np.where((R < 0) | (R >= l1.shape[1]), -1.0, np.where(R > 0, 1.0, R))


def caffe_forward(b1, l1, b2, l2, alpha, threshold=15.0, class_num=1.0):
    """PairwiseLossForwardGPU + Forward_gpu, float64."""
    _, sim = caffe_similarity(l1, l2)
    P = alpha * (b1 @ b2.T)
    with np.errstate(over="ignore"):
        exp_product = np.exp(P)
    similar = (sim > 0).astype(float)
    thresholded = (threshold >= 0) & (P >= threshold)
    with np.errstate(over="ignore", invalid="ignore"):
        loss = np.where(thresholded, P * (1 - similar), np.log(1 + exp_product) - similar * P)
    loss = np.where(sim >= 0, loss, 0.0) * np.where(sim > 0, class_num, 1.0)
    count = np.where(sim >= 0, 1.0, 0.0) * np.where(sim > 0, class_num, 1.0)
    total = count.sum()
    return loss.sum() / (total if total > 0 else 1.0)


def caffe_backward(b1, l1, b2, l2, alpha, class_num=1.0, continuous=True):
    """PairwiseLossBackwardGPU + Backward_gpu (and the continuous weight of
    Forward_gpu), float64: (grad of b1, grad of b2)."""
    R, sim = caffe_similarity(l1, l2)
    P = alpha * (b1 @ b2.T)
    with np.errstate(over="ignore", divide="ignore"):
        exp_product = np.exp(P)
        sigmoid = 1 / (1 + 1 / exp_product)
    diff = np.where(sim >= 0, 2 * (sigmoid - (sim > 0)), 0.0) * np.where(sim > 0, class_num, 1.0)
    count = np.where(sim >= 0, 1.0, 0.0) * np.where(sim > 0, class_num, 1.0)
    if continuous:
        own1, own2 = l1 @ l1.T, l2 @ l2.T
        own1[own1 == 0], own2[own2 == 0] = 1.0, 1.0  # RemoveZero
        W = R * R / (np.diag(own1)[:, None] * np.diag(own2)[None, :])
        W[W == 0] = 0.25
        diff = 4 * diff * W
    c = count.sum() if count.sum() > 0 else 1.0
    g1, g2 = diff @ b2 / c, diff.T @ b1 / c
    n = b1.shape[0]
    g1.reshape(-1)[:n] *= alpha  # caffe_gpu_scal(outer_num_, sigmoid_param_, bottom_diff)
    g2.reshape(-1)[:n] *= alpha
    return g1, g2


def pairs(seed=0, n=6, bit=4, num_class=3):
    """Codes and labels with similar, dissimilar and ignored pairs: row 0 of
    each stream has every label (R = C with the other's row 0: ignored), one
    row has none (zero norm), one of stream 2 has a -1 label (R < 0)."""
    rng = np.random.default_rng(seed)
    b1, b2 = (np.tanh(2 * rng.normal(size=(n, bit))) for _ in range(2))
    l1, l2 = ((rng.random((n, num_class)) < 0.4).astype(float) for _ in range(2))
    l1[0], l2[0] = 1.0, 1.0
    l1[1], l2[2] = 0.0, 0.0
    l2[3] = [-1.0, 0.0, 0.0]
    return b1, l1, b2, l2


def paddle_loss_and_grads(b1, l1, b2, l2, **kwargs):
    t = [paddle.to_tensor(a.astype("float32"), stop_gradient=(k % 2 == 1))
         for k, a in enumerate((b1, l1, b2, l2))]
    loss = CaffePairwiseLoss(**kwargs)(*t)
    loss.backward()
    assert loss.dtype == t[0].grad.dtype == t[2].grad.dtype == paddle.float32
    return float(loss), t[0].grad.numpy(), t[2].grad.numpy()


def assert_relative(actual, expected, tol=1e-6):
    err = np.linalg.norm(np.asarray(actual, float) - expected) / np.linalg.norm(expected)
    assert err <= tol, err


CASES = {  # name -> (CaffePairwiseLoss kwargs, whether P reaches the threshold)
    "coco": (dict(sigmoid_param=10 / 4), False),
    "class_num": (dict(sigmoid_param=10 / 4, class_num=5.0), False),
    "discrete": (dict(sigmoid_param=10 / 4, class_num=5.0, continuous_similarity=False), False),
    "threshold": (dict(sigmoid_param=8.0, l_threshold=2.0, class_num=2.0), True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_caffe_loss_and_gradient_match_the_cu_transcription(case):
    kwargs, thresholded = CASES[case]
    b1, l1, b2, l2 = pairs()
    alpha, class_num = kwargs["sigmoid_param"], kwargs.get("class_num", 1.0)
    threshold = kwargs.get("l_threshold", 15.0)
    R, sim = caffe_similarity(l1, l2)
    assert (sim == -1).any() and (R < 0).any() and (R >= l1.shape[1]).any()  # both ignore kinds
    assert ((alpha * b1 @ b2.T) >= threshold).any() == thresholded
    loss, g1, g2 = paddle_loss_and_grads(b1, l1, b2, l2, **kwargs)
    assert loss == pytest.approx(caffe_forward(b1, l1, b2, l2, alpha, threshold, class_num), rel=1e-6)
    r1, r2 = caffe_backward(b1, l1, b2, l2, alpha, class_num,
                            kwargs.get("continuous_similarity", True))
    assert_relative(g1, r1)
    assert_relative(g2, r2)


def test_only_the_first_n_flat_gradient_elements_get_alpha():
    """The quirk itself: with α the gradient's first N = 6 of 6x4 flat
    elements are α times the rest's rule, and the other 18 lack α."""
    b1, l1, b2, l2 = pairs()
    alpha = 10 / 4
    _, g1, g2 = paddle_loss_and_grads(b1, l1, b2, l2, sigmoid_param=alpha)
    plain1, plain2 = caffe_backward(b1, l1, b2, l2, alpha)
    plain1.reshape(-1)[:6] /= alpha
    plain2.reshape(-1)[:6] /= alpha
    for got, plain in ((g1, plain1), (g2, plain2)):
        np.testing.assert_allclose(got.reshape(-1)[:6], alpha * plain.reshape(-1)[:6], rtol=1e-5)
        np.testing.assert_allclose(got.reshape(-1)[6:], plain.reshape(-1)[6:], rtol=1e-5)
        assert not np.allclose(got, alpha * plain, rtol=1e-3)  # not the chain rule's α everywhere


def test_threshold_branch_changes_the_loss_not_the_gradient():
    """Above l_threshold the loss is P·(1−s) (0 for a similar pair), the
    gradient still 2·(σ(P) − s): a threshold and 'no threshold' (-1) give
    different losses and the same gradient. (At the prototxts' 15 the two
    losses differ by e^-15 only: there it is an overflow guard.)"""
    b1, l1, b2, l2 = pairs()
    with_threshold = paddle_loss_and_grads(b1, l1, b2, l2, sigmoid_param=8.0, l_threshold=2.0)
    without = paddle_loss_and_grads(b1, l1, b2, l2, sigmoid_param=8.0, l_threshold=-1.0)
    assert with_threshold[0] != pytest.approx(without[0], rel=1e-4)
    assert without[0] == pytest.approx(caffe_forward(b1, l1, b2, l2, 8.0, -1.0), rel=1e-6)
    assert_same(with_threshold[1], without[1])
    assert_same(with_threshold[2], without[2])


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize("iteration, beta, halvings", [
    (0, 1.0, 0), (197, 1.0, 0), (198, math.sqrt(2), 0), (199, math.sqrt(2), 0),
    (200, math.sqrt(2), 0), (1999, math.sqrt(11), 0), (2000, math.sqrt(11), 1),
    (9999, math.sqrt(51), 4)])
def test_beta_and_lr_per_iteration(iteration, beta, halvings):
    assert caffe_beta(iteration) == pytest.approx(beta, rel=1e-12)
    assert caffe_lr(iteration, 5e-5) == pytest.approx(5e-5 / 2 ** halvings, rel=1e-12)


def test_lr_and_decay_multipliers_of_every_parameter():
    """One step from zero momentum with every gradient 1: Δw = −lr·m·(1 + λ·d·w)
    with (m, d) = (1, 1) weights and (2, 0) biases of conv1-fc7, (10, 1) and
    (20, 0) for the hash layer (the reference's ParamAttr 10x replaced)."""
    paddle.seed(0)
    model = AlexNetHash(BIT)
    lr, decay = 0.01, 0.1
    optimizer = build_caffe_optimizer(model, lr, decay, momentum=0.9)
    before = state_numpy(model)
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()
    after = state_numpy(model)
    assert len(before) == 16
    for key, w in before.items():
        bias = key.endswith("bias")
        mult = (20.0 if bias else 10.0) if key.startswith("classifier_plus.6.") else\
            (2.0 if bias else 1.0)
        expected = w - lr * mult * (1 + (0.0 if bias else decay) * w)
        np.testing.assert_allclose(after[key], expected, rtol=1e-5, atol=1e-7, err_msg=key)


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
    for key, value in ref.items():
        multi, single = got[key].numpy(), value.numpy()
        update = np.abs(single - init[key]).max()
        assert update > 0, key
        assert np.abs(multi - single).max() <= 0.01 * update, key
    got, ref = (paddle.load(str(tmp_path / run / "output" / "last_16.pdopt"))["training"]
                for run in ("multi", "single"))
    assert (got["iter"], got["world_size"], ref["world_size"]) == (5, 2, 1)
    assert got["history"][0]["loss"] == pytest.approx(ref["history"][0]["loss"], abs=1e-6)


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


# ---------------------------------------------------------------- evaluation
def test_skip_no_relevant_in_database_is_the_authors_rule():
    """Query 0 has a relevant item only beyond its top 1, query 1 none in the
    database: the authors average query 0 (AP 0) and drop query 1; the top-K
    rule drops both."""
    db = np.array([[1, 1], [-1, -1], [1, -1]], dtype=np.int8)
    db_labels = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=np.float32)
    queries = np.array([[1, 1], [1, 1], [-1, -1]], dtype=np.int8)
    q_labels = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32)
    topk = 1
    ap = [mean_average_precision_reference(queries[i:i + 1], q_labels[i:i + 1], db, db_labels,
                                           topk) for i in range(3)]
    assert ap == [0.0, 0.0, 1.0]
    m = retrieval_metrics(queries, q_labels, db, db_labels, topk, show_progress=False,
                          skip_no_relevant_in_database=True)
    assert m["map"] == pytest.approx((ap[0] + ap[2]) / 2)
    assert m["queries_without_relevant_in_database"] == 1
    assert retrieval_metrics(queries, q_labels, db, db_labels, topk, show_progress=False,
                             skip_no_relevant=True)["map"] == pytest.approx(1.0)
