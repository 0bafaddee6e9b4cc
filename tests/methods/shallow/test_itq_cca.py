"""utils/methods/shallow/itq_cca.py: the canonical directions and
correlations of CCA, against the singular values of Cxx^-1/2 Cxy Cyy^-1/2
(the textbook definition, computed another way); the codes, against ITQ.m's
transcription on the directions scaled by their correlations (Gong et al.'s
``Wx * diag(r)``), from the same random state."""
import numpy as np

from support import itq_reference
from utils.methods.shallow.itq_cca import ITQCCA, RIDGE, canonical_directions


def test_correlations_are_the_whitened_cross_covariance_singular_values():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 12))
    Y = (X[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(0, 0.5, (500, 4)) > 0).astype(float)
    X = X - X.mean(axis=0)
    W, r = canonical_directions(X, Y, 4)
    Yc = Y - Y.mean(axis=0)

    def inv_sqrt(C):
        values, vectors = np.linalg.eigh(C)
        return vectors @ np.diag(values ** -0.5) @ vectors.T
    n = len(X)
    Cxx = X.T @ X / (n - 1) + RIDGE * np.eye(12)
    Cyy = Yc.T @ Yc / (n - 1) + RIDGE * np.eye(4)
    singular = np.linalg.svd(inv_sqrt(Cxx) @ (X.T @ Yc / (n - 1)) @ inv_sqrt(Cyy),
                             compute_uv=False)
    # float64 through two LAPACK routes (the method's eigen-decomposition, this
    # SVD) of well-conditioned 12x12 / 4x4 matrices: they agree to ~1e-13,
    # whatever the BLAS or CPU; 1e-8 leaves that margin, a wrong formula is off by %
    np.testing.assert_allclose(r, singular, rtol=1e-8)
    # float64 normalisation: 1 within a few ulps (~1e-16)
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1.0, rtol=1e-12)
    # each direction's projection correlates with the labels as r says; not a
    # float bound: r is the correlation under the ridge (RIDGE = 1e-4 on unit-scale
    # covariances), which moves it by about 1e-4 from the sample correlation
    best = np.corrcoef(X @ W[:, 0], Yc @ np.linalg.lstsq(Yc, X @ W[:, 0], rcond=None)[0])[0, 1]
    assert abs(best - r[0]) < 1e-3


def test_codes_are_itq_on_the_correlation_scaled_directions():
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 8, 300)
    features = rng.normal(0, 3, (8, 40))[classes] + rng.normal(0, 1, (300, 40))
    labels = np.eye(8)[classes]
    got = ITQCCA(16, np.random.default_rng(4)).fit(features, labels).encode(features)
    X = features - features.mean(axis=0)
    W, r = canonical_directions(X, labels, 16)
    V = X @ (W * r)
    want = itq_reference.codes(V @ itq_reference.itq(V, np.random.default_rng(4)))
    np.testing.assert_array_equal(got, want)   # the same operations in the same order: exact
