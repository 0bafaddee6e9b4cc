"""utils.methods.hashnet.HashNetLoss against an independent numpy version of spec §2.

The numpy side is float64: the loss is written straight from the spec's six
steps and its gradient w.r.t. z is taken by central finite differences, so
the live-row semantics (the batch's own bank rows depend on z) are in the
reference by construction, while older bank rows are constants.
"""
import numpy as np
import paddle
import pytest

from utils.methods.hashnet import HashNetLoss, weighted_pair_loss

# float32 Paddle (or OpenCV) kernels against a numpy reference: run again on
# other kernels by .ci/run
pytestmark = pytest.mark.float_sensitive

ALPHA = 0.1


def reference_loss(z, y, ind, U0, Y0, beta, alpha=ALPHA):
    """Spec §2 in float64 -> (loss, bank U after the write, bank Y after the write)."""
    u = np.tanh(beta * z)                                   # 1
    U, Y = U0.copy(), Y0.copy()                             # 2: write the batch
    U[ind], Y[ind] = u, y
    S = (y @ Y.T > 0).astype(np.float64)                    # 3
    D = alpha * u @ U.T                                     # 4
    ell = np.logaddexp(0.0, D) - S * D                      # 5: log(1 + e^D) - S*D
    n, n1 = S.size, S.sum()                                 # 6
    n0 = n - n1
    w = np.where(S > 0, n / n1 if n1 else 0.0, n / n0 if n0 else 0.0)
    return (w * ell).sum() / n, U, Y


def numeric_grad(f, z, eps=1e-6):
    """d f / d z by central differences (float64)."""
    grad = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        hi, lo = z.copy(), z.copy()
        hi[idx] += eps
        lo[idx] -= eps
        grad[idx] = (f(hi) - f(lo)) / (2 * eps)
    return grad


def reference_grad(z, y, ind, U0, Y0, beta, alpha=ALPHA):
    """d loss / d z of the float64 reference."""
    return numeric_grad(lambda zz: reference_loss(zz, y, ind, U0, Y0, beta, alpha)[0], z)


def paddle_step(criterion, z, y, ind):
    """One call of the paddle loss -> (loss value, dloss/dz as numpy)."""
    zt = paddle.to_tensor(z.astype(np.float32), stop_gradient=False)
    loss = criterion(zt, paddle.to_tensor(y.astype(np.float32)),
                     paddle.to_tensor(np.asarray(ind, dtype=np.int64)))
    loss.backward()
    return float(loss), zt.grad.numpy().astype(np.float64)


