"""HashNet (Cao et al., ICCV 2017) as the reference recipe trains it
(``--method hashnet``, spec §2-3): a weighted pairwise loss against a memory
bank of the training set, on u = tanh(β·z) with β raised by continuation.

Every training image has a row in the bank (utils/methods/bank.py): U
[num_train, bit] holds its last seen u = tanh(β·z), Y [num_train, C] its
labels. A batch is compared with the whole bank, so each step sees all N
training images, not just B·B pairs.
"""
import dataclasses
import math

import paddle

from utils.base.flags import AT_LEAST_1, POSITIVE_FLOAT, option
from utils.methods.bank import MemoryBank
from utils.methods.gradients import with_gradient_of
from utils.methods.hashnet_caffe import continuous_weight
from utils.methods.registry import Method, register


def continuation_beta(epoch, step_continuation=20):
    """β(e) = sqrt(floor((e−1)/step) + 1): tanh(β·z) sharpens towards sign(z)
    as training goes on (HashNet's continuation), 1 → √2 → … every `step` epochs."""
    return math.sqrt((epoch - 1) // step_continuation + 1)


@dataclasses.dataclass(frozen=True)
class PairSettings:
    alpha: float = option(0.1, "the sigmoid's slope α of D = α·u·Uᵀ", POSITIVE_FLOAT)


@dataclasses.dataclass(frozen=True)
class ContinuationSettings(PairSettings):
    step_continuation: int = option(20, "raise β every N epochs", AT_LEAST_1)


@register("hashnet")
class HashNet(Method):
    """The reference recipe's objective: ``HashNetLoss`` over the memory bank,
    β(e) by ``continuation_beta`` once per epoch, codes sign(z), the hash
    layer at 10x the learning rate (the authors' PyTorch train.py).

    The paper's ablations (utils/methods/hashnet_ablations.py) turn off one
    part each: ``weighted`` (the n/n1, n/n0 pair weights), ``continuation``
    (β raised by epoch), or turn on the authors' ``continuous_similarity``."""
    label = "HashNet"
    recipes = ("reference",)
    uses_bank = True
    hash_lr = 10.0   # the hash layer is new while the backbone is pretrained
    weighted, continuation, continuous_similarity = True, True, False
    Settings = ContinuationSettings

    def criterion(self, n_train):
        return HashNetLoss(n_train, self.bit, self.num_class, self.settings.alpha,
                           weighted=self.weighted, continuous=self.continuous_similarity)

    def period_parameters(self, epoch):
        if not self.continuation:
            return {"beta": 1.0}
        return {"beta": continuation_beta(epoch, self.settings.step_continuation)}


class HashNetLoss(MemoryBank):
    """ℓ(u_i, U_j) = log(1 + e^{D_ij}) − S_ij·D_ij with D = α·u·Uᵀ, weighted so
    that similar and dissimilar pairs carry equal total weight (HashNet eq. 5).

    Rows of the bank that were never written yet (early in the first epoch)
    are zeros with zero labels: each is a dissimilar pair with D = 0, adding
    log 2 to the sum and no gradient of its own. They also count in n0, so
    they shrink the weight n/n0 of the real dissimilar pairs until the bank
    fills; that is the recipe (spec §2), kept as it is.

    An image that could not be read (``--skip-bad-images``) would stay such a
    row for ever, a permanent dissimilar pair of every query. Instead, from
    the step its read failed on (``exclude``), it is no pair at all: its
    column adds no term and counts in none of n, n1, n0, so the weights
    n/n1, n/n0 are those of a training set without it. Until that step it is
    an unwritten row like any other.

    ``weighted=False``: every pair weighs 1 (the paper's HashNet-W).
    ``continuous=True``: the authors' ``continous_similarity`` (their Caffe
    pairwise_loss_layer.cu): each pair's gradient × 4·W_ij, W the squared
    cosine of the two label vectors (0 → 0.25, so a dissimilar pair keeps
    its gradient); the reported loss is unchanged, as the layer reports it.
    """

    def __init__(self, num_train, bit, num_class, alpha=0.1, weighted=True, continuous=False):
        super().__init__(num_train, bit, num_class)
        self.alpha = alpha
        self.beta = 1.0  # continuation scale, set once per epoch by the recipe
        self.weighted, self.continuous = weighted, continuous

    def forward(self, z, y, ind):
        """z [B, bit] hash-layer outputs, y [B, C] multi-hot labels, ind [B]
        dataset indices. Returns the scalar loss."""
        u = paddle.tanh(self.beta * z)                              # [B, bit]
        # The batch's own rows are the live u (gradient flows through them,
        # so u_i is pulled by u_j both as query and as bank entry); the rest
        # of the bank is constant, from earlier steps.
        U, Y = self.write(u, y, ind)                                # [N, bit], [N, C]
        R = paddle.matmul(y, Y, transpose_y=True)                   # [B, N] shared labels
        S = (R > 0).astype(u.dtype)
        D = self.alpha * paddle.matmul(u, U, transpose_y=True)      # [B, N]
        loss = weighted_pair_loss(D, S, self.kept(), self.weighted)
        if not self.continuous:
            return loss
        scale = 4 * continuous_weight(R, y, Y)                      # [B, N]
        return with_gradient_of(loss, weighted_pair_loss(D, S, self.kept(), self.weighted, scale))


def weighted_pair_loss(D, S, keep=None, weighted=True, scale=None):
    """Σ w·ℓ / n with ℓ = log(1 + e^D) − S·D, computed stably as
    log(1 + e^{−|D|}) + max(D, 0) − S·D; similar pairs weighted n/n1,
    dissimilar n/n0 (``weighted=False``: every pair 1). A class with no
    pairs just has no terms (no 0/0). ``keep`` [N]: 0 marks bank columns
    that are no pairs (None: all are). ``scale`` [B, N]: each pair's ℓ
    times this (the continuous similarity's factor)."""
    ell = paddle.log1p(paddle.exp(-paddle.abs(D))) + paddle.clip(D, min=0) - S * D
    if scale is not None:
        ell = ell * scale
    if keep is None:
        n = float(S.numel())
    else:
        ell, S = ell * keep, S * keep                               # [B, N]
        n = D.shape[0] * keep.sum()
    if not weighted:
        return ell.sum() / n
    n1 = S.sum()
    n0 = n - n1
    w_pos = n / paddle.clip(n1, min=1.0)
    w_neg = n / paddle.clip(n0, min=1.0)
    weights = S * w_pos + (1 - S) * w_neg
    return (weights * ell).sum() / n
