"""utils/inference/features.py: the hash layer's input of every image, the
same for the training split as for a test-transformed one, cached with a
fingerprint: reused while it matches, rebuilt (saying why) when not."""
import dataclasses

import numpy as np
import paddle
import pytest

import models
from support.cli import TINY
from support.demo_set import demo_argv
from utils.inference import features as features_module
from utils.inference.features import backbone_features, hash_layer_inputs
from utils.data.loaders import build_datasets, build_loader
from utils.training.config import data_settings, parse_args


@pytest.fixture(scope="module")
def tiny(demo, tmp_path_factory):
    """A tiny model (random backbone, seeded), its data settings and a cache folder."""
    args = parse_args(demo_argv(demo, tmp_path_factory.mktemp("features"), *TINY))
    paddle.seed(0)
    model = models.build(args.arch, 16)
    return model, data_settings(args), str(tmp_path_factory.mktemp("cache"))


def test_features_are_the_hash_layers_input(tiny):
    model, data, _ = tiny
    loader = build_loader(build_datasets(data, ("test",))["test"], 8, shuffle=False)
    features, labels = hash_layer_inputs(model, loader)
    x, y, _ = next(iter(loader))
    model.eval()
    with paddle.no_grad():   # the tiny net's hash layer reads fc's output: the same kernels
        want = model.fc(paddle.flatten(model.pool(paddle.nn.functional.relu(model.conv(x))), 1))
    np.testing.assert_array_equal(features[:8], want.numpy())
    np.testing.assert_array_equal(labels[:8], y.numpy())
    assert features.shape == (len(loader.dataset), 32)


def test_training_split_is_read_without_augmentation(tiny):
    """The training images' features use the test transform: two reads agree."""
    model, data, _ = tiny
    train = build_datasets(data, ("train",), augment=False)["train"]
    first = hash_layer_inputs(model, build_loader(train, 8, shuffle=False))[0]
    again = hash_layer_inputs(model, build_loader(train, 8, shuffle=False))[0]
    # exact: the same images, kernels, threads and batches in this process
    np.testing.assert_array_equal(first, again)


def test_cache_is_reused_while_its_fingerprint_matches(tiny, monkeypatch):
    model, data, cache = tiny
    lines = []
    made = backbone_features(model, "random", data, ("test",), cache, 8, log=lines.append)
    assert "computed, saved to" in lines[-1]

    def never(*args):
        raise AssertionError("features recomputed although cached")
    monkeypatch.setattr(features_module, "hash_layer_inputs", never)
    again = backbone_features(model, "random", data, ("test",), cache, 8, log=lines.append)
    assert "(cached" in lines[-1]
    # exact: the cache's save-and-load round trip
    np.testing.assert_array_equal(again["test"][0], made["test"][0])
    np.testing.assert_array_equal(again["test"][1], made["test"][1])


def test_another_crop_rebuilds_and_says_why(tiny):
    model, data, cache = tiny
    backbone_features(model, "random", data, ("database",), cache, 8, log=lambda line: None)
    lines = []
    other = dataclasses.replace(data, crop_size=data.crop_size - 8)
    backbone_features(model, "random", other, ("database",), cache, 8, log=lines.append)
    assert "rebuilding" in lines[0] and "--crop_size changed" in lines[0]


def test_an_unreadable_cache_is_rebuilt(tiny, tmp_path):
    model, data, _ = tiny
    (tmp_path / "features_test.npz").write_bytes(b"not a zip")
    lines = []
    result = backbone_features(model, "random", data, ("test",), str(tmp_path), 8, log=lines.append)
    assert "rebuilding" in lines[0] and result["test"][0].shape[1] == 32
