"""HashNet as the authors trained it in Caffe (``--method hashnet_caffe``, the
``--recipe caffe`` default; spec §8): their ``PairwiseLoss`` layer on the
pairs of two streams, u = tanh(β·z) with β from their ScaleTanH layer.

Source: github.com/thuml/HashNet, ``caffe/``: models/train/<dataset>/
train_val.prototxt and src/caffe/layers/{pairwise_loss,scale_tanh}_layer.*.
"""
import dataclasses

import paddle
import paddle.nn as nn
from paddle.autograd import PyLayer

from utils.base import distributed as dist
from utils.base.flags import POSITIVE_FLOAT, option
from utils.methods.registry import Method, register

# train_val.prototxt "continuation" (ScaleTanH): β = (1 + γ·iter)^power every STEP
BETA_STEP, BETA_GAMMA, BETA_POWER = 200, 0.005, 0.5
# dataset -> class_num (the weight of similar pairs) of the authors' prototxts;
# other datasets take COCO's. The demo is COCO-like (multi-label, ~37% similar pairs).
CLASS_NUM = {"coco": 1.0, "nuswide_81_m": 5.0, "imagenet": 100.0}


def caffe_beta(iteration):
    """β of training forward ``iteration`` (from 0). ScaleTanH counts its
    Reshape calls: one in Layer::SetUp, one per Forward (layer.hpp lines 72,
    456), and sets β = (1 + 0.005·iter)^0.5 when iter % 200 == 0, so forward
    k sees iter = k + 2: β = 1 for k < 198, √2 from k = 198, √51 at 9999."""
    layer_iter = iteration + 2
    return (1 + BETA_GAMMA * (layer_iter // BETA_STEP * BETA_STEP)) ** BETA_POWER


@register("hashnet_caffe")
class HashNetCaffe(Method):
    """``TwoStreamLoss``, β(iteration) by ``caffe_beta``; the hash layer's
    learning rate is the Caffe recipe's (its prototxt's parameter groups)."""
    recipes = ("caffe",)

    @dataclasses.dataclass(frozen=True)
    class Settings:
        class_num: float = option(None, "weight of similar pairs (default: the dataset's "
                                        "prototxt: COCO 1, NUS-WIDE 5, ImageNet 100, else 1)",
                                  POSITIVE_FLOAT, kind=float)
        sigmoid_param: float = option(None, "α (default 10/bit, the prototxt's)",
                                      POSITIVE_FLOAT, kind=float)

    @classmethod
    def defaults(cls, bit, dataset):
        """The prototxts' defaults: class_num by dataset, α = 10/bit ("10 / the
        length of code")."""
        return {"class_num": CLASS_NUM.get(dataset, CLASS_NUM["coco"]), "sigmoid_param": 10.0 / bit}

    def criterion(self, n_train):
        return TwoStreamLoss(self.settings.sigmoid_param, self.settings.class_num)

    def period_parameters(self, iteration):
        return {"beta": caffe_beta(iteration)}


class TwoStreamLoss(nn.Layer):
    """u = tanh(β·z), then CaffePairwiseLoss(stream 1, stream 2) on the
    gathered batch. Gathered, it is W blocks [stream 1 (b rows); stream 2
    (b rows)] in rank order (utils/training/caffe.py StreamBatches); the
    streams are regrouped into [W·b] each."""

    def __init__(self, sigmoid_param, class_num):
        super().__init__()
        self.beta = 1.0  # set every iteration by the recipe (caffe_beta)
        self.pairwise = CaffePairwiseLoss(sigmoid_param, class_num=class_num)

    def forward(self, z, y, ind):                               # z [W·2b, bit], y [W·2b, C]
        u = paddle.tanh(self.beta * z)
        (u1, u2), (y1, y2) = split_streams(u), split_streams(y)  # [W·b, bit], [W·b, C]
        return self.pairwise(u1, y1, u2, y2)


def split_streams(x):
    """[W·2b, d] of W blocks [stream 1; stream 2] -> (stream 1, stream 2), [W·b, d] each."""
    blocks = x.reshape([dist.world_size(), 2, -1, x.shape[-1]])  # [W, 2, b, d]
    return tuple(blocks[:, s].reshape([-1, x.shape[-1]]) for s in (0, 1))


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
            D = 4 * continuous_weight(R, l1, l2) * D
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


def continuous_weight(R, l1, l2):
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
