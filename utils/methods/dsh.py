"""DSH, Deep Supervised Hashing (Liu, Wang, Shan, Chen; CVPR 2016), following
the authors' Caffe release github.com/lhmRyan/deep-supervised-hashing-DSH at
commit 631901f (``src/caffe/layers/hashing_loss_layer.cpp``,
``CIFAR-10/finetune{,_solver}.prototxt``).

The network's output b = z itself (no tanh). Over the batch's pairs i < j,
with D = ‖b_i − b_j‖² and s = 1[labels shared]:

    Σ (s·D + (1 − s)·max(m − D, 0)) / (N(N−1))  +  α · Σ | |b| − 1 | / N

m ``--margin`` (2·K: the prototxts' 24 at 12 bits, 48 at 24), α
``--quantization_weight`` (its ``tradeoff``, 0.01). The layer writes its
gradient in its forward pass: the pairwise part is ±(b_i − b_j)/(N(N−1)),
half the derivative of the value it reports (the paper's loss has a ½), and
the regulariser's is α/N times +1 where b ≥ 1 or −1 ≤ b ≤ 0, else −1.
Both are reproduced as written.
"""
import dataclasses

import paddle
import paddle.nn as nn

from utils.base.flags import POSITIVE_FLOAT, option
from utils.methods.gradients import with_gradient_of
from utils.methods.registry import Method, quantization_weight, register


@register("dsh")
class DSH(Method):
    """finetune_solver.prototxt (a trained net, a new hash layer at lr × 10,
    the release's setting closest to an ImageNet-pretrained backbone):
    base_lr 1e-4 for a batch of 200 (-lr 3.2e-5 per 64), momentum 0.9,
    weight decay 0.004, lr × 0.6 every 4000 iterations, 30000 iterations;
    on its 50,000 CIFAR-10 training images 16 and 120 epochs."""
    label = "DSH"
    hash_lr = 10.0
    training = {"learning_rate": 3.2e-5, "optimizer": "sgd", "momentum": 0.9,
                "weight_decay": 0.004, "epoch": 120, "de_step": 16, "de_gamma": 0.6}

    @dataclasses.dataclass(frozen=True)
    class Settings:
        quantization_weight: float = quantization_weight()
        margin: float = option(None, "DSH's margin m of dissimilar pairs' squared distance "
                                     "(default 2 x --bit)", POSITIVE_FLOAT, kind=float)

    @classmethod
    def defaults(cls, bit, dataset):
        return {"quantization_weight": 0.01, "margin": 2.0 * bit}

    def criterion(self, n_train):
        return DSHLoss(self.settings.margin, self.settings.quantization_weight)


class DSHLoss(nn.Layer):
    """HashingLossLayer: its reported value, and its gradient."""

    def __init__(self, margin, quantization_weight):
        super().__init__()
        self.margin, self.quantization_weight = margin, quantization_weight

    def forward(self, z, y, ind):                                   # z [N, K], y [N, C]
        n = z.shape[0]
        s = (paddle.matmul(y, y, transpose_y=True) > 0).astype(z.dtype)   # [N, N]
        diff = z.unsqueeze(1) - z.unsqueeze(0)                            # [N, N, K]: b_i − b_j
        D = (diff * diff).sum(axis=2)                                     # [N, N]
        pair = s * D + (1 - s) * paddle.nn.functional.relu(self.margin - D)
        pairs = (paddle.triu(pair, diagonal=1)).sum() / (n * (n - 1))
        # the layer's regulariser gradient, its sign rule as written
        rule = ((z >= 1) | ((z <= 0) & (z >= -1))).astype(z.dtype) * 2 - 1
        reg = paddle.abs(paddle.abs(z) - 1).sum() / n
        lam = self.quantization_weight
        return with_gradient_of(pairs + lam * reg,
                                pairs / 2 + lam * (rule.detach() * z).sum() / n)
