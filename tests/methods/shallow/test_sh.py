"""utils/methods/shallow/sh.py: Spectral Hashing's eigenfunctions as
trainSH.m enumerates and orders them, and its codes as compressSH.m makes
them."""
import numpy as np

from utils.methods.shallow.sh import SH, eigenfunction_modes


def test_modes_follow_the_eigenvalues_of_the_ranges():
    """Ranges 4 and 1: eigenvalue (kπ/range)² is smallest along the long
    direction: modes 1, 2, 3, 4 of direction 0 (π²/16 · 1, 4, 9, 16) come
    before mode 1 of direction 1 (π²), with the tie at 4 (direction 0's
    mode 4 and direction 1's mode 1 are both π²) kept in trainSH.m's order."""
    modes = eigenfunction_modes(np.array([4.0, 1.0]), 5)
    np.testing.assert_array_equal(modes, [[1, 0], [2, 0], [3, 0], [4, 0], [0, 1]])


def test_first_bit_splits_the_main_direction_at_the_middle_of_its_range():
    """sin(π/2 + π(x − min)/range) changes sign at the middle of the range."""
    rng = np.random.default_rng(0)
    features = np.column_stack([rng.uniform(-5, 5, 500), rng.normal(0, 0.1, (500, 3))])
    sh = SH(4, np.random.default_rng(0)).fit(features, None)
    projected = features @ sh.projection[:, 0]
    middle = (projected.min() + projected.max()) / 2
    codes = sh.encode(features)
    assert ((projected > middle) != (codes[:, 0] > 0)).mean() in (0.0, 1.0)
    assert 0.4 < (codes[:, 0] > 0).mean() < 0.6
