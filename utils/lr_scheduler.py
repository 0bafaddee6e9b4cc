"""Every schedule of both recipes, and their optimizer builders.

The reference recipe (spec §3) counts epochs from 1: β by continuation every
``step_continuation`` epochs, lr halved every ``de_step``. The authors' Caffe
recipe (spec §8, ``--recipe caffe``) counts iterations from 0: β from their
ScaleTanH layer, lr from solver.prototxt's "step" policy, and per-parameter
multipliers from train_val.prototxt.
"""
import math

import paddle

from utils.base.errors import UserError


def continuation_beta(epoch, step_continuation=20):
    """β(e) = sqrt(floor((e−1)/step) + 1): tanh(β·z) sharpens towards sign(z)
    as training goes on (HashNet's continuation), 1 → √2 → … every `step` epochs."""
    return math.sqrt((epoch - 1) // step_continuation + 1)


def base_lr(learning_rate, batch_size, world_size=1):
    """Linear scaling: the recipe's 1e-3 is for a global batch of 64."""
    return learning_rate * batch_size * world_size / 64


def step_lr(epoch, lr0, de_step=50):
    """lr halves every `de_step` epochs."""
    return lr0 * 0.5 ** ((epoch - 1) // de_step)


def build_optimizer(name, parameters, lr, weight_decay, momentum=0.9):
    """SGD with momentum (the recipe), RMSProp or AdamW; the engine sets the
    learning rate each epoch with ``set_lr``. ParamAttr learning-rate
    multipliers (the hash layer's 10x) apply to all three."""
    name = name.lower()
    if name == "sgd":
        return paddle.optimizer.Momentum(learning_rate=lr, momentum=momentum, parameters=parameters,
                                         weight_decay=paddle.regularizer.L2Decay(weight_decay))
    if name == "rmsprop":
        return paddle.optimizer.RMSProp(learning_rate=lr, parameters=parameters,
                                        weight_decay=paddle.regularizer.L2Decay(weight_decay))
    if name == "adamw":
        return paddle.optimizer.AdamW(learning_rate=lr, parameters=parameters,
                                      weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r}: use sgd, rmsprop or adamw")


# ---------------------------------------------------------------- --recipe caffe
# train_val.prototxt "continuation" (ScaleTanH) and solver.prototxt "step" policy
BETA_STEP, BETA_GAMMA, BETA_POWER = 200, 0.005, 0.5
LR_STEP, LR_GAMMA = 2000, 0.5
# lr_mult / decay_mult of train_val.prototxt: conv1-fc7, then the hash layer (fc8_flickr)
BACKBONE_MULT = {"weight": (1.0, 1.0), "bias": (2.0, 0.0)}
HASH_MULT = {"weight": (10.0, 1.0), "bias": (20.0, 0.0)}


def caffe_beta(iteration):
    """β of training forward ``iteration`` (from 0). ScaleTanH counts its
    Reshape calls: one in Layer::SetUp, one per Forward (layer.hpp lines 72,
    456), and sets β = (1 + 0.005·iter)^0.5 when iter % 200 == 0, so forward
    k sees iter = k + 2: β = 1 for k < 198, √2 from k = 198, √51 at 9999."""
    layer_iter = iteration + 2
    return (1 + BETA_GAMMA * (layer_iter // BETA_STEP * BETA_STEP)) ** BETA_POWER


def caffe_lr(iteration, base_lr):
    """lr = base_lr · 0.5^⌊iter/2000⌋ (solver.prototxt), for any batch size."""
    return base_lr * LR_GAMMA ** (iteration // LR_STEP)


def build_caffe_optimizer(model, lr, weight_decay, momentum):
    """Momentum SGD with the prototxt's per-parameter multipliers: lr × 1
    (weights) / 2 (biases) for conv1-fc7, × 10 / 20 for the hash layer;
    weight decay on weights only. A group's learning_rate replaces the hash
    layer's ParamAttr(learning_rate=10) of the reference recipe, so the
    multipliers are exactly these."""
    hash_params = {id(p) for p in model.hash_layer.parameters()}
    groups = {}
    for name, p in model.named_parameters():
        kind = "bias" if name.endswith("bias") else "weight"
        mult = (HASH_MULT if id(p) in hash_params else BACKBONE_MULT)[kind]
        groups.setdefault(mult, []).append(p)
    return paddle.optimizer.Momentum(
        learning_rate=lr, momentum=momentum,
        parameters=[{"params": ps, "learning_rate": lr_mult, "weight_decay": weight_decay * decay}
                    for (lr_mult, decay), ps in groups.items()])
