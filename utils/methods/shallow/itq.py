"""ITQ, Iterative Quantization (Gong & Lazebnik, CVPR 2011): PCA to ``bit``
dimensions, then an orthogonal rotation R that minimises the quantization
error ‖B − VR‖², by alternating B = sign(VR) and R from the SVD of BᵀV
(orthogonal Procrustes), 50 iterations from a random orthogonal R."""
import numpy as np

from utils.methods.shallow.registry import (ShallowMethod, centred, register,
                                            top_principal_components)

ITERATIONS = 50


def itq_rotation(V, rng, iterations=ITERATIONS):
    """The rotation R [k, k] of ITQ for the centred, projected data V [n, k]."""
    k = V.shape[1]
    R = np.linalg.svd(rng.standard_normal((k, k)))[0]            # a random orthogonal start
    for _ in range(iterations):
        B = np.where(V @ R >= 0, 1.0, -1.0)
        left, _, right_t = np.linalg.svd(B.T @ V)               # BᵀV = S Ω Ŝᵀ
        R = right_t.T @ left.T                                  # R = Ŝ Sᵀ
    return R


@register("itq")
class ITQ(ShallowMethod):
    label = "ITQ"

    def fit(self, features, labels):
        self.mean = features.mean(axis=0)
        X = centred(features, self.mean)
        self.projection = top_principal_components(X, self.bit)
        self.rotation = itq_rotation(X @ self.projection, self.rng)
        return self

    def project(self, features):
        return centred(features, self.mean) @ self.projection @ self.rotation
