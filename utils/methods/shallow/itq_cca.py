"""ITQ-CCA (Gong, Lazebnik, Gordo, Perronnin, TPAMI 2013): supervised ITQ.
The features are projected on their top ``bit`` canonical directions with
the labels (CCA, ridge 1e-4 on both covariances), each direction (unit
norm) scaled by its canonical correlation, then rotated by ITQ's 50
iterations. With fewer classes than bits, only as many directions as
classes carry correlation; the others are scaled to about 0."""
import numpy as np

from utils.methods.shallow.itq import itq_rotation
from utils.methods.shallow.registry import ShallowMethod, centred, register

RIDGE = 1e-4


def inverse_square_root(C):
    values, vectors = np.linalg.eigh(C)
    return (vectors / np.sqrt(values)) @ vectors.T


def canonical_directions(X, Y, k, ridge=RIDGE):
    """The k directions W [d, k] of X (centred) most correlated with Y, unit
    norm, and their canonical correlations r [k], largest first: the
    eigenvectors of Cxx⁻¹ Cxy Cyy⁻¹ Cyx, through its symmetric form."""
    n = len(X)
    Y = Y - Y.mean(axis=0)
    Cxx = X.T @ X / (n - 1) + ridge * np.eye(X.shape[1])
    Cyy = Y.T @ Y / (n - 1) + ridge * np.eye(Y.shape[1])
    Cxy = X.T @ Y / (n - 1)
    root = inverse_square_root(Cxx)
    M = root @ Cxy @ np.linalg.solve(Cyy, Cxy.T) @ root
    values, vectors = np.linalg.eigh((M + M.T) / 2)
    order = np.argsort(values)[::-1][:k]
    W = root @ vectors[:, order]
    return W / np.linalg.norm(W, axis=0), np.sqrt(np.clip(values[order], 0, None))


@register("itq_cca")
class ITQCCA(ShallowMethod):
    label = "ITQ-CCA"
    supervised = True

    def fit(self, features, labels):
        self.mean = features.mean(axis=0)
        X = centred(features, self.mean)
        W, correlations = canonical_directions(X, np.asarray(labels, dtype=np.float64), self.bit)
        self.projection = W * correlations
        self.rotation = itq_rotation(X @ self.projection, self.rng)
        return self

    def project(self, features):
        return centred(features, self.mean) @ self.projection @ self.rotation
