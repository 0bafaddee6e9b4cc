"""utils/methods/hashnet_ablations.py: HashNet-W, HashNet-sgn and HashNet+C
against a float64 numpy transcription of the loss they switch (the authors'
pairwise_loss_updated of pytorch/src/loss.py against the reference recipe's
memory bank; the continuous similarity of caffe/src/caffe/layers/
pairwise_loss_layer.cu), its gradient written out by hand."""
import numpy as np
import pytest

from support.transcription import assert_relative, loss_and_grad, random_inputs
from utils import methods
from utils.methods.hashnet import ContinuationSettings, PairSettings

ALPHA, BETA = 0.1, 1.5


def continuous_weight(R, y, Y):
    """.cu ContinousSimilarityProcess: R² / (‖y_i‖²‖Y_j‖²), zero norms as 1, 0 → 0.25."""
    n1, n2 = (y * y).sum(1), (Y * Y).sum(1)
    W = R * R / (np.where(n1 == 0, 1, n1)[:, None] * np.where(n2 == 0, 1, n2)[None, :])
    return np.where(W == 0, 0.25, W)


def bank_loss(z, y, ind, U0, Y0, beta, weighted, continuous):
    """(loss, d loss / d z): u = tanh(βz) written live into the bank, the
    weights S/S1 and S/S0 (or 1), and with ``continuous`` every pair's
    gradient × 4W while the value stays the plain one."""
    u = np.tanh(beta * z)
    U, Y = U0.copy(), Y0.copy()
    U[ind], Y[ind] = u, y
    R = y @ Y.T
    S = (R > 0).astype(float)
    D = ALPHA * u @ U.T
    ell = np.log(1 + np.exp(-np.abs(D))) + np.maximum(D, 0) - S * D
    n, n1 = S.size, S.sum()
    w = np.where(S > 0, n / n1, n / (n - n1)) if weighted else np.ones_like(S)
    G = w * (1 / (1 + np.exp(-D)) - S) / n                  # d loss / d D
    if continuous:
        G = G * 4 * continuous_weight(R, y, Y)
    grad_u = ALPHA * G @ U                                   # u_i as a query
    grad_u += ALPHA * (G.T @ u)[ind]                         # u_k as the bank's row ind[k]
    return (w * ell).sum() / n, grad_u * beta * (1 - u * u)


def build(name, num_train, bit, num_class):
    cls = methods.method_class(name)
    settings = cls.Settings(alpha=ALPHA)
    method = cls(settings, bit, num_class)
    criterion = method.criterion(num_train)
    criterion.beta = BETA
    return criterion


SWITCHES = {  # method -> (weighted, continuous)
    "hashnet": (True, False),
    "hashnet_no_weighting": (False, False),
    "hashnet_continuous": (True, True),
    "hashnet_no_continuation": (True, False),
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_two_steps_match_the_transcription(name):
    """A step on an empty bank, then one on a bank holding it (one row
    shared, so that row is rewritten live)."""
    num_train, bit, num_class = 12, 8, 5
    criterion = build(name, num_train, bit, num_class)
    U, Y = np.zeros((num_train, bit)), np.zeros((num_train, num_class))
    for seed, ind in ((0, [4, 9, 1, 7, 0, 11]), (1, [2, 9, 5, 3, 8, 6])):
        z, y = random_inputs(seed, rows=6, bit=bit, num_class=num_class)
        loss, grad = loss_and_grad(criterion, z, y, ind)
        want_loss, want_grad = bank_loss(z, y, ind, U, Y, BETA, *SWITCHES[name])
        assert_relative(loss, want_loss)
        assert_relative(grad, want_grad)
        U[ind], Y[ind] = np.tanh(BETA * z), y


def test_the_switches_change_the_gradient():
    """Each ablation's gradient differs from HashNet's on the same batch
    (the transcription above cannot pass for the wrong switch)."""
    z, y = random_inputs(2, rows=6, bit=8, num_class=5)
    ind = np.arange(6)
    grads = {name: loss_and_grad(build(name, 6, 8, 5), z, y, ind)[1]
             for name in ("hashnet", "hashnet_no_weighting", "hashnet_continuous")}
    for name in ("hashnet_no_weighting", "hashnet_continuous"):
        assert np.linalg.norm(grads[name] - grads["hashnet"]) > 0.05 * np.linalg.norm(grads["hashnet"])


def test_continuous_similarity_leaves_the_reported_loss():
    z, y = random_inputs(3, rows=6, bit=8, num_class=5)
    ind = np.arange(6)
    plain = loss_and_grad(build("hashnet", 6, 8, 5), z, y, ind)[0]
    # exact: the reported loss runs the same kernels on the same inputs in this process
    assert loss_and_grad(build("hashnet_continuous", 6, 8, 5), z, y, ind)[0] == plain


def test_without_continuation_beta_stays_one():
    cls = methods.method_class("hashnet_no_continuation")
    method = cls(cls.Settings(), 16, 5)
    assert [method.period_parameters(e)["beta"] for e in (1, 21, 150)] == [1.0, 1.0, 1.0]
    assert cls.Settings is PairSettings and methods.method_class("hashnet").Settings is \
        ContinuationSettings
