"""A literal transcription of Gong & Lazebnik's ITQ (their ITQ.m and the
PCA before it), for the shallow methods' tests: PCA by the covariance's
eigenvectors, a random orthogonal start from the SVD of a Gaussian matrix,
then 50 alternations of B = sign(VR) and R from the SVD of BᵀV."""
import numpy as np


def pca(X, bit):
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(X, rowvar=False))
    return eigenvectors[:, np.argsort(eigenvalues)[::-1][:bit]]


def itq(V, rng, iterations=50):
    """The rotation R of ITQ.m for the projected data V [n, bit]."""
    bit = V.shape[1]
    R = np.linalg.svd(rng.standard_normal((bit, bit)))[0][:, :bit]
    for _ in range(iterations):
        Z = V @ R
        UX = -np.ones(Z.shape)
        UX[Z >= 0] = 1
        UB, _, UA_t = np.linalg.svd(UX.T @ V)
        R = UA_t.T @ UB.T
    return R


def codes(Y):
    return np.where(Y >= 0, 1, -1)
