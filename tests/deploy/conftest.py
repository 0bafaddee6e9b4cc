"""Fixtures of the service's tests: weights whose codes differ between the
demo images (support/centred_model.py), and a query image outside the database."""
import pytest
from PIL import Image, ImageOps

from support.centred_model import centred_checkpoint
from support.demo_set import query_path


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    return centred_checkpoint(demo, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def outside_query(demo, tmp_path_factory):
    """A database image mirrored: near some database images, equal to none."""
    path = str(tmp_path_factory.mktemp("query") / "mirrored.png")
    with Image.open(query_path(demo, 3)) as img:
        ImageOps.mirror(img.convert("RGB")).save(path)
    return path
