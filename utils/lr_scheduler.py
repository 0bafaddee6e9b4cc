"""The recipe's schedules (spec §3) and the optimizer builder. Epochs count from 1."""
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
