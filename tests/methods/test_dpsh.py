"""utils/methods/dpsh.py against a float64 numpy transcription of the
PyTorch port's training step (jiangqy/DPSH-pytorch, DPSH_CIFAR_10.py: the
bank written with ``train_outputs.data``, logloss, regterm), its gradient
written out by hand."""
import numpy as np
import pytest

from support.transcription import assert_relative, loss_and_grad, random_inputs
from utils.methods.dpsh import DPSHLoss

ETA = 10.0   # lamda of DPSH_CIFAR_10_demo.py


def logtrick(x):
    return np.log(1 + np.exp(-np.abs(x))) + np.maximum(x, 0)


def port_step(z, ind, U, train_labels, eta=ETA):
    """(loss, d loss / d z, bank U after the write) of one step: S against
    every training label (the port loads them up front), the bank holding
    the batch's outputs as data (no gradient through it)."""
    U = U.copy()
    U[ind] = z
    S = (train_labels[ind] @ train_labels.T > 0).astype(float)
    num_train, batch = len(U), len(z)
    theta = z @ U.T / 2
    logloss = (S * theta - logtrick(theta)).sum() / (num_train * batch)
    regterm = ((np.sign(z) - z) ** 2).sum() / (num_train * batch)
    sigma = 1 / (1 + np.exp(-theta))
    grad = (-(S - sigma) @ U / 2 - eta * 2 * (np.sign(z) - z)) / (num_train * batch)
    return -logloss + eta * regterm, grad, U


@pytest.mark.parametrize("seed", [0, 1])
def test_two_steps_match_the_port(seed):
    """A first step on an empty bank, a second on a bank holding it. The
    port knows every label from the start, the bank only those seen: rows
    not seen yet have U = 0, so their labels cannot matter."""
    num_train, bit, num_class = 20, 12, 5
    criterion = DPSHLoss(num_train, bit, num_class, ETA)
    _, train_labels = random_inputs(100 + seed, rows=num_train, num_class=num_class)
    U = np.zeros((num_train, bit))
    for step, ind in enumerate(([3, 7, 11, 0, 19, 5], [7, 2, 9, 14, 0, 16])):
        z, _ = random_inputs(10 * seed + step, rows=6, bit=bit, scale=2.0)
        loss, grad = loss_and_grad(criterion, z, train_labels[ind], ind)
        want_loss, want_grad, U = port_step(z, ind, U, train_labels)
        assert_relative(loss, want_loss)
        assert_relative(grad, want_grad)
        # the bank is a float32 copy of the batch's outputs (u = z), the port's a
        # float64 one: they differ by float32 rounding (~6e-8 relative), no kernel between
        np.testing.assert_allclose(criterion.U.numpy(), U, rtol=1e-6, atol=1e-7)


def test_the_bank_carries_no_gradient():
    """The port writes outputs.data: a live bank (HashNet's) would add the
    column terms and change the gradient."""
    z, y = random_inputs(4, rows=6, bit=8, num_class=4)
    ind = np.arange(6)
    _, grad = loss_and_grad(DPSHLoss(6, 8, 4, 0.0), z, y, ind)
    S = (y @ y.T > 0).astype(float)
    sigma = 1 / (1 + np.exp(-(z @ z.T / 2)))
    live = -((S - sigma) @ z / 2 + (S - sigma).T @ z / 2) / 36
    assert_relative(grad, port_step(z, ind, np.zeros((6, 8)), y, 0.0)[1])
    assert np.linalg.norm(grad - live) > 0.1 * np.linalg.norm(grad)
