"""ResNet50 + the hash layer on its pooled 2048-d feature, as the authors'
PyTorch network.py ResNetFc does; registered as ``--arch resnet50``. The
backbone is paddle.vision's ResNet without its classifier, under
``backbone.*`` (paddle.vision's keys behind that prefix)."""
import paddle
from paddle.vision.models.resnet import BottleneckBlock, ResNet

from models.backbone import HashModel, hash_linear, smallest_input
from models.registry import register

FEATURE_DIM = 2048
# conv1 7/2 p3, max-pool 3/2 p1, then each stage's 3x3 convs (stride 2 in the
# first block of layer2-4); 1x1 convs never shrink the map
SPATIAL = [(7, 2, 3, False), (3, 2, 1, False)] + [(3, s, 1, False) for s in (1, 2, 2, 2)]


@register("resnet50")
class ResNet50Hash(HashModel):
    min_crop = smallest_input(SPATIAL)   # 1: every stride-2 layer pads, so any side passes
    label = "ResNet50"
    backbone_hint = "--backbone imagenet converts paddle.vision's resnet50"
    signature = "backbone.layer4.2.conv3.weight"

    def __init__(self, bit):
        super().__init__()
        self.bit = bit
        self.backbone = ResNet(BottleneckBlock, 50, num_classes=0, with_pool=True)
        self.hash = hash_linear(FEATURE_DIM, bit)

    @property
    def hash_layer(self):
        return self.hash

    def forward(self, x):                                                  # x: [N, 3, S, S]
        return self.hash(paddle.reshape(self.backbone(x), [-1, FEATURE_DIM]))  # z: [N, bit]
