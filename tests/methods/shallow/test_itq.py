"""utils/methods/shallow/itq.py: ITQ's codes equal those of a literal
transcription of Gong & Lazebnik's ITQ (PCA by the covariance's
eigenvectors, a random orthogonal start from the SVD of a Gaussian matrix,
50 alternations of B = sign(VR) and R from the SVD of BᵀV) drawing from the
same random state."""
import numpy as np
import pytest

from support import itq_reference
from utils.methods.shallow.itq import ITQ


def reference_itq(train, test, bit, rng):
    mean = train.mean(axis=0)
    pc = itq_reference.pca(train - mean, bit)
    R = itq_reference.itq((train - mean) @ pc, rng)
    return itq_reference.codes((test - mean) @ pc @ R)


def clustered(seed, n=400, dim=64, clusters=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (clusters, dim))
    classes = rng.integers(0, clusters, n)
    return centres[classes] + rng.normal(0, 1, (n, dim)), np.eye(clusters)[classes]


@pytest.mark.parametrize("bit", [16, 32])
def test_codes_equal_the_reference_with_the_same_random_state(bit):
    features, labels = clustered(bit)
    train, test = features[:300], features[300:]
    got = ITQ(bit, np.random.default_rng(7)).fit(train, labels[:300]).encode(test)
    want = reference_itq(train, test, bit, np.random.default_rng(7))
    np.testing.assert_array_equal(got, want)   # the same operations in the same order: exact


def test_fifty_iterations_lower_the_quantization_error_of_the_start():
    """The rotation ITQ ends with quantizes the training data better than
    the random rotation it starts from (what the alternation minimises)."""
    features, labels = clustered(3)
    itq = ITQ(16, np.random.default_rng(0)).fit(features, labels)
    V = (features - itq.mean) @ itq.projection
    start = np.linalg.svd(np.random.default_rng(0).standard_normal((16, 16)))[0]

    def error(R):
        return np.linalg.norm(np.sign(V @ R) - V @ R)
    assert error(itq.rotation) < 0.99 * error(start)
