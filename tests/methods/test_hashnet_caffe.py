"""utils/methods/hashnet_caffe.py: CaffePairwiseLoss, the authors' Caffe loss
(--recipe caffe, spec §8), against a float64 numpy transcription of the .cu
forward, its gradient against one of the .cu backward (continuous
similarity on/off, class_num, ignored pairs, the threshold branch, the α on
the first N flat elements only)."""
import numpy as np
import paddle
import pytest

from support.transcription import assert_relative
from support.weights import assert_same
from utils.methods.hashnet_caffe import CaffePairwiseLoss

# float32 Paddle kernels against a numpy reference: run again on other
# kernels by .ci/run
pytestmark = pytest.mark.float_sensitive


def caffe_similarity(l1, l2):
    """.cu SimilarityProcess: -1 ignored (R < 0 or R >= C), 1 similar, else R (0)."""
    R = l1 @ l2.T
    return R, np.where((R < 0) | (R >= l1.shape[1]), -1.0, np.where(R > 0, 1.0, R))


def caffe_forward(b1, l1, b2, l2, alpha, threshold=15.0, class_num=1.0):
    """PairwiseLossForwardGPU + Forward_gpu, float64."""
    _, sim = caffe_similarity(l1, l2)
    P = alpha * (b1 @ b2.T)
    with np.errstate(over="ignore"):
        exp_product = np.exp(P)
    similar = (sim > 0).astype(float)
    thresholded = (threshold >= 0) & (P >= threshold)
    with np.errstate(over="ignore", invalid="ignore"):
        loss = np.where(thresholded, P * (1 - similar), np.log(1 + exp_product) - similar * P)
    loss = np.where(sim >= 0, loss, 0.0) * np.where(sim > 0, class_num, 1.0)
    count = np.where(sim >= 0, 1.0, 0.0) * np.where(sim > 0, class_num, 1.0)
    total = count.sum()
    return loss.sum() / (total if total > 0 else 1.0)


def caffe_backward(b1, l1, b2, l2, alpha, class_num=1.0, continuous=True):
    """PairwiseLossBackwardGPU + Backward_gpu (and the continuous weight of
    Forward_gpu), float64: (grad of b1, grad of b2)."""
    R, sim = caffe_similarity(l1, l2)
    P = alpha * (b1 @ b2.T)
    with np.errstate(over="ignore", divide="ignore"):
        exp_product = np.exp(P)
        sigmoid = 1 / (1 + 1 / exp_product)
    diff = np.where(sim >= 0, 2 * (sigmoid - (sim > 0)), 0.0) * np.where(sim > 0, class_num, 1.0)
    count = np.where(sim >= 0, 1.0, 0.0) * np.where(sim > 0, class_num, 1.0)
    if continuous:
        own1, own2 = l1 @ l1.T, l2 @ l2.T
        own1[own1 == 0], own2[own2 == 0] = 1.0, 1.0  # RemoveZero
        W = R * R / (np.diag(own1)[:, None] * np.diag(own2)[None, :])
        W[W == 0] = 0.25
        diff = 4 * diff * W
    c = count.sum() if count.sum() > 0 else 1.0
    g1, g2 = diff @ b2 / c, diff.T @ b1 / c
    n = b1.shape[0]
    g1.reshape(-1)[:n] *= alpha  # caffe_gpu_scal(outer_num_, sigmoid_param_, bottom_diff)
    g2.reshape(-1)[:n] *= alpha
    return g1, g2


def pairs(seed=0, n=6, bit=4, num_class=3):
    """Codes and labels with similar, dissimilar and ignored pairs: row 0 of
    each stream has every label (R = C with the other's row 0: ignored), one
    row has none (zero norm), one of stream 2 has a -1 label (R < 0)."""
    rng = np.random.default_rng(seed)
    b1, b2 = (np.tanh(2 * rng.normal(size=(n, bit))) for _ in range(2))
    l1, l2 = ((rng.random((n, num_class)) < 0.4).astype(float) for _ in range(2))
    l1[0], l2[0] = 1.0, 1.0
    l1[1], l2[2] = 0.0, 0.0
    l2[3] = [-1.0, 0.0, 0.0]
    return b1, l1, b2, l2


