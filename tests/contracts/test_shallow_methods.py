"""What every registered shallow method (utils/methods/shallow/registry.py
``ShallowMethod``) must do, checked for each method in the registry: no
list here names one."""
import numpy as np
import pytest

from utils.methods.shallow import SHALLOW_METHODS
from utils.retrieval.metrics import mean_average_precision

SHALLOW = sorted(SHALLOW_METHODS)


def clustered(seed, n=300, dim=48, clusters=6):
    """Features of ``clusters`` separated classes (one-hot labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (clusters, dim))
    classes = rng.integers(0, clusters, n)
    return centres[classes] + rng.normal(0, 1, (n, dim)), np.eye(clusters)[classes]


@pytest.mark.parametrize("name", SHALLOW)
def test_registered_with_a_label(name):
    cls = SHALLOW_METHODS[name]
    assert cls.name == name and cls.label


@pytest.mark.parametrize("bit", [16, 48, 64])
@pytest.mark.parametrize("name", SHALLOW)
def test_codes_are_plus_minus_one_of_the_bit_length(name, bit):
    features, labels = clustered(0, dim=80)
    codes = SHALLOW_METHODS[name](bit, np.random.default_rng(0)).fit(features, labels).encode(
        features[:10])
    assert codes.dtype == np.int8 and codes.shape == (10, bit)
    assert set(np.unique(codes)) <= {-1, 1}


@pytest.mark.parametrize("name", SHALLOW)
def test_same_random_state_same_codes(name):
    features, labels = clustered(1)

    def codes(seed):
        return SHALLOW_METHODS[name](16, np.random.default_rng(seed)).fit(
            features, labels).encode(features)
    np.testing.assert_array_equal(codes(3), codes(3))


@pytest.mark.parametrize("name", SHALLOW)
def test_retrieves_its_classes_far_better_than_chance(name):
    """Fit on 200 images, query 50 against the other 250: separated classes
    give a mAP far above chance (1/6)."""
    features, labels = clustered(2)
    method = SHALLOW_METHODS[name](32, np.random.default_rng(0)).fit(features[:200], labels[:200])
    score = mean_average_precision(method.encode(features[200:250]), labels[200:250],
                                   method.encode(features[50:]), labels[50:], topk=50)
    assert score > 0.6, score
