"""What every ``--arch`` network is (``HashModel``), and what they share: the
hash layer's init, the smallest input side, loading backbone weights.

The hash layer's learning-rate multiplier is not here: it is the training
method's choice (HashNet's 10x, utils/methods/) or the recipe's (the Caffe
prototxt's groups), so the networks only define layers and their init.
"""
import paddle
import paddle.nn as nn

from models.registry import DEFAULT_CROP
from utils.base.checkpoint import checked_weight, load_state_file
from utils.base.errors import UserError

RANDOM_INIT = "random"
IMAGENET = "imagenet"


class HashModel(nn.Layer):
    """A backbone whose last feature feeds a ``bit``-wide linear hash layer.

    ``forward(x [N, 3, S, S]) -> z [N, bit]`` returns the real-valued hash
    layer output; training methods squash it (HashNet: tanh(β·z)), retrieval
    takes its sign. A subclass builds its layers in ``__init__(bit)``,
    defines ``forward`` and ``hash_layer``, and sets:

      * ``label``: its name in messages ("AlexNet");
      * ``min_crop``: the smallest input side its layers take;
      * ``default_crop``: its training crop when --crop_size is not given;
      * ``signature``: a state-dict key no other arch has (``arch_of_state``
        names the arch of a checkpoint loaded with the wrong --arch);
      * ``backbone_hint``: how to obtain its backbone weights, for errors;
      * ``weights_arch``: whose ImageNet weights ``--backbone imagenet``
        fetches (models/imagenet_backbone.py; default: its own arch).
    ``arch`` is set by ``models.register``.
    """
    arch = None
    label = None
    min_crop = 1
    default_crop = DEFAULT_CROP
    signature = None
    backbone_hint = ""
    weights_arch = None

    @property
    def hash_layer(self):
        """The Linear that makes z (its parameters learn at the method's rate)."""
        raise NotImplementedError

    def backbone_keys(self, state):
        """A backbone file's state dict in this model's keys (identity here)."""
        return state

    def load_backbone(self, path):
        """ImageNet (``"imagenet"``), a local file or ``"random"`` init of
        everything but the hash layer."""
        load_backbone_weights(self, path)


def hash_linear(d_in, bit):
    """The hash layer: N(0, 0.01) weights, zero bias (network.py and the
    prototxt's fc8 fillers)."""
    return nn.Linear(d_in, bit,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, 0.01)),
                     bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))


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
    file of the model's weights arch for ``imagenet`` (downloaded and
    converted once), else the path as given."""
    if path == RANDOM_INIT:
        return None
    if path == IMAGENET:
        from models.imagenet_backbone import imagenet_backbone
        from utils.base.download import DownloadFailed
        try:
            return imagenet_backbone(model.weights_arch or model.arch)
        except DownloadFailed as err:
            raise UserError(f"could not download the ImageNet {model.label} weights: {err} "
                            "(or pass --backbone PATH to a converted file)") from None
    return path


def load_backbone_weights(model, path):
    """Everything but the hash layer from ``path`` (a .pdparams file, as
    models/imagenet_backbone.py writes it, mapped by ``model.backbone_keys``);
    the hash layer keeps its fresh init. Missing keys or other shapes: a
    UserError with the model's ``backbone_hint``."""
    path = backbone_path(model, path)
    if path is None:
        return
    hint = model.backbone_hint
    state = model.backbone_keys(load_state_file(path, f"{model.label} backbone weights", hint))
    own = model.state_dict()
    skip = hash_layer_keys(model)
    missing = [k for k in own if k not in skip and k not in state]
    if missing:
        raise UserError(f"{model.label} backbone weights {path} lack {', '.join(missing[:3])}: "
                        f"not a --arch {model.arch} backbone ({hint})")
    for key in own:
        if key not in skip and list(state[key].shape) != list(own[key].shape):
            raise UserError(f"{model.label} backbone weights {path}: {key} has shape "
                            f"{list(state[key].shape)}, expected {list(own[key].shape)} ({hint})")
    model.set_state_dict({k: (own[k] if k in skip else checked_weight(path, k, state[k]))
                          for k in own})