def check_against_reference(criterion, z, y, ind, U0, Y0):
    """Value, gradient and bank after one call all match the reference;
    returns the reference bank (U, Y) after the call."""
    beta = criterion.beta
    expected, U, Y = reference_loss(z, y, ind, U0, Y0, beta, criterion.alpha)
    value, grad = paddle_step(criterion, z, y, ind)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, reference_grad(z, y, ind, U0, Y0, beta, criterion.alpha),
                               rtol=2e-3, atol=2e-6)
    np.testing.assert_allclose(criterion.U.numpy(), U, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(criterion.Y.numpy(), Y)
    return U, Y


def random_batch(rng, B, bit, C, scale=1.0, min_labels=1):
    z = rng.normal(0.0, scale, size=(B, bit))
    y = np.zeros((B, C))
    for row in y:
        row[rng.choice(C, size=rng.integers(min_labels, 3), replace=False)] = 1
    return z, y


def test_fresh_bank_value_gradient_and_write():
    rng = np.random.default_rng(0)
    N, B, bit, C = 10, 4, 6, 5
    crit = HashNetLoss(N, bit, C, alpha=ALPHA)
    crit.beta = 1.5
    z, y = random_batch(rng, B, bit, C)
    check_against_reference(crit, z, y, [7, 2, 5, 0], np.zeros((N, bit)), np.zeros((N, C)))


def test_gradient_includes_the_live_rows_column_terms():
    """The batch's bank rows are live: the gradient must match the reference
    and not a version that treats the freshly written rows as constants
    (a detached write)."""
    rng = np.random.default_rng(1)
    N, B, bit, C = 6, 3, 4, 3
    crit = HashNetLoss(N, bit, C)
    z, y = random_batch(rng, B, bit, C)
    ind = [4, 1, 3]
    _, grad = paddle_step(crit, z, y, ind)
    # Reference with the batch's rows frozen at their current values.
    U_frozen, Y_frozen = np.zeros((N, bit)), np.zeros((N, C))
    U_frozen[ind], Y_frozen[ind] = np.tanh(z), y

    def frozen(zz):
        u = np.tanh(zz)
        S = (y @ Y_frozen.T > 0)
        D = ALPHA * u @ U_frozen.T
        n, n1 = S.size, S.sum()
        w = np.where(S, n / n1, n / (n - n1))
        return (w * (np.logaddexp(0, D) - S * D)).sum() / n

    g_frozen = numeric_grad(frozen, z)
    g_live = reference_grad(z, y, ind, np.zeros((N, bit)), np.zeros((N, C)), 1.0)
    assert np.abs(g_live - g_frozen).max() > 1e-3  # the test can tell the two apart
    np.testing.assert_allclose(grad, g_live, rtol=2e-3, atol=2e-6)


def test_second_call_sees_rows_of_the_first_and_rewrites_overlap():
    """Bank already holding a previous batch: its rows are constants, a row
    the new batch shares (index 3) is replaced by the live u."""
    rng = np.random.default_rng(2)
    N, bit, C = 12, 8, 6
    crit = HashNetLoss(N, bit, C)
    crit.beta = 1.0
    z1, y1 = random_batch(rng, 5, bit, C)
    U, Y = check_against_reference(crit, z1, y1, [1, 3, 4, 8, 11], np.zeros((N, bit)),
                                   np.zeros((N, C)))
    crit.beta = np.sqrt(2.0)
    z2, y2 = random_batch(rng, 4, bit, C)
    U2, _ = check_against_reference(crit, z2, y2, [0, 3, 6, 9], U, Y)
    # rows written only by the first batch are unchanged, row 3 now holds batch 2
    np.testing.assert_allclose(U2[[1, 4, 8, 11]], np.tanh(z1[[0, 2, 3, 4]]), rtol=1e-12)
    np.testing.assert_allclose(crit.U.numpy()[3], np.tanh(np.sqrt(2.0) * z2[1]), rtol=1e-5)


def test_bank_rows_written_before_change_the_loss():
    """A second call must really read the first call's rows: the same batch
    against an empty bank gives another value."""
    rng = np.random.default_rng(3)
    N, bit, C = 8, 6, 4
    z1, y1 = random_batch(rng, 4, bit, C)
    z2, y2 = random_batch(rng, 4, bit, C)
    filled = HashNetLoss(N, bit, C)
    paddle_step(filled, z1, y1, [0, 1, 2, 3])
    with_history, _ = paddle_step(filled, z2, y2, [4, 5, 6, 7])
    empty, _ = paddle_step(HashNetLoss(N, bit, C), z2, y2, [4, 5, 6, 7])
    assert abs(with_history - empty) > 1e-4


def test_no_similar_pair_gives_no_nan():
    rng = np.random.default_rng(4)
    N, B, bit, C = 6, 3, 4, 3
    crit = HashNetLoss(N, bit, C)
    z = rng.normal(size=(B, bit))
    y = np.zeros((B, C))  # no labels: nothing is similar, n1 = 0
    check_against_reference(crit, z, y, [0, 2, 4], np.zeros((N, bit)), np.zeros((N, C)))


def test_no_dissimilar_pair_gives_no_nan():
    rng = np.random.default_rng(5)
    B, bit, C = 4, 4, 3
    crit = HashNetLoss(B, bit, C)  # the bank is just this batch
    z = rng.normal(size=(B, bit))
    y = np.zeros((B, C))
    y[:, 0] = 1  # everyone shares class 0: n0 = 0
    check_against_reference(crit, z, y, [3, 1, 0, 2], np.zeros((B, bit)), np.zeros((B, C)))


def test_unwritten_rows_are_negatives_without_gradient():
    """Zero rows: S = 0 (no label), D = 0 (no code), so each adds log 2 · n/n0
    and nothing to the gradient; they stay zero in the bank."""
    rng = np.random.default_rng(6)
    N, B, bit, C = 20, 2, 4, 2
    z = rng.normal(size=(B, bit))
    y = np.array([[1.0, 0.0], [1.0, 1.0]])
    ind = [5, 17]
    value, grad = paddle_step(HashNetLoss(N, bit, C), z, y, ind)
    u = np.tanh(z)
    D = ALPHA * u @ u.T                 # the only non-zero entries: batch x batch
    n, n1 = B * N, B * B                # every batch pair is similar here
    n0 = n - n1
    expected = ((n / n1) * (np.logaddexp(0, D) - D).sum() + (n / n0) * n0 * np.log(2)) / n
    np.testing.assert_allclose(value, expected, rtol=2e-5)
    # Gradient: only the batch-batch block, scaled by n/n1 (unwritten rows add none).
    sig = 1 / (1 + np.exp(-D))
    g_u = 2 * ALPHA * (n / n1) / n * (sig - 1) @ u   # D is symmetric, both sides live
    np.testing.assert_allclose(grad, g_u * (1 - u ** 2), rtol=1e-4, atol=1e-7)
    crit = HashNetLoss(N, bit, C)
    paddle_step(crit, z, y, ind)
    untouched = np.setdiff1d(np.arange(N), ind)
    assert not crit.U.numpy()[untouched].any() and not crit.Y.numpy()[untouched].any()


def test_large_inner_products_are_stable():
    """α·u·Uᵀ up to α·bit = 64: log(1 + e^D) must not overflow."""
    rng = np.random.default_rng(7)
    N, B, bit, C = 8, 4, 64, 3
    crit = HashNetLoss(N, bit, C, alpha=1.0)
    crit.beta = 8.0
    z = rng.normal(0.0, 5.0, size=(B, bit))
    z[1] = z[0]  # u_0 = u_1 = ±1 everywhere: D_01 = α·bit = 64, yet dissimilar
    y = np.zeros((B, C))
    y[[0, 2, 3], 0] = 1
    y[1, 1] = 1
    expected, _, _ = reference_loss(z, y, [0, 1, 2, 3], np.zeros((N, bit)), np.zeros((N, C)),
                                    8.0, 1.0)
    value, grad = paddle_step(crit, z, y, [0, 1, 2, 3])
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, expected, rtol=1e-4)
    # tanh saturates there, so check dℓ/dD itself out to |D| = 100 (e^100
    # overflows float32): w·(σ(D) − S)/n, the value w·(log(1+e^D) − S·D)/n.
    D = np.array([[-100.0, -64.0, -20.0, 0.5, 20.0, 64.0, 100.0],
                  [100.0, 64.0, 20.0, -0.5, -20.0, -64.0, -100.0]])
    S = np.array([[1.0, 0, 1, 0, 1, 0, 1], [0, 1, 1, 0, 0, 1, 0]])
    n, n1 = S.size, S.sum()
    w = np.where(S > 0, n / n1, n / (n - n1))
    Dt = paddle.to_tensor(D.astype(np.float32), stop_gradient=False)
    loss = weighted_pair_loss(Dt, paddle.to_tensor(S.astype(np.float32)))
    loss.backward()
    sigmoid = 0.5 * (1 + np.tanh(D / 2))
    np.testing.assert_allclose(float(loss), (w * (np.logaddexp(0, D) - S * D)).sum() / n,
                               rtol=1e-5)
    np.testing.assert_allclose(Dt.grad.numpy(), w * (sigmoid - S) / n, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_beta_scales_tanh(beta):
    rng = np.random.default_rng(8)
    N, B, bit, C = 6, 3, 5, 4
    crit = HashNetLoss(N, bit, C)
    crit.beta = beta
    z, y = random_batch(rng, B, bit, C, scale=0.5)
    check_against_reference(crit, z, y, [1, 2, 5], np.zeros((N, bit)), np.zeros((N, C)))


def loaded_bank(N, bit, C, U0, Y0):
    crit = HashNetLoss(N, bit, C)
    crit.set_state_dict({"U": paddle.to_tensor(U0.astype(np.float32)),
                         "Y": paddle.to_tensor(Y0.astype(np.float32)),
                         "keep": paddle.ones([N])})
    return crit


def test_excluded_rows_are_no_pairs():
    """Bank rows of unreadable images (exclude) count in none of n, n1, n0:
    the loss and gradient are those of the bank without them, written from
    the spec's reference. Left in, as zero rows, they would change both."""
    rng = np.random.default_rng(8)
    N, B, bit, C = 10, 3, 4, 3
    U0 = np.tanh(rng.normal(size=(N, bit)))
    Y0 = np.eye(C)[rng.integers(0, C, N)]
    bad = [1, 2, 5, 7]
    U0[bad], Y0[bad] = 0.0, 0.0        # never written: the image was never read
    z, y = random_batch(rng, B, bit, C)
    ind = [4, 0, 9]
    crit = loaded_bank(N, bit, C, U0, Y0)
    crit.exclude(np.array(bad))
    value, grad = paddle_step(crit, z, y, ind)
    kept = np.setdiff1d(np.arange(N), bad)                      # the bank without them
    new_ind = [int(np.flatnonzero(kept == i)[0]) for i in ind]
    expected, _, _ = reference_loss(z, y, new_ind, U0[kept], Y0[kept], 1.0)
    np.testing.assert_allclose(value, expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, reference_grad(z, y, new_ind, U0[kept], Y0[kept], 1.0),
                               rtol=2e-3, atol=2e-6)
    # zero rows instead dilute the dissimilar pairs' weight n/n0: the test can tell
    _, zero_rows_grad = paddle_step(loaded_bank(N, bit, C, U0, Y0), z, y, ind)
    assert np.abs(zero_rows_grad - grad).max() > 0.1 * np.abs(grad).max()
    # the exclusion is bank state: restored with it, as a resume does
    restored = HashNetLoss(N, bit, C)
    restored.set_state_dict(crit.state_dict())
    assert restored.excluding and np.array_equal(np.flatnonzero(restored.keep.numpy() == 0), bad)
    np.testing.assert_allclose(paddle_step(restored, z, y, ind)[0], value, rtol=1e-6)


def test_nothing_excluded_is_the_recipe_path():
    crit = HashNetLoss(6, 4, 3)
    crit.exclude(np.array([], dtype=np.int64))
    assert not crit.excluding and crit.keep.numpy().all()
