"""utils/training/schedules.py: β continuation and the learning-rate schedule
(spec §3), and that the engine applies them: expected values are written
out by hand from the spec; the Caffe recipe's β, lr and per-parameter
multipliers (spec §8)."""
import logging
import math

import numpy as np
import paddle
import pytest

from models.alexnet import AlexNetHash
from support.weights import state_numpy
from utils.methods.hashnet_caffe import caffe_beta
from utils.training import engine, recipes, reference
from utils.training.config import build_method, parse_args
from utils.data.loaders import ArrayImages, build_loader
from utils.methods.hashnet import HashNetLoss
from utils.training.schedules import (base_lr, build_caffe_optimizer, build_optimizer, caffe_lr,
                                      step_lr)
from utils.methods.hashnet import continuation_beta

# spec §3: β = 1 for epochs 1-20, √2 for 21-40, ..., √8 for 141-150
BETA = {1: 1.0, 20: 1.0, 21: math.sqrt(2), 40: math.sqrt(2), 41: math.sqrt(3),
        50: math.sqrt(3), 51: math.sqrt(3), 100: math.sqrt(5), 101: math.sqrt(6),
        141: math.sqrt(8), 150: math.sqrt(8)}
# spec §3: two GPUs at batch 64 log 0.002 for epochs 1-50, 0.001 for 51-100,
# 0.0005 for 101-150
LR = {1: 0.002, 20: 0.002, 21: 0.002, 50: 0.002, 51: 0.001, 100: 0.001, 101: 0.0005,
      150: 0.0005}


@pytest.mark.parametrize("epoch", sorted(BETA))
def test_continuation_beta(epoch):
    assert continuation_beta(epoch, 20) == pytest.approx(BETA[epoch], rel=1e-12)
    assert continuation_beta(epoch) == pytest.approx(BETA[epoch], rel=1e-12)  # default step 20


def test_beta_last_epoch_is_about_2_828():
    assert continuation_beta(150) == pytest.approx(2.828, abs=1e-3)


def test_base_lr_scaling():
    assert base_lr(1e-3, 64, 2) == pytest.approx(0.002)    # two GPUs x 64
    assert base_lr(1e-3, 128, 1) == pytest.approx(0.002)   # single GPU x 128
    assert base_lr(1e-3, 64, 1) == pytest.approx(0.001)
    assert base_lr(1e-2, 32, 1) == pytest.approx(0.005)


@pytest.mark.parametrize("epoch", sorted(LR))
def test_step_lr(epoch):
    assert step_lr(epoch, 0.002, 50) == pytest.approx(LR[epoch], rel=1e-12)
    assert step_lr(epoch, 0.002) == pytest.approx(LR[epoch], rel=1e-12)  # default de_step 50


@pytest.mark.parametrize("epoch", sorted(LR))
def test_engine_epoch_lr_two_processes(monkeypatch, epoch):
    monkeypatch.setattr(engine.dist, "world_size", lambda: 2)
    args = parse_args(["-bs", "64"], batch_size=64)
    assert reference.epoch_lr(args, epoch) == pytest.approx(LR[epoch], rel=1e-12)


@pytest.mark.parametrize("epoch", [1, 50, 51, 101, 150])
def test_engine_epoch_lr_single_process_default_batch(epoch):
    args = parse_args([])  # batch 128, lr 1e-3, de_step 50: the same 0.002 start
    assert reference.epoch_lr(args, epoch) == pytest.approx(LR[epoch], rel=1e-12)


# ---------------------------------------------------------------- the Caffe recipe's schedules


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
    model = AlexNetHash(16)
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


def test_recipe_defaults():
    args = parse_args([])
    assert (args.learning_rate, args.batch_size, args.de_step, args.step_continuation,
            args.epoch, args.eval_epoch, args.alpha) == (1e-3, 128, 50, 20, 150, 10, 0.1)
    assert (args.optimizer, args.momentum, args.weight_decay) == ("sgd", 0.9, 5e-4)
    assert parse_args([], batch_size=64).batch_size == 64  # the two-GPU script's default


def test_reference_flag_spellings():
    """spec §6: the reference scripts' flags keep working."""
    args = parse_args(["--bit", "48", "--seed", "200", "--eval", "--pretrained", "p",
                       "--resume", "r", "--debug_steps", "7", "--dataset", "cifar10",
                       "--data-path", "d", "--num_class", "11", "--topK", "33",
                       "--crop_size", "96", "--resize_size", "112", "-bs", "5",
                       "--last_epoch", "3", "-ee", "4", "--alpha", "0.2",
                       "--step_continuation", "6", "-lr", "0.5", "--de_step", "8", "-e", "9",
                       "-op", "adamw", "-wd", "0.25", "--momentum", "0.5", "--log_path", "l",
                       "--output-dir", "o"])
    assert (args.bit, args.seed, args.eval, args.pretrained, args.resume, args.debug_steps,
            args.dataset, args.data_path, args.num_class, args.topK, args.crop_size,
            args.resize_size, args.batch_size, args.last_epoch, args.eval_epoch, args.alpha,
            args.step_continuation, args.learning_rate, args.de_step, args.epoch,
            args.optimizer, args.weight_decay, args.momentum, args.log_path,
            args.output_dir) == (48, 200, True, "p", "r", 7, "cifar10", "d", 11, 33, 96, 112,
                                 5, 3, 4, 0.2, 6, 0.5, 8, 9, "adamw", 0.25, 0.5, "l", "o")
    long = parse_args(["--batch-size", "6", "--eval_epoch", "2", "--learning_rate", "0.1",
                       "--epoch", "4", "--optimizer", "RMSProp", "--weight_decay", "0"])
    assert (long.batch_size, long.eval_epoch, long.learning_rate, long.epoch,
            long.optimizer, long.weight_decay) == (6, 2, 0.1, 4, "rmsprop", 0.0)


