"""The shallow-method registry: hashing learnt on fixed features, in numpy
(the baselines of HashNet's Table 1: LSH, SH, ITQ, ITQ-CCA).

A shallow method is fit once on the training set's features (the
ImageNet-pretrained backbone's fc7, utils/inference/features.py) and then
encodes any features into ±1 codes; it never trains the network. A new one
is a file with a ``ShallowMethod`` subclass under ``@register("name")`` and
one import line in utils/methods/shallow/__init__.py.
"""
import abc

import numpy as np

from utils.base.registry import Registry

SHALLOW_METHODS = Registry("shallow method", "name")
register = SHALLOW_METHODS.register


class ShallowMethod(abc.ABC):
    """Built as ``cls(bit, rng)`` (``rng``: a numpy Generator, the only
    source of its random draws); ``fit(features, labels)`` learns the hash
    functions, ``encode(features)`` applies them. Class attributes:
    ``name`` (set by ``register``), ``label`` (its name in tables) and
    ``supervised`` (whether ``fit`` reads the labels)."""
    name = None
    label = None
    supervised = False

    def __init__(self, bit, rng):
        self.bit, self.rng = bit, rng

    @abc.abstractmethod
    def fit(self, features, labels):
        """Learn from ``features`` [n, d] (float) and multi-hot ``labels``
        [n, C]; returns self."""

    @abc.abstractmethod
    def project(self, features):
        """Real values [n, bit] whose signs are the codes."""

    def encode(self, features):
        """int8 codes in {−1, +1} [n, bit]; a value 0 is +1 (the project's rule)."""
        return np.where(self.project(features) >= 0, 1, -1).astype(np.int8)


def centred(features, mean):
    return np.asarray(features, dtype=np.float64) - mean


def top_principal_components(features, k):
    """The covariance's eigenvectors of the k largest eigenvalues, largest
    first ([d, k]; numpy's symmetric eigensolver)."""
    values, vectors = np.linalg.eigh(np.cov(features, rowvar=False))
    return vectors[:, ::-1][:, :k]
