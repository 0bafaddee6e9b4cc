"""utils/methods/dhn.py against a float64 numpy transcription of the
release's layers (thuml/hash-caffe: pairwise_loss_layer.cu and
quantization_loss_layer.cu, forward and backward, and the TanH before them)."""
import numpy as np
import pytest

from support.transcription import assert_relative, loss_and_grad, random_inputs
from utils.methods.dhn import DHNLoss

LAMBDA = 0.2   # the prototxt's quantization loss_weight


def cu_forward(h, labels, lam, threshold=15.0):
    """Net loss = Σ loss_weight · top: PairwiseLoss (weight 1) + λ · QuantizationLoss."""
    sim = labels @ labels.T
    product = h @ h.T
    with np.errstate(over="ignore"):
        exp_product = np.exp(product)
    over = (threshold >= 0) & (product >= threshold)
    with np.errstate(over="ignore", invalid="ignore"):
        pair = np.where(over, product * (1 - (sim > 0)), np.log(1 + exp_product) - (sim > 0) * product)
    count = product.size                                   # every count[index] = 1
    data = np.abs(h) - 1
    quant = np.where((threshold > 0) & (data > threshold), data - np.log(2), np.log(np.cosh(data)))
    return pair.sum() / count + lam * quant.sum() / h.size


def cu_backward(h, labels, lam):
    """d loss / d h as the two Backward_gpu write it."""
    sim = labels @ labels.T
    with np.errstate(over="ignore", divide="ignore"):
        diff = 2 * (1 / (1 + 1 / np.exp(h @ h.T)) - (sim > 0))
    pair = (1.0 / diff.size) * diff @ h                     # loss_weight_ / count_num
    quant = np.where(h >= 0, 1.0, -1.0) * (lam / h.shape[0]) * np.tanh(np.abs(h) - 1)
    return pair + quant


def transcription(z, y, lam=LAMBDA):
    """(loss, d loss / d z): the layers on h = tanh(z), TanH's backward after."""
    h = np.tanh(z)
    return cu_forward(h, y, lam), cu_backward(h, y, lam) * (1 - h * h)


@pytest.mark.parametrize("seed, bit, scale", [(0, 16, 1.0), (1, 32, 1.0), (2, 32, 3.0)])
def test_loss_and_gradient_match_the_cu_transcription(seed, bit, scale):
    z, y = random_inputs(seed, rows=8, bit=bit, num_class=5, scale=scale)
    loss, grad = loss_and_grad(DHNLoss(LAMBDA), z, y)
    want_loss, want_grad = transcription(z, y)
    assert_relative(loss, want_loss)
    assert_relative(grad, want_grad)


def test_inputs_reach_the_threshold_branch():
    """The saturated case above has inner products past the prototxt's 15,
    where the layer reports P·(1−s) and still trains with 2(σ(P) − s)."""
    z, _ = random_inputs(2, rows=8, bit=32, num_class=5, scale=3.0)
    h = np.tanh(z)
    assert (h @ h.T >= 15).any() and (h @ h.T < 15).any()


def test_quantization_gradient_is_k_times_its_derivative():
    """The release's backward divides by N, not N·K: with only the
    quantization term (labels making every pair's term equal on both
    sides), the gradient is K times the derivative of the reported value."""
    z, y = random_inputs(3, rows=6, bit=16)
    with_q = loss_and_grad(DHNLoss(LAMBDA), z, y)[1]
    without = loss_and_grad(DHNLoss(0.0), z, y)[1]
    h = np.tanh(z)
    derivative = LAMBDA * np.sign(h) * np.tanh(np.abs(h) - 1) / h.size * (1 - h * h)
    assert_relative(with_q - without, 16 * derivative, tol=1e-5)
