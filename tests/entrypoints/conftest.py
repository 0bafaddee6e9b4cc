"""Fixtures of the entry-point tests: weights to run them on, and lists long
enough to interrupt."""
import os

import paddle
import pytest

from models.alexnet import AlexNetHash
from support.centred_model import centred_checkpoint


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """AlexNet, for predict.py's and infer.py's end-to-end tests."""
    return centred_checkpoint(demo, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def long_lists(demo, tmp_path_factory):
    """The demo lists with the database repeated 100 times: encoding it takes
    long enough that the SIGINT sent at the ready line always lands mid-run,
    however loaded the machine (the process is interrupted, so it costs nothing)."""
    lists = tmp_path_factory.mktemp("long_lists")
    for split in ("train", "test", "database"):
        with open(os.path.join(demo.list_dir, f"{split}.txt")) as f:
            text = f.read()
        (lists / f"{split}.txt").write_text(text * (100 if split == "database" else 1))
    return str(lists)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("w") / "w_16")
    paddle.save(AlexNetHash(16).state_dict(), prefix + ".pdparams")
    return prefix
