"""AlexNet in the torchvision layout, so ImageNet weights map key for key, and
the reference's HashNet network on it, registered as ``--arch alexnet``.

Keys (``features.{0,3,6,8,10}``, ``classifier.{1,4,6}``) follow torchvision's
``alexnet``; Paddle's Linear weights are [in, out], the transpose of torch's.
The hash network keeps the reference's keys: fc6/fc7 are
``classifier_plus.{1,4}`` and the hash layer ``classifier_plus.6``, so the
reference's released weights load unchanged.
"""
import math

import paddle
import paddle.nn as nn

from models.backbone import HashModel, hash_linear
from models.registry import register

FEATURE_DIM = 256 * 6 * 6  # 9216, the flattened pool5 output fc6 reads


def uniform_fan_in(fan_in):
    """Uniform(±1/sqrt(fan_in)) initialiser: the recipe's random init."""
    bound = 1.0 / math.sqrt(fan_in)
    return paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound))


def conv(c_in, c_out, kernel, stride=1, padding=0):
    fan_in = c_in * kernel * kernel
    return nn.Conv2D(c_in, c_out, kernel, stride=stride, padding=padding,
                     weight_attr=uniform_fan_in(fan_in), bias_attr=uniform_fan_in(fan_in))


def linear(d_in, d_out):
    return nn.Linear(d_in, d_out, weight_attr=uniform_fan_in(d_in), bias_attr=uniform_fan_in(d_in))


def alexnet_features():
    """conv1..conv5 with torchvision's indices 0, 3, 6, 8, 10."""
    return nn.Sequential(
        conv(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2D(3, 2),   # 0-2
        conv(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2D(3, 2),            # 3-5
        conv(192, 384, 3, padding=1), nn.ReLU(),                               # 6-7
        conv(384, 256, 3, padding=1), nn.ReLU(),                               # 8-9
        conv(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2D(3, 2),           # 10-12
    )


def disable_dropout(model):
    """Set every Dropout of ``model`` to p = 0 and return it: the runs that
    compare updates across processes or devices need the same function on
    both sides, and a few-epoch warm-up only loses signal to dropout."""
    for layer in model.sublayers():
        if isinstance(layer, nn.Dropout):
            layer.p = 0.0
    return model


def fc67():
    """Dropout, fc6, ReLU, Dropout, fc7, ReLU: indices 0-5 of both heads."""
    return [nn.Dropout(0.5), linear(FEATURE_DIM, 4096), nn.ReLU(),
            nn.Dropout(0.5), linear(4096, 4096), nn.ReLU()]


class AlexNet(nn.Layer):
    """Plain AlexNet classifier; used to pretrain the demo backbone and to
    check converted ImageNet weights. The adaptive pool lets crops smaller
    than 224 px through (at 224 px it is the identity)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = alexnet_features()
        self.avgpool = nn.AdaptiveAvgPool2D((6, 6))
        self.classifier = nn.Sequential(*fc67(), linear(4096, num_classes))

    def forward(self, x):                    # x: [N, 3, S, S]
        x = self.avgpool(self.features(x))   # [N, 256, 6, 6]
        return self.classifier(paddle.flatten(x, 1))  # [N, num_classes]


BACKBONE_HELP = (
    "pass --backbone imagenet to download them, or get ImageNet AlexNet weights as "
    "torchvision's alexnet-owt-*.pth or paddle.vision's alexnet .pdparams and convert them with "
    "`python -m scripts.convert_alexnet SRC models/AlexNet_pretrained.pdparams`, "
    "or pass --backbone random for random init")


@register("alexnet")
class AlexNetHash(HashModel):
    """AlexNet (paddle.vision's layout: dropout before fc6 and fc7, none
    before the hash layer) + the hash layer, in the reference's keys."""
    min_crop = 63        # three stride-2 max-pools after a stride-4 conv need 63 px
    label = "AlexNet"
    signature = "classifier_plus.6.weight"   # the reference's hash layer
    backbone_hint = BACKBONE_HELP
    weights_arch = "alexnet"   # also for the tests' variants registered under other names

    def __init__(self, bit):
        super().__init__()
        self.bit = bit
        self.features = alexnet_features()
        self.avgpool = nn.AdaptiveAvgPool2D((6, 6))
        self.classifier_plus = nn.Sequential(*fc67(), hash_linear(4096, bit))

    @property
    def hash_layer(self):
        return self.classifier_plus[6]

    def backbone_keys(self, state):
        """An AlexNet file (torchvision keys, Paddle shapes) in this model's
        keys: features.* unchanged, classifier.{1,4} -> classifier_plus.{1,4};
        the ImageNet classifier (classifier.6) has no counterpart and goes."""
        mapped = {}
        for key, value in state.items():
            if key.startswith("features."):
                mapped[key] = value
            elif key.split(".")[:2] in (["classifier", "1"], ["classifier", "4"]):
                mapped["classifier_plus" + key[len("classifier"):]] = value
        return mapped

    def forward(self, x):                           # x: [N, 3, S, S]
        x = self.avgpool(self.features(x))          # [N, 256, 6, 6]
        x = paddle.reshape(x, [-1, FEATURE_DIM])    # [N, 9216]
        return self.classifier_plus(x)              # z: [N, bit]
