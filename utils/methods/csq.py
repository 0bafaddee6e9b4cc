"""CSQ, Central Similarity Quantization (Yuan et al., CVPR 2020), following
github.com/yuanli2333/Hadamard-Matrix-for-hashing at commit 55cab00
(``train.py``, ``options.py``, ``Tutorial_ hash_center_generation.ipynb``,
and its README's AlexNet commands).

Each class has a hash centre in {−1, +1}^K: the rows of the K×K Hadamard
matrix, then of its negation, while there are at most 2K classes and K is a
power of two; otherwise random centres (the tutorial's §2). An image's
centre is its class's; a multi-label image's is the sign of the mean of its
labels' centres, a zero mean bit taken from one random centre drawn once
(``Hash_center_multilables``). The loss on h = tanh(z):

    BCE((h + 1)/2, (c + 1)/2), mean over the B·K entries (torch's BCELoss:
    each log clamped at −100)  +  λ · mean((|h| − 1)²)

with λ ``--quantization_weight`` (``lambda2``: 1e-3 at 16 and 32 bits, 1e-4
at 64 in the AlexNet commands; 48 bits takes 1e-3) and the pairwise term
off (``--lambda1 0`` in every command).

Declared where this differs (docs/comparison.md): an image without labels
(NUS-WIDE has them) has the random centre as its centre (the release's mean
of no centres is NaN); the random centres come from ``--center_seed``; K = 48
is no power of two, so 48 bits always take random centres; the tutorial's
distance criterion for random centres (min ≥ 20, mean ≥ 32 at 64 bits) is
scaled by K/64 at other lengths.
"""
import dataclasses

import numpy as np
import paddle
import paddle.nn as nn

from utils.base.flags import SEED, option
from utils.methods.registry import Method, quantization_weight, register

CENTER_TRIES = 10000       # the tutorial's redraws of random centres
LOG_FLOOR = -100.0         # torch.nn.BCELoss clamps each log here


def hadamard(k):
    """The k×k Sylvester Hadamard matrix (k a power of two), rows ±1."""
    H = np.ones((1, 1), dtype=np.int64)
    while H.shape[0] < k:
        H = np.block([[H, H], [H, -H]])
    return H


def random_centers(num_class, bit, rng, tries=CENTER_TRIES):
    """Rows of bit/2 entries −1 and the rest +1 at random positions, redrawn
    until every two rows are ≥ 20·bit/64 apart and on average ≥ bit/2, at
    most ``tries`` times (then the last draw, as the tutorial's loop ends)."""
    for _ in range(tries):
        minus = np.argsort(rng.random((num_class, bit)), axis=1)[:, :round(bit / 2)]
        centers = np.ones((num_class, bit), dtype=np.int64)
        np.put_along_axis(centers, minus, -1, axis=1)
        distance = (bit - centers @ centers.T)[np.triu_indices(num_class, 1)] / 2
        if len(distance) == 0 or (distance.min() >= 20 * bit / 64 and distance.mean() >= bit / 2):
            break
    return centers


def hash_centers(num_class, bit, rng):
    """[num_class, bit] ±1 centres: Hadamard rows (then their negations)
    when that gives enough, else ``random_centers``."""
    if bit & (bit - 1) == 0 and num_class <= 2 * bit:
        H = hadamard(bit)
        return np.concatenate([H, -H])[:num_class]
    return random_centers(num_class, bit, rng)


@register("csq")
class CSQ(Method):
    """train.py with the README's AlexNet commands: Adam (β 0.9, 0.999, no
    weight decay: -op adamw -wd 0), lr 1e-4 for the hash layer and
    ``multi_lr`` 0.01 × that for the pretrained layers (-lr 1e-6, hash
    layer × 100), lr × 0.7 every 10 epochs, 90 epochs, batch 64."""
    label = "CSQ"
    hash_lr = 100.0
    training = {"learning_rate": 1e-6, "optimizer": "adamw", "weight_decay": 0.0, "epoch": 90,
                "de_step": 10, "de_gamma": 0.7}

    @dataclasses.dataclass(frozen=True)
    class Settings:
        quantization_weight: float = quantization_weight()
        center_seed: int = option(0, "seed of CSQ's random hash centres and of its tie-break "
                                     "centre", SEED)

    @classmethod
    def defaults(cls, bit, dataset):
        return {"quantization_weight": 1e-4 if bit >= 64 else 1e-3}

    def criterion(self, n_train):
        rng = np.random.default_rng(self.settings.center_seed)
        centers = hash_centers(self.num_class, self.bit, rng)
        tie_center = np.where(rng.integers(0, 2, self.bit) == 0, -1, 1)
        return CSQLoss(centers, tie_center, self.settings.quantization_weight)


class CSQLoss(nn.Layer):
    """BCE of each image's code to its centre plus λ·quantization; the
    centres are buffers (saved with the run, so a resumed run keeps them)."""

    def __init__(self, centers, tie_center, quantization_weight):
        super().__init__()
        self.register_buffer("centers", paddle.to_tensor(np.asarray(centers, dtype="float32")))
        self.register_buffer("tie_center", paddle.to_tensor(np.asarray(tie_center, dtype="float32")))
        self.quantization_weight = quantization_weight

    def image_centers(self, y):
        """[B, K] ±1: the sign of the sum (so of the mean) of each image's
        label centres; a zero takes the tie centre's bit."""
        total = paddle.matmul(y, self.centers)                       # [B, K]
        tie = paddle.expand_as(self.tie_center.unsqueeze(0), total)
        return paddle.where(total == 0, tie, paddle.sign(total))

    def forward(self, z, y, ind):                                    # z [B, K], y [B, C]
        h = paddle.tanh(z)
        target = (self.image_centers(y) + 1) / 2                     # {0, 1}
        p = (h + 1) / 2
        bce = -(target * paddle.clip(paddle.log(p), min=LOG_FLOOR)
                + (1 - target) * paddle.clip(paddle.log(1 - p), min=LOG_FLOOR))
        quantization = ((paddle.abs(h) - 1) ** 2).mean()
        return bce.mean() + self.quantization_weight * quantization
