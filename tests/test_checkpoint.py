"""Checkpoints: save -> load round trip, refusing wrong files, the backbone."""
import os
import types

import numpy as np
import paddle
import pytest

from conftest import assert_same, check_backbone_load, state_numpy, user_error
from models.alexnet import AlexNet
from models.alexnet import AlexNetHash
from utils.base.checkpoint import (load_training_state, load_weights, newest_checkpoint,
                              save_checkpoint)
from utils.training.schedules import build_optimizer


def images(n=3, size=64, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).normal(size=(n, 3, size, size))
                            .astype("float32"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A 16-bit HashNet after one optimizer step, saved as <dir>/ckpt_16."""
    paddle.seed(3)
    model = AlexNetHash(16)
    opt = build_optimizer("sgd", model.parameters(), 0.01, 5e-4)
    model(images()).sum().backward()
    opt.step()
    prefix = str(tmp_path_factory.mktemp("ckpt") / "ckpt_16")
    training = {"epoch": 7, "best_map": 0.5, "bank": {"U": paddle.ones([4, 16])}}
    save_checkpoint(prefix, model, opt, training)
    model.eval()
    with paddle.no_grad():
        out = model(images()).numpy()
    return prefix, model, opt, out


def test_save_writes_reference_layout(saved):
    prefix, model, _, _ = saved
    assert os.path.isfile(prefix + ".pdparams") and os.path.isfile(prefix + ".pdopt")
    params = paddle.load(prefix + ".pdparams")
    assert sorted(params) == sorted(model.state_dict())  # the model's keys only


def test_save_load_identical_outputs(saved):
    prefix, model, _, out = saved
    paddle.seed(99)
    other = AlexNetHash(16)
    other.eval()
    with paddle.no_grad():
        assert not np.array_equal(other(images()).numpy(), out)  # different before loading
    load_weights(other, prefix)
    with paddle.no_grad():
        np.testing.assert_array_equal(other(images()).numpy(), out)
    mine, theirs = state_numpy(model), state_numpy(other)
    for key in mine:
        assert_same(theirs[key], mine[key], key)


def test_load_accepts_the_suffix(saved):
    prefix, _, _, out = saved
    other = AlexNetHash(16)
    other.eval()
    load_weights(other, prefix + ".pdparams")
    with paddle.no_grad():
        np.testing.assert_array_equal(other(images()).numpy(), out)


def test_training_state_round_trip(saved):
    prefix, model, opt, _ = saved
    fresh = build_optimizer("sgd", model.parameters(), 0.01, 5e-4)
    training = load_training_state(prefix, model, fresh)
    assert training["epoch"] == 7 and training["best_map"] == 0.5
    np.testing.assert_array_equal(np.asarray(training["bank"]["U"]), np.ones([4, 16]))
    mine, theirs = opt.state_dict(), fresh.state_dict()
    velocity = [k for k in mine if "velocity" in k]
    assert velocity
    for key in velocity:
        assert_same(np.asarray(theirs[key]), np.asarray(mine[key]), key)


def test_bit_mismatch_is_user_error(saved):
    message = user_error(load_weights, AlexNetHash(32), saved[0])
    assert "16" in message and "32" in message


def test_non_hashnet_checkpoint_is_user_error(alexnet):
    message = user_error(load_weights, AlexNetHash(16), alexnet.path[: -len(".pdparams")])
    assert "alexnet.pdparams" in message


def test_missing_checkpoint_is_user_error(tmp_path):
    message = user_error(load_weights, AlexNetHash(16), str(tmp_path / "nothing"))
    assert "nothing.pdparams" in message


def test_garbage_checkpoint_is_user_error(tmp_path):
    (tmp_path / "bad.pdparams").write_bytes(b"not a pickle at all")
    user_error(load_weights, AlexNetHash(16), str(tmp_path / "bad"))


def test_resume_without_pdopt_is_user_error(saved, tmp_path):
    prefix = str(tmp_path / "only_params_16")
    paddle.save(saved[1].state_dict(), prefix + ".pdparams")
    message = user_error(load_training_state, prefix, saved[1], saved[2])
    assert ".pdopt" in message


def test_newest_checkpoint(tmp_path):
    assert "no *_16.pdparams" in user_error(newest_checkpoint, str(tmp_path), 16)
    for name, mtime in (("model_best_16", 100), ("last_16", 200), ("last_32", 300)):
        path = tmp_path / f"{name}.pdparams"
        path.write_bytes(b"")
        os.utime(path, (mtime, mtime))
    assert newest_checkpoint(str(tmp_path), 16) == str(tmp_path / "last_16")
    assert newest_checkpoint(str(tmp_path), 32) == str(tmp_path / "last_32")


# ------------------------------------------------------------- the backbone
def test_missing_backbone_names_the_converter(tmp_path):
    message = user_error(AlexNetHash(16).load_backbone, str(tmp_path / "AlexNet_pretrained.pdparams"))
    assert "convert_alexnet" in message and "AlexNet_pretrained.pdparams" in message


def test_random_backbone_keeps_init():
    paddle.seed(5)
    model = AlexNetHash(16)
    before = state_numpy(model)
    model.load_backbone("random")
    after = state_numpy(model)
    for key in before:
        assert_same(after[key], before[key], key)


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory):
    """An AlexNet (torchvision layout, Paddle shapes) saved as a backbone file."""
    paddle.seed(6)
    state = state_numpy(AlexNet(num_classes=10))
    path = str(tmp_path_factory.mktemp("alexnet") / "alexnet.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, path)
    return types.SimpleNamespace(state=state, path=path)


def test_backbone_from_alexnet_state_dict(alexnet):
    paddle.seed(7)
    check_backbone_load(AlexNetHash(16), alexnet.path, alexnet.state)


def test_backbone_with_torch_shapes_is_user_error(alexnet, tmp_path):
    state = dict(alexnet.state)
    state["classifier.1.weight"] = np.ascontiguousarray(state["classifier.1.weight"].T)  # [out, in]
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, str(tmp_path / "t.pdparams"))
    message = user_error(AlexNetHash(16).load_backbone, str(tmp_path / "t.pdparams"))
    assert "classifier_plus.1.weight" in message and "convert_alexnet" in message


def test_backbone_missing_layers_is_user_error(alexnet, tmp_path):
    features = {k: paddle.to_tensor(v) for k, v in alexnet.state.items() if k.startswith("features")}
    paddle.save(features, str(tmp_path / "partial.pdparams"))
    message = user_error(AlexNetHash(16).load_backbone, str(tmp_path / "partial.pdparams"))
    assert "classifier_plus.1.weight" in message


def test_unreadable_backbone_is_user_error(tmp_path):
    (tmp_path / "junk.pdparams").write_bytes(b"junk")
    assert "convert_alexnet" in user_error(AlexNetHash(16).load_backbone, str(tmp_path / "junk.pdparams"))
