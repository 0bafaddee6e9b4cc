"""utils/methods/dsh.py against a float64 numpy transcription of the
release's HashingLossLayer::Forward_cpu (lhmRyan/deep-supervised-hashing-DSH,
hashing_loss_layer.cpp), which computes the loss and writes the gradient in
one loop over the pairs i < j."""
import numpy as np
import pytest

from support.transcription import assert_relative, loss_and_grad, random_inputs
from utils.methods.dsh import DSHLoss

TRADEOFF = 0.01


def forward_cpu(b, labels, margin, tradeoff=TRADEOFF, loss_weight=1.0):
    """(loss, bottom diff), the layer's loop as written (label_num > 1:
    similar when the label vectors' dot product is > 0)."""
    num, channels = b.shape
    alpha = loss_weight / (num * (num - 1))
    beta = loss_weight / num
    bout = np.zeros_like(b)
    loss = reg = 0.0
    for i in range(num):
        for j in range(i + 1, num):
            diff = b[i] - b[j]
            dist_sq = diff @ diff
            if labels[i] @ labels[j] > 0:
                loss += dist_sq
                bout[i] += alpha * diff
                bout[j] -= alpha * diff
            else:
                loss += max(margin - dist_sq, 0.0)
                if margin - dist_sq > 0:
                    bout[i] -= alpha * diff
                    bout[j] += alpha * diff
        for k in range(channels):
            data = b[i, k]
            bout[i, k] += beta * tradeoff * (1.0 if data >= 1 or (-1 <= data <= 0) else -1.0)
            reg += abs(abs(data) - 1)
    return loss / (num * (num - 1)) + tradeoff * reg / num, bout


@pytest.mark.parametrize("seed, bit, scale", [(0, 12, 1.0), (1, 16, 1.5), (2, 24, 0.7)])
def test_loss_and_gradient_match_the_cpp_transcription(seed, bit, scale):
    """Margin 2·bit as the prototxts set it; similar pairs, dissimilar pairs
    inside and outside the margin, values on both sides of ±1."""
    z, y = random_inputs(seed, rows=8, bit=bit, scale=scale)
    margin = 2.0 * bit
    loss, grad = loss_and_grad(DSHLoss(margin, TRADEOFF), z, y)
    want_loss, want_grad = forward_cpu(z, y, margin)
    assert_relative(loss, want_loss)
    assert_relative(grad, want_grad)


def test_both_sides_of_the_margin_are_covered():
    """The first case above has dissimilar pairs inside and outside m = 24."""
    z, y = random_inputs(0, rows=8, bit=12)
    d = ((z[:, None] - z[None]) ** 2).sum(axis=2)[np.triu_indices(8, 1)]
    dissimilar = (y @ y.T)[np.triu_indices(8, 1)] == 0
    assert (d[dissimilar] < 24).any() and (d[dissimilar] > 24).any()
    assert (np.abs(z) > 1).any() and (np.abs(z) < 1).any()


def test_pairwise_gradient_is_half_its_derivative():
    """The layer's pairwise gradient is ±(b_i − b_j)/(N(N−1)), half the
    derivative of the value it reports (the paper's ½·D²)."""
    z, y = random_inputs(5, rows=6, bit=8)
    _, grad = loss_and_grad(DSHLoss(16.0, 0.0), z, y)
    eps = 1e-6
    numeric = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        hi, lo = z.copy(), z.copy()
        hi[idx] += eps
        lo[idx] -= eps
        numeric[idx] = (forward_cpu(hi, y, 16.0, 0.0)[0] - forward_cpu(lo, y, 16.0, 0.0)[0]) / (2 * eps)
    assert_relative(2 * grad, numeric, tol=1e-5)
