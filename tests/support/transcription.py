"""Checking a method's loss against a numpy transcription of its official
code: random inputs, the Paddle loss's value and gradient, and the
comparison.

Why 1e-6 relative holds between a float64 transcription and Paddle's
float32: each float32 rounding is off by at most 6e-8 relative, and the
losses here sum at most a few hundred terms of one sign pattern per entry,
so the accumulated error stays near 1e-7 of the result's norm; a wrong
factor, sign or branch moves it by far more than 1e-6.
"""
import numpy as np
import paddle

TOLERANCE = 1e-6


def random_inputs(seed, rows=8, bit=16, num_class=5, scale=1.0):
    """z [rows, bit] ~ N(0, scale²) and multi-hot labels y [rows, C] with 1-3
    labels a row, except row 1, which has none (an unlabelled image, as in
    NUS-WIDE), all float64."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, scale, (rows, bit))
    y = np.zeros((rows, num_class))
    for row in y:
        row[rng.choice(num_class, size=rng.integers(1, 4), replace=False)] = 1.0
    y[1] = 0.0
    return z, y


def loss_and_grad(criterion, z, y, ind=None):
    """The Paddle criterion on float32 copies: (loss, dloss/dz as float64)."""
    ind = np.arange(len(z)) if ind is None else np.asarray(ind)
    zt = paddle.to_tensor(z.astype("float32"), stop_gradient=False)
    loss = criterion(zt, paddle.to_tensor(y.astype("float32")), paddle.to_tensor(ind))
    loss.backward()
    assert loss.dtype == zt.grad.dtype == paddle.float32
    return float(loss), zt.grad.numpy().astype(np.float64)


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def assert_relative(actual, expected, tol=TOLERANCE):
    """Norm-wise relative error within ``tol`` (see the module's note)."""
    error = relative_error(actual, expected)
    assert error <= tol, error
