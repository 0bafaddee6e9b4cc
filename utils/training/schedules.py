"""The learning-rate schedules of both recipes, and their optimizer builders.

The reference recipe (spec §3) counts epochs from 1: lr halved every
``de_step`` (another method's official factor: ``de_gamma``). The authors' Caffe recipe (spec §8, ``--recipe caffe``) counts
iterations from 0: lr from solver.prototxt's "step" policy, and per-parameter
multipliers from train_val.prototxt. β is the method's (utils/methods/).
"""
import paddle

from utils.base.errors import UserError


def base_lr(learning_rate, batch_size, world_size=1):
    """Linear scaling: the recipe's 1e-3 is for a global batch of 64."""
    return learning_rate * batch_size * world_size / 64


def step_lr(epoch, lr0, de_step=50, gamma=0.5):
    """lr is multiplied by ``gamma`` every `de_step` epochs (the recipe: halved)."""
    return lr0 * gamma ** ((epoch - 1) // de_step)


def hash_layer_groups(model, hash_lr):
    """``model``'s parameters as two optimizer groups: the hash layer's learn
    ``hash_lr`` times as fast as the rest (a group's learning_rate multiplies
    the optimizer's, as a ParamAttr learning_rate does)."""
    hash_params = {id(p) for p in model.hash_layer.parameters()}
    params = model.parameters()
    return [{"params": [p for p in params if id(p) not in hash_params]},
            {"params": [p for p in params if id(p) in hash_params], "learning_rate": hash_lr}]


def build_optimizer(name, parameters, lr, weight_decay, momentum=0.9):
    """SGD with momentum (the recipe), RMSProp or AdamW over ``parameters`` (a
    list, or groups as ``hash_layer_groups`` makes them); the recipe sets the
    learning rate each period with ``set_lr``."""
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
# solver.prototxt "step" policy
LR_STEP, LR_GAMMA = 2000, 0.5
# lr_mult / decay_mult of train_val.prototxt: conv1-fc7, then the hash layer (fc8_flickr)
BACKBONE_MULT = {"weight": (1.0, 1.0), "bias": (2.0, 0.0)}
HASH_MULT = {"weight": (10.0, 1.0), "bias": (20.0, 0.0)}


def caffe_lr(iteration, base_lr):
    """lr = base_lr · 0.5^⌊iter/2000⌋ (solver.prototxt), for any batch size."""
    return base_lr * LR_GAMMA ** (iteration // LR_STEP)


def build_caffe_optimizer(model, lr, weight_decay, momentum):
    """Momentum SGD with the prototxt's per-parameter multipliers: lr × 1
    (weights) / 2 (biases) for conv1-fc7, × 10 / 20 for the hash layer;
    weight decay on weights only."""
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
