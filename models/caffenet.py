"""CaffeNet (BVLC ``bvlc_reference_caffenet``) + the hash layer, as the authors
trained HashNet: their caffe/models/train/coco/train_val.prototxt layer by
layer, registered as ``--arch caffenet``.

conv1 96 11/4 → ReLU → pool 3/2 → LRN → conv2 256 5 p2 g2 → ReLU → pool 3/2 →
LRN → conv3 384 3 p1 → conv4 384 3 p1 g2 → conv5 256 3 p1 g2 (each + ReLU) →
pool 3/2 → fc6 4096 → ReLU → dropout 0.5 → fc7 4096 → ReLU → dropout 0.5 →
hash layer (the prototxt's fc8_flickr). Pools round up, as Caffe's do. LRN is
Caffe's ACROSS_CHANNELS formula, x / (k + α/n · Σ x² over n zero-padded
channels)^β: Paddle's nn.LocalResponseNorm computes the same (α/n scaling,
padding counted; tests/models/test_backbones.py checks both against numpy) but needs
static spatial sizes, which an export for any image size does not have. The adaptive pool before fc6 is the
identity at the prototxt's 227 px and lets smaller crops through. Layer names
are Caffe's, so a .caffemodel maps name for name (models/caffe_convert.py).
The weights expect BGR 0–255 minus the ImageNet mean (``--input_pipeline caffe``).
"""
import paddle
import paddle.nn as nn

from models.backbone import HashModel, hash_linear, smallest_input
from models.registry import register

LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
POOL5_DIM = 256 * 6 * 6
POOL = (3, 2, 0, True)                   # (kernel, stride, pad, ceil) of Caffe's pools
SPATIAL = [(11, 4, 0, False), POOL, (5, 1, 2, False), POOL] + [(3, 1, 1, False)] * 3 + [POOL]


def gaussian(std, bias):
    """The prototxt's fillers: Gaussian weights, constant bias."""
    return dict(weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, std)),
                bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(bias)))


class CaffeLRN(nn.Layer):
    """Cross-channel LRN as Caffe computes it, for inputs of any size."""

    def __init__(self, size, alpha, beta, k):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):                                          # [N, C, H, W]
        squares = paddle.unsqueeze(x * x, 1)                       # [N, 1, C, H, W]
        mean = nn.functional.avg_pool3d(squares, (self.size, 1, 1), stride=1,
                                        padding=(self.size // 2, 0, 0), exclusive=False)
        return x / paddle.pow(self.k + self.alpha * paddle.squeeze(mean, 1), self.beta)


def caffe_pool():
    return nn.MaxPool2D(3, 2, ceil_mode=True)


@register("caffenet")
class CaffeNet(HashModel):
    min_crop = smallest_input(SPATIAL)   # 55
    default_crop = 227                   # the prototxt's crop_size
    label = "CaffeNet"
    backbone_hint = "--backbone imagenet converts BVLC's bvlc_reference_caffenet.caffemodel"
    signature = "conv1.weight"   # a key only this arch's checkpoints have

    def __init__(self, bit):
        super().__init__()
        self.bit = bit
        self.conv1 = nn.Conv2D(3, 96, 11, stride=4, **gaussian(0.01, 0.0))
        self.conv2 = nn.Conv2D(96, 256, 5, padding=2, groups=2, **gaussian(0.01, 1.0))
        self.conv3 = nn.Conv2D(256, 384, 3, padding=1, **gaussian(0.01, 0.0))
        self.conv4 = nn.Conv2D(384, 384, 3, padding=1, groups=2, **gaussian(0.01, 1.0))
        self.conv5 = nn.Conv2D(384, 256, 3, padding=1, groups=2, **gaussian(0.01, 1.0))
        self.pool1, self.pool2, self.pool5 = caffe_pool(), caffe_pool(), caffe_pool()
        self.norm1, self.norm2 = CaffeLRN(**LRN), CaffeLRN(**LRN)
        self.avgpool = nn.AdaptiveAvgPool2D((6, 6))
        self.fc6 = nn.Linear(POOL5_DIM, 4096, **gaussian(0.005, 1.0))
        self.fc7 = nn.Linear(4096, 4096, **gaussian(0.005, 1.0))
        self.drop6, self.drop7 = nn.Dropout(0.5), nn.Dropout(0.5)
        self.fc8_flickr = hash_linear(4096, bit)
        self.relu = nn.ReLU()

    @property
    def hash_layer(self):
        return self.fc8_flickr

    def features(self, x):                                   # x: [N, 3, 227, 227]
        x = self.norm1(self.pool1(self.relu(self.conv1(x))))  # [N, 96, 27, 27]
        x = self.norm2(self.pool2(self.relu(self.conv2(x))))  # [N, 256, 13, 13]
        x = self.relu(self.conv4(self.relu(self.conv3(x))))   # [N, 384, 13, 13]
        return self.pool5(self.relu(self.conv5(x)))           # [N, 256, 6, 6]

    def forward(self, x):
        x = paddle.reshape(self.avgpool(self.features(x)), [-1, POOL5_DIM])
        x = self.drop6(self.relu(self.fc6(x)))
        x = self.drop7(self.relu(self.fc7(x)))                # fc7, dropped out: [N, 4096]
        return self.fc8_flickr(x)                             # z: [N, bit]
