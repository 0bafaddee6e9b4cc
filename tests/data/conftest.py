"""Fixtures of the data tests."""
import pytest

from utils.data import images


@pytest.fixture
def small_limit():
    images.set_max_pixels(5000)
    yield
    images.set_max_pixels(images.DEFAULT_MAX_PIXELS)
