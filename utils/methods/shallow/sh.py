"""SH, Spectral Hashing (Weiss, Torralba, Fergus, NIPS 2008), as the
authors' trainSH.m / compressSH.m: PCA to ``bit`` dimensions, a uniform
distribution fit on each (its range), and the ``bit`` analytical
eigenfunctions of smallest eigenvalue, sin(π/2 + kπ(x − min)/range) along
one direction each; a bit is the sign of one eigenfunction."""
import numpy as np

from utils.methods.shallow.registry import ShallowMethod, register, top_principal_components

EPS = np.finfo(np.float64).eps


def eigenfunction_modes(ranges, bit):
    """[bit, k] integer modes (the frequency along each principal
    direction; one non-zero per row) of the ``bit`` smallest eigenvalues
    Σ (mode·π/range)², the constant mode left out; ties in the order
    trainSH.m enumerates them (a stable sort)."""
    max_mode = np.ceil((bit + 1) * ranges / ranges.max()).astype(int)
    modes = [np.zeros(len(ranges), dtype=int)]
    for i, top in enumerate(max_mode):
        for m in range(1, top):
            mode = np.zeros(len(ranges), dtype=int)
            mode[i] = m
            modes.append(mode)
    modes = np.array(modes)
    eigenvalues = ((modes * np.pi / ranges) ** 2).sum(axis=1)
    return modes[np.argsort(eigenvalues, kind="stable")[1:bit + 1]]


@register("sh")
class SH(ShallowMethod):
    label = "SH"

    def fit(self, features, labels):
        features = np.asarray(features, dtype=np.float64)
        self.projection = top_principal_components(features - features.mean(axis=0), self.bit)
        X = features @ self.projection
        self.low, high = X.min(axis=0) - EPS, X.max(axis=0) + EPS
        self.ranges = high - self.low
        self.modes = eigenfunction_modes(self.ranges, self.bit)
        return self

    def project(self, features):
        X = np.asarray(features, dtype=np.float64) @ self.projection - self.low   # [n, k]
        omegas = self.modes * np.pi / self.ranges                                 # [bit, k]
        return np.prod(np.sin(X[:, None, :] * omegas[None] + np.pi / 2), axis=2)  # [n, bit]
