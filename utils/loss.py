"""HashNet's weighted pairwise loss against a memory bank of the training set.

Every training image has a row in the bank: U [num_train, bit] holds its last
seen u = tanh(β·z), Y [num_train, C] its labels. A batch is compared with the
whole bank, so each step sees all N training images, not just B·B pairs.

``CaffePairwiseLoss`` is the other recipe's loss (``--recipe caffe``): the
authors' Caffe layer, two streams of a batch each, no bank.
"""
import paddle
import paddle.nn as nn
from paddle.autograd import PyLayer


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
        self.beta = 1.0  # continuation scale, set once per epoch by the engine
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


class CaffePairwiseLoss(nn.Layer):
    """The authors' Caffe ``PairwiseLoss`` layer (github.com/thuml/HashNet,
    caffe/src/caffe/layers/pairwise_loss_layer.cu), forward AND backward as
    written there, quirks included: the training signal behind the paper's
    table, not a cleaned-up version of it.

    forward(b1, l1, b2, l2): b1 [N, bit], b2 [M, bit] are codes u = tanh(β·z)
    of the two streams, l1 [N, C], l2 [M, C] their multi-hot labels; every
    pair (i in stream 1, j in stream 2) counts, i = j included.

    * R = L1·L2ᵀ; s = 1[R > 0]; a pair with R < 0 or R ≥ C is ignored (.cu
      SimilarityProcess; with 0/1 labels only "all C labels shared" is);
    * P = α·B1·B2ᵀ, α = ``sigmoid_param`` (10/bit in the prototxts);
    * ℓ = P·(1−s) where P ≥ ``l_threshold`` (≥ 0), else log(1+e^P) − s·P;
      similar pairs' ℓ (and count) × ``class_num``;
    * loss = Σℓ / c, c = class_num·#similar + #dissimilar (1 if 0).

    The backward is the layer's hand-written one, which is NOT the
    derivative of that forward (see ``_CaffePairwise.backward``): that is
    the signal the authors trained with, so it is reproduced exactly.
    Caffe ignores the loss weight coming from above; here it multiplies the
    gradient (1 in training, so nothing changes), so that the layer composes
    like any other. float32 in, float32 out.
    """

    def __init__(self, sigmoid_param, l_threshold=15.0, class_num=1.0, continuous_similarity=True):
        super().__init__()
        self.sigmoid_param = float(sigmoid_param)          # α
        self.l_threshold = float(l_threshold)
        self.class_num = float(class_num)
        self.continuous_similarity = bool(continuous_similarity)

    def forward(self, b1, l1, b2, l2):
        return _CaffePairwise.apply(b1, l1, b2, l2, self)


class _CaffePairwise(PyLayer):

    @staticmethod
    def forward(ctx, b1, l1, b2, l2, layer):
        R = paddle.matmul(l1, l2, transpose_y=True)                       # [N, M]
        valid = ((R >= 0) & (R < l1.shape[1])).astype(b1.dtype)          # not ignored
        s = (R > 0).astype(b1.dtype) * valid                              # similar
        P = layer.sigmoid_param * paddle.matmul(b1, b2, transpose_y=True)  # [N, M]
        # Both branches are evaluated; the one not taken may overflow to inf,
        # harmlessly (where() drops it and the backward is hand-written).
        ell = paddle.log1p(paddle.exp(P)) - s * P
        if layer.l_threshold >= 0:
            ell = paddle.where(P >= layer.l_threshold, P * (1 - s), ell)
        weight = valid * (1 + (layer.class_num - 1) * s)                  # class_num on similar
        c = weight.sum()
        c = paddle.where(c > 0, c, paddle.ones_like(c))                  # Σ weight, 1 if 0
        D = 2 * (paddle.nn.functional.sigmoid(P) - s) * weight            # [N, M]
        if layer.continuous_similarity:
            D = 4 * _continuous_weight(R, l1, l2) * D
        ctx.save_for_backward(b1, b2, D, c)
        ctx.alpha = layer.sigmoid_param
        return (ell * weight).sum() / c

    @staticmethod
    def backward(ctx, grad):
        """G1 = D·B2 / c, G2 = Dᵀ·B1 / c, D = 2·(σ(P) − s)·(class_num if s
        else 1) (× 4W with continuous similarity), with the threshold branch
        ignored; then α on the first N FLAT elements of G1 and of G2 only
        (the .cu's caffe_gpu_scal(outer_num_, sigmoid_param_, …) scales N
        floats, not N·bit): most rows never get the chain rule's α."""
        b1, b2, D, c = ctx.saved_tensor()
        n = b1.shape[0]
        g1 = paddle.matmul(D, b2) * (grad / c)                            # [N, bit]
        g2 = paddle.matmul(D, b1, transpose_x=True) * (grad / c)          # [M, bit]
        return _scale_first(g1, n, ctx.alpha), None, _scale_first(g2, n, ctx.alpha), None


def _continuous_weight(R, l1, l2):
    """W_ij = R_ij² / (‖l1_i‖²·‖l2_j‖²), a zero norm taken as 1 and W = 0
    replaced by 0.25 (.cu RemoveZero, ContinousSimilarityProcess)."""
    n1 = (l1 * l1).sum(axis=1, keepdim=True)                              # [N, 1]
    n2 = (l2 * l2).sum(axis=1, keepdim=True)                              # [M, 1]
    n1 = paddle.where(n1 == 0, paddle.ones_like(n1), n1)
    n2 = paddle.where(n2 == 0, paddle.ones_like(n2), n2)
    W = R * R / (n1 * n2.T)                                               # [N, M]
    return paddle.where(W == 0, paddle.full_like(W, 0.25), W)


def _scale_first(g, n, alpha):
    """g with its first n row-major elements multiplied by alpha."""
    flat = g.flatten()
    n = min(n, flat.shape[0])
    return paddle.concat([flat[:n] * alpha, flat[n:]]).reshape(g.shape)
