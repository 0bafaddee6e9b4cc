"""``--method plain_pairwise``: a method registered by the tests, to show that a
new method is one file plus one registration line and that the contract
tests (tests/contracts/) pick it up with no test list edited.

It is HashNet's pairwise cross-entropy without its weighting and without a
memory bank: the pairs of the batch with itself, every pair weighing 1,
u = tanh(z) (no continuation). conftest.py imports this module, which
registers it in the test process.
"""
import dataclasses

import paddle
import paddle.nn as nn

from utils import methods
from utils.base.flags import POSITIVE_FLOAT, option

NAME = "plain_pairwise"


@methods.register(NAME)
class PlainPairwise(methods.Method):
    recipes = ("reference",)

    @dataclasses.dataclass(frozen=True)
    class Settings:
        pair_alpha: float = option(0.1, "α of D = α·u·uᵀ over the batch's pairs", POSITIVE_FLOAT)

    def criterion(self, n_train):
        return PlainPairwiseLoss(self.settings.pair_alpha)


class PlainPairwiseLoss(nn.Layer):
    """mean over the B×B pairs of log(1 + e^D) − S·D, D = α·u·uᵀ, u = tanh(z)."""

    def __init__(self, alpha):
        super().__init__()
        self.alpha = alpha

    def forward(self, z, y, ind):                                     # z [B, bit], y [B, C]
        u = paddle.tanh(z)
        S = (paddle.matmul(y, y, transpose_y=True) > 0).astype(u.dtype)  # [B, B]
        D = self.alpha * paddle.matmul(u, u, transpose_y=True)           # [B, B]
        ell = paddle.log1p(paddle.exp(-paddle.abs(D))) + paddle.clip(D, min=0) - S * D
        return ell.mean()
