"""utils/methods/shallow/lsh.py: LSH's codes equal those of the
straightforward random projection sign((x − μ)·W), W standard normal drawn
from the same random state."""
import numpy as np

from utils.methods.shallow.lsh import LSH


def test_codes_equal_the_reference_with_the_same_random_state():
    rng = np.random.default_rng(0)
    train, test = rng.normal(2.0, 1.0, (200, 40)), rng.normal(2.0, 1.0, (50, 40))
    got = LSH(32, np.random.default_rng(5)).fit(train, None).encode(test)
    W = np.random.default_rng(5).standard_normal((40, 32))
    want = np.where((test - train.mean(axis=0)) @ W >= 0, 1, -1)
    np.testing.assert_array_equal(got, want)   # the same product, same order: exact


def test_another_random_state_gives_other_codes():
    train = np.random.default_rng(0).normal(size=(100, 20))
    a = LSH(16, np.random.default_rng(1)).fit(train, None).encode(train)
    b = LSH(16, np.random.default_rng(2)).fit(train, None).encode(train)
    assert (a != b).mean() > 0.2
