"""VGG16 + the hash layer on fc7 (after its ReLU and dropout), as the authors'
PyTorch network.py VGGFc does; registered as ``--arch vgg16``. Keys are
paddle.vision's vgg16 ones (``features.*``, ``classifier.{0,3}``), so its
ImageNet weights load as they are, minus the 1000-way classifier.6."""
import paddle
import paddle.nn as nn
from paddle.vision.models.vgg import cfgs, make_layers

from models.backbone import HashModel, hash_linear, smallest_input
from models.registry import register

POOL5_DIM = 512 * 7 * 7
CONV, POOL = (3, 1, 1, False), (2, 2, 0, False)
SPATIAL = [layer for n in (2, 2, 3, 3, 3) for layer in [CONV] * n + [POOL]]


@register("vgg16")
class VGG16Hash(HashModel):
    min_crop = smallest_input(SPATIAL)   # 32: five 2x2 stride-2 max-pools
    label = "VGG16"
    backbone_hint = "--backbone imagenet converts paddle.vision's vgg16"
    signature = "classifier.3.weight"

    def __init__(self, bit):
        super().__init__()
        self.bit = bit
        self.features = make_layers(cfgs["D"], batch_norm=False)
        self.avgpool = nn.AdaptiveAvgPool2D((7, 7))
        # paddle.vision's classifier.0-5: fc6, ReLU, dropout, fc7, ReLU, dropout
        self.classifier = nn.Sequential(nn.Linear(POOL5_DIM, 4096), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5))
        self.hash = hash_linear(4096, bit)

    @property
    def hash_layer(self):
        return self.hash

    def forward(self, x):                                             # x: [N, 3, S, S]
        x = paddle.reshape(self.avgpool(self.features(x)), [-1, POOL5_DIM])
        return self.hash(self.classifier(x))                         # z: [N, bit]
