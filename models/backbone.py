"""What every ``--arch`` shares: the hash layer and loading backbone weights.

The hash layer is new while the backbone is pretrained, so it learns 10x
faster in the reference recipe (ParamAttr learning_rate, as the authors'
PyTorch train.py gives ``hash_layer`` lr 10 and ``feature_layers`` lr 1 for
every network); the Caffe recipe replaces these by its own groups
(utils/lr_scheduler.py build_caffe_optimizer, by ``model.hash_layer``).
"""
import paddle
import paddle.nn as nn

from utils.base.checkpoint import checked_weight, load_state_file
from utils.base.errors import UserError

RANDOM_INIT = "random"
IMAGENET = "imagenet"
HASH_LR = 10.0


def hash_linear(d_in, bit):
    """The hash layer: N(0, 0.01) weights, zero bias (network.py and the
    prototxt's fc8 fillers), learning 10x faster."""
    return nn.Linear(d_in, bit,
                     weight_attr=paddle.ParamAttr(learning_rate=HASH_LR,
                                                  initializer=nn.initializer.Normal(0.0, 0.01)),
                     bias_attr=paddle.ParamAttr(learning_rate=HASH_LR,
                                                initializer=nn.initializer.Constant(0.0)))


def window_fits(side, layers):
    """Whether a ``side`` px input passes ``layers`` [(kernel, stride, pad,
    ceil)] with every window inside its (padded) input."""
    for kernel, stride, pad, ceil in layers:
        span = side + 2 * pad - kernel
        if span < 0:
            return False
        side = (-(-span // stride) if ceil else span // stride) + 1
    return True


def smallest_input(layers):
    """An arch's ``min_crop``: the smallest input side giving a valid feature
    map through its spatial ``layers`` (convolutions and pools in order)."""
    side = 1
    while not window_fits(side, layers):
        side += 1
    return side


def hash_layer_keys(model):
    """State-dict keys of ``model.hash_layer`` (left out of a backbone file)."""
    ids = {id(p) for p in model.hash_layer.parameters()}
    return {k for k, p in model.named_parameters() if id(p) in ids}


def backbone_path(model, path):
    """Resolve ``--backbone``: None for ``random``, the converted ImageNet
    file of the model's arch for ``imagenet`` (downloaded and converted once),
    else the path as given."""
    if path == RANDOM_INIT:
        return None
    if path == IMAGENET:
        from models.imagenet_backbone import imagenet_backbone
        from utils.base.download import DownloadFailed
        try:
            return imagenet_backbone(model.arch)
        except DownloadFailed as err:
            raise UserError(f"could not download the ImageNet {model.label} weights: {err} "
                            "(or pass --backbone PATH to a converted file)") from None
    return path


def load_backbone_weights(model, path, hint):
    """Everything but the hash layer from ``path`` (a .pdparams in the arch's
    own keys, as models/imagenet_backbone.py writes it); the hash layer keeps
    its fresh init. Missing keys or other shapes: a UserError with ``hint``."""
    path = backbone_path(model, path)
    if path is None:
        return
    state = load_state_file(path, f"{model.label} backbone weights", hint)
    own = model.state_dict()
    skip = hash_layer_keys(model)
    missing = [k for k in own if k not in skip and k not in state]
    if missing:
        raise UserError(f"{model.label} backbone weights {path} lack {', '.join(missing[:3])}: "
                        f"not a --arch {model.arch} backbone ({hint})")
    for key in own:
        if key not in skip and list(state[key].shape) != list(own[key].shape):
            raise UserError(f"{model.label} backbone weights {path}: {key} has shape "
                            f"{list(state[key].shape)}, expected {list(own[key].shape)}")
    model.set_state_dict({k: (own[k] if k in skip else checked_weight(path, k, state[k]))
                          for k in own})