@pytest.mark.parametrize("dataset,num_class,topk", [
    ("coco", 80, 5000), ("nuswide_21", 21, 5000), ("nuswide_21_m", 21, 5000),
    ("nuswide_81_m", 81, 5000), ("imagenet", 100, 1000), ("cifar10", 10, -1),
    ("cifar10-1", 10, -1), ("cifar10-2", 10, -1), ("mirflickr", 38, -1), ("voc2012", 20, -1)])
def test_dataset_presets(dataset, num_class, topk):
    args = parse_args(["--dataset", dataset])
    assert (args.num_class, args.topK) == (num_class, topk)


@pytest.mark.float_sensitive
def test_build_optimizer_recipe_sgd():
    """spec §3: Momentum SGD with momentum 0.9 and L2 weight decay 5e-4 (the
    parsed defaults), measured on two steps of a constant gradient g:
    v1 = g + wd·p0, p1 = p0 − lr·v1; v2 = μ·v1 + g + wd·p1, p2 = p1 − lr·v2."""
    args = parse_args([])
    paddle.seed(0)
    layer = paddle.nn.Linear(3, 2)
    opt = build_optimizer(args.optimizer, layer.parameters(), 0.002, args.weight_decay,
                          args.momentum)
    assert isinstance(opt, paddle.optimizer.Momentum)
    assert opt.get_lr() == pytest.approx(0.002)
    lr = 20.0  # large, so that the decay term wd·lr·p is far above float32 rounding
    opt.set_lr(lr)
    g = np.full([3, 2], 0.01)
    p = [layer.weight.numpy().astype(np.float64)]
    for _ in range(2):
        (layer.weight * paddle.to_tensor(g, dtype="float32")).sum().backward()
        opt.step()
        opt.clear_grad()
        p.append(layer.weight.numpy().astype(np.float64))
    v1 = g + 5e-4 * p[0]
    v2 = 0.9 * v1 + g + 5e-4 * (p[0] - lr * v1)
    np.testing.assert_allclose(p[1], p[0] - lr * v1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(p[2], p[1] - lr * v2, rtol=0, atol=1e-6)
    assert np.abs(lr * 5e-4 * p[0]).max() > 1e-3  # the decay is a visible part of the step
    assert isinstance(build_optimizer("rmsprop", layer.parameters(), 0.1, 0.0),
                      paddle.optimizer.RMSProp)
    assert isinstance(build_optimizer("adamw", layer.parameters(), 0.1, 0.0),
                      paddle.optimizer.AdamW)


# ------------------------------------------------ the engine applies them
class RecordingLoss(HashNetLoss):
    """HashNetLoss that records β at every call."""

    def forward(self, z, y, ind):
        self.seen_beta.append(self.beta)
        return super().forward(z, y, ind)


@pytest.fixture
def tiny_loader():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    labels = np.eye(3, dtype=np.float32)[np.arange(12) % 3]
    data = ArrayImages(images, labels, resize_size=16, crop_size=12, train=True, seed=0)
    return build_loader(data, 4, shuffle=True, seed=0)


@pytest.mark.parametrize("flags,epoch", [
    (["--step_continuation", "1", "--de_step", "1"], 3),
    (["--step_continuation", "1", "--de_step", "1"], 1),
    ([], 21), ([], 51), ([], 101)])
def test_train_one_epoch_sets_lr_and_beta(tiny_loader, flags, epoch):
    args = parse_args(["-bs", "4", "--debug_steps", "1000", "--seed", "0", *flags])
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(3 * 12 * 12, 16))
    criterion = RecordingLoss(12, 16, 3)
    criterion.seen_beta = []
    optimizer = build_optimizer("sgd", model.parameters(), 123.0, 5e-4)  # a wrong lr on purpose
    step_lrs = []
    original_step = optimizer.step
    optimizer.step = lambda: (step_lrs.append(optimizer.get_lr()), original_step())
    recipe = recipes.build(args, build_method(args))
    reference.train_one_epoch(recipe, model, criterion, optimizer, tiny_loader,
                              logging.getLogger("test_schedules"), reference.EpochProgress(epoch))
    step = 1 if flags else 20
    decay = 1 if flags else 50
    expected_beta = math.sqrt((epoch - 1) // step + 1)
    expected_lr = 1e-3 * 4 / 64 * 0.5 ** ((epoch - 1) // decay)
    assert len(step_lrs) == 3 and len(criterion.seen_beta) == 3
    assert step_lrs == pytest.approx([expected_lr] * 3, rel=1e-12)
    assert criterion.seen_beta == pytest.approx([expected_beta] * 3, rel=1e-12)
