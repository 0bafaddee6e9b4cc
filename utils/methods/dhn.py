"""DHN, Deep Hashing Network (Zhu, Long, Wang, Cao; AAAI 2016), as the
authors' group released it in Caffe: github.com/thuml/hash-caffe at commit
b0b677b (``src/caffe/layers/{pairwise,quantization}_loss_layer.cu``,
``models/DHN/nus_wide/{train_val,solver}.prototxt``).

h = tanh(z) (the prototxt's TanH on the hash layer), then on the batch's
N×N pairs (i = j included, one stream):

* pairwise: P = h·hᵀ (no α), s = 1[labels shared]; ℓ = P·(1−s) where
  P ≥ 15 (the prototxt's threshold), else log(1+e^P) − s·P; mean over the
  N² pairs, every pair weighing 1. The layer's backward is 2·(σ(P) − s)·h
  / N², the derivative of the log(1+e^P) − s·P branch everywhere (also
  past the threshold);
* quantization: λ · mean over the N·K entries of log cosh(|h| − 1), λ 0.2
  (its ``loss_weight``). The layer's backward divides by N, not N·K
  (``loss_weight_ / outer_num_``): its gradient is K times the derivative
  of the value it reports. Followed here, and declared in
  docs/comparison.md. (Its threshold branch, |h| − 1 > 15, cannot fire for
  |h| ≤ 1.)
"""
import paddle
import paddle.nn as nn

from utils.methods.gradients import with_gradient_of
from utils.methods.registry import Method, QuantizationSettings, register

PAIR_THRESHOLD = 15.0   # train_val.prototxt pairwise_param threshold


@register("dhn")
class DHN(Method):
    """solver.prototxt: base_lr 2e-5 for a batch of 64, halved every 500
    iterations, 3000 iterations, momentum 0.9, weight decay 5e-4; the hash
    layer at lr × 10 (its biases × 20 in Caffe). On the authors' 10,500
    training images 500 iterations of 64 are 3.05 epochs and 3000 are 18.3:
    --de_step 3, -e 18."""
    label = "DHN"
    hash_lr = 10.0
    training = {"learning_rate": 2e-5, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4,
                "epoch": 18, "de_step": 3, "de_gamma": 0.5}

    Settings = QuantizationSettings

    @classmethod
    def defaults(cls, bit, dataset):
        return {"quantization_weight": 0.2}

    def criterion(self, n_train):
        return DHNLoss(self.settings.quantization_weight)


class DHNLoss(nn.Layer):
    """The pairwise and quantization layers on h = tanh(z), as the release
    computes them (forward) and trains them (backward)."""

    def __init__(self, quantization_weight):
        super().__init__()
        self.quantization_weight = quantization_weight

    def forward(self, z, y, ind):                                   # z [N, K], y [N, C]
        h = paddle.tanh(z)
        s = (paddle.matmul(y, y, transpose_y=True) > 0).astype(h.dtype)   # [N, N]
        P = paddle.matmul(h, h, transpose_y=True)                          # [N, N]
        smooth = paddle.log1p(paddle.exp(-paddle.abs(P))) + paddle.clip(P, min=0) - s * P
        reported = paddle.where(P >= PAIR_THRESHOLD, P * (1 - s), smooth)
        quantization = paddle.log(paddle.cosh(paddle.abs(h) - 1)).mean()  # / (N·K)
        lam, K = self.quantization_weight, h.shape[1]
        return with_gradient_of(reported.mean() + lam * quantization,
                                smooth.mean() + lam * K * quantization)