def paddle_loss_and_grads(b1, l1, b2, l2, **kwargs):
    t = [paddle.to_tensor(a.astype("float32"), stop_gradient=(k % 2 == 1))
         for k, a in enumerate((b1, l1, b2, l2))]
    loss = CaffePairwiseLoss(**kwargs)(*t)
    loss.backward()
    assert loss.dtype == t[0].grad.dtype == t[2].grad.dtype == paddle.float32
    return float(loss), t[0].grad.numpy(), t[2].grad.numpy()


CASES = {  # name -> (CaffePairwiseLoss kwargs, whether P reaches the threshold)
    "coco": (dict(sigmoid_param=10 / 4), False),
    "class_num": (dict(sigmoid_param=10 / 4, class_num=5.0), False),
    "discrete": (dict(sigmoid_param=10 / 4, class_num=5.0, continuous_similarity=False), False),
    "threshold": (dict(sigmoid_param=8.0, l_threshold=2.0, class_num=2.0), True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_caffe_loss_and_gradient_match_the_cu_transcription(case):
    kwargs, thresholded = CASES[case]
    b1, l1, b2, l2 = pairs()
    alpha, class_num = kwargs["sigmoid_param"], kwargs.get("class_num", 1.0)
    threshold = kwargs.get("l_threshold", 15.0)
    R, sim = caffe_similarity(l1, l2)
    assert (sim == -1).any() and (R < 0).any() and (R >= l1.shape[1]).any()  # both ignore kinds
    assert ((alpha * b1 @ b2.T) >= threshold).any() == thresholded
    loss, g1, g2 = paddle_loss_and_grads(b1, l1, b2, l2, **kwargs)
    assert loss == pytest.approx(caffe_forward(b1, l1, b2, l2, alpha, threshold, class_num), rel=1e-6)
    r1, r2 = caffe_backward(b1, l1, b2, l2, alpha, class_num,
                            kwargs.get("continuous_similarity", True))
    assert_relative(g1, r1)
    assert_relative(g2, r2)


def test_only_the_first_n_flat_gradient_elements_get_alpha():
    """The quirk itself: with α the gradient's first N = 6 of 6x4 flat
    elements are α times the rest's rule, and the other 18 lack α."""
    b1, l1, b2, l2 = pairs()
    alpha = 10 / 4
    _, g1, g2 = paddle_loss_and_grads(b1, l1, b2, l2, sigmoid_param=alpha)
    plain1, plain2 = caffe_backward(b1, l1, b2, l2, alpha)
    plain1.reshape(-1)[:6] /= alpha
    plain2.reshape(-1)[:6] /= alpha
    for got, plain in ((g1, plain1), (g2, plain2)):
        np.testing.assert_allclose(got.reshape(-1)[:6], alpha * plain.reshape(-1)[:6], rtol=1e-5)
        np.testing.assert_allclose(got.reshape(-1)[6:], plain.reshape(-1)[6:], rtol=1e-5)
        assert not np.allclose(got, alpha * plain, rtol=1e-3)  # not the chain rule's α everywhere


def test_threshold_branch_changes_the_loss_not_the_gradient():
    """Above l_threshold the loss is P·(1−s) (0 for a similar pair), the
    gradient still 2·(σ(P) − s): a threshold and 'no threshold' (-1) give
    different losses and the same gradient. (At the prototxts' 15 the two
    losses differ by e^-15 only: there it is an overflow guard.)"""
    b1, l1, b2, l2 = pairs()
    with_threshold = paddle_loss_and_grads(b1, l1, b2, l2, sigmoid_param=8.0, l_threshold=2.0)
    without = paddle_loss_and_grads(b1, l1, b2, l2, sigmoid_param=8.0, l_threshold=-1.0)
    assert with_threshold[0] != pytest.approx(without[0], rel=1e-4)
    assert without[0] == pytest.approx(caffe_forward(b1, l1, b2, l2, 8.0, -1.0), rel=1e-6)
    # exact: the gradient's ops do not read the threshold (same kernels, same order)
    assert_same(with_threshold[1], without[1])
    assert_same(with_threshold[2], without[2])
