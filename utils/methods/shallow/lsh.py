"""LSH (Charikar 2002; the random-projection baseline of HashNet's Table 1):
codes sign((x − μ)·W) with W [d, bit] standard normal, μ the training mean
(so each bit splits the data near its middle)."""
from utils.methods.shallow.registry import ShallowMethod, centred, register


@register("lsh")
class LSH(ShallowMethod):
    label = "LSH"

    def fit(self, features, labels):
        self.mean = features.mean(axis=0)
        self.projection = self.rng.standard_normal((features.shape[1], self.bit))
        return self

    def project(self, features):
        return centred(features, self.mean) @ self.projection
