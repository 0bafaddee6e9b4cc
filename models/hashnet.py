"""HashNet (Cao et al., ICCV 2017): AlexNet features, fc6/fc7, a hash layer;
registered as ``--arch alexnet`` (models/registry.py).

forward(x) returns the real-valued hash-layer output z [N, bit]. Training
squashes it as u = tanh(β·z) inside the loss (utils/loss.py) so that β can be
raised by continuation without touching the model; retrieval uses the binary
code sign(z), with z == 0 mapped to +1.
"""
import os

import numpy as np
import paddle
import paddle.nn as nn

from models.alexnet import FEATURE_DIM, alexnet_features, fc67
from models.imagenet_backbone import IMAGENET, imagenet_backbone
from models.registry import arch_of_state, build, register
from utils.base.checkpoint import checked_weight, load_state_file, load_weights, strip_params_suffix
from utils.base.errors import UserError

RANDOM_INIT = "random"

BACKBONE_HELP = (
    "pass --backbone imagenet to download them, or get ImageNet AlexNet weights as "
    "torchvision's alexnet-owt-*.pth or paddle.vision's alexnet .pdparams and convert them with "
    "`python -m scripts.convert_alexnet SRC models/AlexNet_pretrained.pdparams`, "
    "or pass --backbone random for random init")


@register("alexnet")
class HashNet(nn.Layer):
    """AlexNet (paddle.vision's layout: dropout before fc6 and fc7, none
    before the hash layer) + the hash layer, with the reference's state-dict
    keys: the hash layer is ``classifier_plus.6``."""
    min_crop = 63        # three stride-2 max-pools after a stride-4 conv need 63 px
    label = "AlexNet"
    signature = "classifier_plus.6.weight"   # the reference's hash layer

    def __init__(self, bit):
        super().__init__()
        self.bit = bit
        self.features = alexnet_features()
        self.avgpool = nn.AdaptiveAvgPool2D((6, 6))
        # The hash layer is new while fc6/fc7 are pretrained, so it learns 10x
        # faster (ParamAttr learning_rate multiplies the optimizer's lr).
        hash_weight = paddle.ParamAttr(learning_rate=10.0,
                                       initializer=nn.initializer.Normal(0.0, 0.01))
        hash_bias = paddle.ParamAttr(learning_rate=10.0,
                                     initializer=nn.initializer.Constant(0.0))
        self.classifier_plus = nn.Sequential(
            *fc67(), nn.Linear(4096, bit, weight_attr=hash_weight, bias_attr=hash_bias))

    @property
    def hash_layer(self):
        return self.classifier_plus[6]

    def load_backbone(self, path):
        load_backbone(self, path)

    def forward(self, x):                           # x: [N, 3, S, S]
        x = self.avgpool(self.features(x))          # [N, 256, 6, 6]
        x = paddle.reshape(x, [-1, FEATURE_DIM])    # [N, 9216]
        return self.classifier_plus(x)              # z: [N, bit]


def sign_codes(z):
    """The binary codes sign(z): int8 in {-1, +1} [N, bit] from z [N, bit]
    (a paddle Tensor or an array); z == 0 counts as +1 so every bit is set."""
    z = z.numpy() if isinstance(z, paddle.Tensor) else np.asarray(z)
    return np.where(z >= 0, 1, -1).astype(np.int8)


def backbone_state(alexnet_state):
    """Map an AlexNet state dict (torchvision layout, Paddle shapes) onto
    HashNet keys: features.* unchanged, classifier.{1,4} -> classifier_plus.{1,4}.
    The ImageNet classifier (classifier.6) has no counterpart and is dropped."""
    mapped = {}
    for key, value in alexnet_state.items():
        if key.startswith("features."):
            mapped[key] = value
        elif key.split(".")[:2] in (["classifier", "1"], ["classifier", "4"]):
            mapped["classifier_plus" + key[len("classifier"):]] = value
    return mapped


def load_backbone(model, path):
    """Initialise features and fc6/fc7 from an AlexNet .pdparams file.

    ``path == "imagenet"`` fetches and converts paddle.vision's ImageNet
    weights once (models/imagenet_backbone.py); a missing local file is a
    UserError saying how to get one; ``"random"`` keeps the random init (tests).
    """
    if path == RANDOM_INIT:
        return
    if path == IMAGENET:
        from utils.base.download import DownloadFailed
        try:
            path = imagenet_backbone()
        except DownloadFailed as err:
            raise UserError(f"could not download the ImageNet AlexNet weights: {err} "
                            "(or pass --backbone PATH to a converted file)") from None
    state = backbone_state(load_state_file(path, "backbone weights", BACKBONE_HELP))
    own = model.state_dict()
    missing = [k for k in own if not k.startswith("classifier_plus.6") and k not in state]
    if missing:
        raise UserError(f"backbone weights {path} lack {', '.join(missing[:3])}: {BACKBONE_HELP}")
    for key, value in state.items():
        if list(value.shape) != list(own[key].shape):
            raise UserError(f"backbone weights {path}: {key} has shape {list(value.shape)}, "
                            f"expected {list(own[key].shape)} (torch Linear weights must be "
                            "transposed: use python -m scripts.convert_alexnet)")
    own.update({k: checked_weight(path, k, v) for k, v in state.items()})  # the hash layer keeps its fresh init
    model.set_state_dict(own)


def default_checkpoint(bit):
    """``output/model_best_{bit}`` (what training writes), else the
    reference's released ``output/weights_{bit}``."""
    candidates = [f"output/model_best_{bit}", f"output/weights_{bit}"]
    for prefix in candidates:
        if os.path.isfile(prefix + ".pdparams"):
            return prefix
    raise UserError("no checkpoint given and none found at "
                    + " or ".join(c + ".pdparams" for c in candidates)
                    + ": pass --pretrained PATH (without .pdparams)")


def load_hashnet(bit, pretrained=None, arch="alexnet"):
    """An ``arch`` model in eval mode with a checkpoint's weights (default:
    ``default_checkpoint``); also returns the .pdparams path (caches
    fingerprint it)."""
    prefix = strip_params_suffix(pretrained or default_checkpoint(bit))
    model = build(arch, bit)
    load_weights(model, prefix, arch_of_state)
    model.eval()
    return model, prefix + ".pdparams"
