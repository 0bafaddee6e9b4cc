"""DPSH, Deep Pairwise-Supervised Hashing (Li, Wang, Kang; IJCAI 2016). The
authors' release is MatConvNet; this follows the most-used PyTorch port,
github.com/jiangqy/DPSH-pytorch at commit 0423181 (``DPSH_CIFAR_10.py``, by
a member of the authors' group), whose loss is that of the paper.

The network's output u = z itself (no tanh). Every training image has a row
in a memory bank (utils/methods/bank.py) holding its last output; the
batch's rows are written *detached* before the loss (``U[ind, :] =
train_outputs.data``), so the bank carries no gradient. With θ = u·Uᵀ / 2
and S = 1[labels shared] against the bank's labels:

    −Σ (S·θ − log(1 + e^θ)) / (N·B)  +  η · Σ (sign(u) − u)² / (N·B)

N the training-set size, B the batch; η ``--quantization_weight`` (10,
``DPSH_CIFAR_10_demo.py``). A bank row not written yet is zero: θ = 0, a
constant log 2 with no gradient, whatever its label, so a bank of labels
filled as images are seen trains as the port's labels known up front do.
"""
import paddle

from utils.methods.bank import MemoryBank
from utils.methods.registry import Method, QuantizationSettings, register


@register("dpsh")
class DPSH(Method):
    """The port's optimiser: plain SGD (no momentum), lr 0.05 for its batch
    of 128 (-lr 0.025 per 64), weight decay 1e-5, every layer at one lr,
    lr × 0.1 every 50 epochs, 150 epochs."""
    label = "DPSH"
    uses_bank = True
    training = {"learning_rate": 0.025, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 1e-5,
                "epoch": 150, "de_step": 50, "de_gamma": 0.1}

    Settings = QuantizationSettings

    @classmethod
    def defaults(cls, bit, dataset):
        return {"quantization_weight": 10.0}

    def criterion(self, n_train):
        return DPSHLoss(n_train, self.bit, self.num_class, self.settings.quantization_weight)


class DPSHLoss(MemoryBank):
    """The pairwise likelihood of the batch against the whole (detached)
    bank, and the quantization term, both over N·B."""

    def __init__(self, num_train, bit, num_class, quantization_weight):
        super().__init__(num_train, bit, num_class)
        self.num_train = num_train
        self.quantization_weight = quantization_weight

    def forward(self, z, y, ind):                                   # z [B, K], y [B, C]
        U, Y = self.write(z.detach(), y, ind)                       # [N, K], [N, C]
        S = (paddle.matmul(y, Y, transpose_y=True) > 0).astype(z.dtype)   # [B, N]
        theta = paddle.matmul(z, U, transpose_y=True) / 2                 # [B, N]
        softplus = paddle.log1p(paddle.exp(-paddle.abs(theta))) + paddle.clip(theta, min=0)
        likelihood = S * theta - softplus
        if self.kept() is not None:
            likelihood = likelihood * self.kept()
        pairs = self.num_train * z.shape[0]
        quantization = ((paddle.sign(z) - z) ** 2).sum()
        return (-likelihood.sum() + self.quantization_weight * quantization) / pairs
