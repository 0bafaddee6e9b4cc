"""HashNet (Cao et al., ICCV 2017) as the reference recipe trains it
(``--method hashnet``, spec §2-3): a weighted pairwise loss against a memory
bank of the training set, on u = tanh(β·z) with β raised by continuation.

Every training image has a row in the bank: U [num_train, bit] holds its last
seen u = tanh(β·z), Y [num_train, C] its labels. A batch is compared with the
whole bank, so each step sees all N training images, not just B·B pairs.
"""
import dataclasses
import math

import paddle
import paddle.nn as nn

from utils.base.flags import AT_LEAST_1, POSITIVE_FLOAT, option
from utils.methods.registry import Method, register


def continuation_beta(epoch, step_continuation=20):
    """β(e) = sqrt(floor((e−1)/step) + 1): tanh(β·z) sharpens towards sign(z)
    as training goes on (HashNet's continuation), 1 → √2 → … every `step` epochs."""
    return math.sqrt((epoch - 1) // step_continuation + 1)


@register("hashnet")
class HashNet(Method):
    """The reference recipe's objective: ``HashNetLoss`` over the memory bank,
    β(e) by ``continuation_beta`` once per epoch, codes sign(z), the hash
    layer at 10x the learning rate (the authors' PyTorch train.py)."""
    recipes = ("reference",)
    uses_bank = True
    hash_lr = 10.0   # the hash layer is new while the backbone is pretrained

    @dataclasses.dataclass(frozen=True)
    class Settings:
        alpha: float = option(0.1, "the sigmoid's slope α of D = α·u·Uᵀ", POSITIVE_FLOAT)
        step_continuation: int = option(20, "raise β every N epochs", AT_LEAST_1)

    def criterion(self, n_train):
        return HashNetLoss(n_train, self.bit, self.num_class, self.settings.alpha)

    def period_parameters(self, epoch):
        return {"beta": continuation_beta(epoch, self.settings.step_continuation)}


class HashNetLoss(nn.Layer):
    """ℓ(u_i, U_j) = log(1 + e^{D_ij}) − S_ij·D_ij with D = α·u·Uᵀ, weighted so
    that similar and dissimilar pairs carry equal total weight (HashNet eq. 5).

    Rows of the bank that were never written yet (early in the first epoch)
    are zeros with zero labels: each is a dissimilar pair with D = 0, adding
    log 2 to the sum and no gradient of its own. They also count in n0, so
    they shrink the weight n/n0 of the real dissimilar pairs until the bank
    fills; that is the recipe (spec §2), kept as it is.

    An image that could not be read (``--skip-bad-images``) would stay such a
    row for ever, a permanent dissimilar pair of every query. Instead, from
    the step its read failed on (:meth:`exclude`), it is no pair at all: its
    column adds no term and counts in none of n, n1, n0, so the weights
    n/n1, n/n0 are those of a training set without it. Until that step it is
    an unwritten row like any other. ``keep`` [N] (1 kept, 0 excluded) is a
    buffer, saved and restored with the bank.
    """

    def __init__(self, num_train, bit, num_class, alpha=0.1):
        super().__init__()
        self.alpha = alpha
        self.beta = 1.0  # continuation scale, set once per epoch by the recipe
        # Buffers, so the bank is saved and restored with the training state.
        self.register_buffer("U", paddle.zeros([num_train, bit]))
        self.register_buffer("Y", paddle.zeros([num_train, num_class]))
        self.register_buffer("keep", paddle.ones([num_train]))
        self.excluding = False  # any keep == 0 (the recipe's path stays untouched without)

    def exclude(self, ind):
        """Take the bank rows of dataset indices ``ind`` out of every pair."""
        if len(ind):
            self.keep[paddle.to_tensor(ind, dtype="int64")] = 0.0
            self.excluding = True

    def set_state_dict(self, state_dict, *args, **kwargs):
        result = super().set_state_dict(state_dict, *args, **kwargs)
        self.excluding = bool((self.keep == 0).any())
        return result

    def forward(self, z, y, ind):
        """z [B, bit] hash-layer outputs, y [B, C] multi-hot labels, ind [B]
        dataset indices. Returns the scalar loss."""
        u = paddle.tanh(self.beta * z)                              # [B, bit]
        # The batch's own rows are the live u (gradient flows through them,
        # so u_i is pulled by u_j both as query and as bank entry); the rest
        # of the bank is constant, from earlier steps.
        U = paddle.scatter(self.U, ind, u, overwrite=True)          # [N, bit]
        Y = paddle.scatter(self.Y, ind, y, overwrite=True)          # [N, C]
        self.U.set_value(U.detach())
        self.Y.set_value(Y)
        S = (paddle.matmul(y, Y, transpose_y=True) > 0).astype(u.dtype)  # [B, N]
        D = self.alpha * paddle.matmul(u, U, transpose_y=True)           # [B, N]
        return weighted_pair_loss(D, S, self.keep if self.excluding else None)


def weighted_pair_loss(D, S, keep=None):
    """Σ w·ℓ / n with ℓ = log(1 + e^D) − S·D, computed stably as
    log(1 + e^{−|D|}) + max(D, 0) − S·D; similar pairs weighted n/n1,
    dissimilar n/n0. A class with no pairs just has no terms (no 0/0).
    ``keep`` [N]: 0 marks bank columns that are no pairs (None: all are)."""
    ell = paddle.log1p(paddle.exp(-paddle.abs(D))) + paddle.clip(D, min=0) - S * D
    if keep is None:
        n = float(S.numel())
    else:
        ell, S = ell * keep, S * keep                               # [B, N]
        n = D.shape[0] * keep.sum()
    n1 = S.sum()
    n0 = n - n1
    w_pos = n / paddle.clip(n1, min=1.0)
    w_neg = n / paddle.clip(n0, min=1.0)
    weights = S * w_pos + (1 - S) * w_neg
    return (weights * ell).sum() / n
