"""utils/methods/csq.py against a float64 numpy transcription of the
release's train.py (yuanli2333/Hadamard-Matrix-for-hashing: center_loss =
BCELoss, Q_loss, Hash_center_multilables) and its tutorial's Hadamard
centres, checked against scipy's Hadamard matrix."""
import numpy as np
import paddle
import pytest
import scipy.linalg

from support.transcription import assert_relative, loss_and_grad, random_inputs
from utils.methods.csq import CSQLoss, hash_centers, random_centers

LAMBDA = 1e-3   # lambda2 of the README's 16- and 32-bit AlexNet commands
TORCH_BCE_EPS = 1e-12   # torch's binary_cross_entropy backward: / max(p(1-p), eps)


def multilabel_centers(labels, centers, random_center):
    """Hash_center_multilables: the mean of the label centres, > 0 -> 1,
    < 0 -> -1, 0 -> random_center's bit (an unlabelled row's mean is 0
    here: the declared deviation from the release's NaN)."""
    rows = []
    for label in labels:
        ones = np.flatnonzero(label == 1)
        mean = centers[ones].mean(axis=0) if len(ones) else np.zeros(centers.shape[1])
        rows.append(np.where(mean > 0, 1.0, np.where(mean < 0, -1.0, random_center)))
    return np.array(rows)


def train_py(z, labels, centers, random_center, lam=LAMBDA):
    """(loss, d loss / d z) of lambda0 = 1 · center_loss + lambda2 · Q_loss
    (lambda1 = 0) on y = tanh(z), with torch's BCELoss and its backward."""
    y = np.tanh(z)
    c = multilabel_centers(labels, centers, random_center)
    p, t = 0.5 * (y + 1), 0.5 * (c + 1)
    with np.errstate(divide="ignore"):
        bce = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log(1 - p), -100))
    loss = bce.mean() + lam * ((np.abs(y) - 1) ** 2).mean()
    d_p = (p - t) / np.maximum((1 - p) * p, TORCH_BCE_EPS) / y.size
    d_y = 0.5 * d_p + lam * 2 * (np.abs(y) - 1) * np.sign(y) / y.size
    return loss, d_y * (1 - y * y)


def csq_loss(centers, random_center, lam=LAMBDA):
    return CSQLoss(centers, random_center, lam)


@pytest.mark.parametrize("num_class, bit", [(5, 16), (20, 16), (10, 32)])
def test_loss_and_gradient_match_the_train_py_transcription(num_class, bit):
    """Single- and multi-label rows, an unlabelled one, centres with ties
    (two labels whose centres disagree on a bit)."""
    z, y = random_inputs(num_class, rows=8, bit=bit, num_class=num_class)
    y[2] = 0.0
    y[2, :2] = 1.0                       # two Hadamard rows: half their bits tie
    rng = np.random.default_rng(0)
    centers = hash_centers(num_class, bit, rng)
    tie = np.where(rng.integers(0, 2, bit) == 0, -1, 1)
    loss, grad = loss_and_grad(csq_loss(centers, tie), z, y)
    want_loss, want_grad = train_py(z, y, centers, tie)
    assert_relative(loss, want_loss)
    assert_relative(grad, want_grad)


def test_ties_and_unlabelled_rows_take_the_random_centre():
    centers = hash_centers(4, 16, np.random.default_rng(0))
    tie = np.where(np.arange(16) % 3 == 0, 1.0, -1.0)
    labels = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=float)
    got = csq_loss(centers, tie).image_centers(paddle.to_tensor(labels.astype("float32"))).numpy()
    np.testing.assert_array_equal(got, multilabel_centers(labels, centers, tie))
    assert (got[0] == tie)[centers[0] != centers[1]].all() and (got[1] == tie).all()


@pytest.mark.parametrize("num_class, bit", [(10, 16), (16, 16), (30, 16), (100, 64)])
def test_centres_are_hadamard_rows_then_their_negations(num_class, bit):
    H = scipy.linalg.hadamard(bit)
    np.testing.assert_array_equal(hash_centers(num_class, bit, np.random.default_rng(0)),
                                  np.concatenate([H, -H])[:num_class])


@pytest.mark.parametrize("num_class, bit", [(40, 16), (10, 48)])
def test_past_two_k_classes_or_no_power_of_two_the_centres_are_random_halves(num_class, bit):
    centers = hash_centers(num_class, bit, np.random.default_rng(0))
    assert centers.shape == (num_class, bit) and set(np.unique(centers)) == {-1, 1}
    assert ((centers == -1).sum(axis=1) == bit // 2).all()
    assert len({tuple(row) for row in centers}) == num_class


def test_random_centres_meet_the_tutorial_distances_when_they_can():
    """10 classes at 64 bits: the tutorial's min >= 20, mean >= 32 is met."""
    centers = random_centers(10, 64, np.random.default_rng(1))
    distance = (64 - centers @ centers.T)[np.triu_indices(10, 1)] / 2
    assert distance.min() >= 20 and distance.mean() >= 32
