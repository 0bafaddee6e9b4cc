"""utils/base/checkpoint.py: save -> load round trip; one checkpoint is one
verified unit (a manifest of both files' sizes and checksums); weights are
checked on load (finite, float32 or float64 converted, expected shapes);
wrong files refused in one line; the backbone."""
import json
import os
import signal
import types

import numpy as np
import paddle
import pytest

from models.alexnet import AlexNet
from models.alexnet import AlexNetHash
from support.cli import TINY, run_python, run_tiny
from support.demo_set import demo_argv
from support.errors import assert_cli_error, user_error
from support.weights import assert_same, check_backbone_load, state_numpy
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
    with paddle.no_grad():   # exact: the same weights through the same kernels in this process
        np.testing.assert_array_equal(other(images()).numpy(), out)
    mine, theirs = state_numpy(model), state_numpy(other)
    for key in mine:
        # exact: a save-and-load round trip of the weights
        assert_same(theirs[key], mine[key], key)


def test_load_accepts_the_suffix(saved):
    prefix, _, _, out = saved
    other = AlexNetHash(16)
    other.eval()
    load_weights(other, prefix + ".pdparams")
    with paddle.no_grad():   # exact: as above
        np.testing.assert_array_equal(other(images()).numpy(), out)


def test_training_state_round_trip(saved):
    prefix, model, opt, _ = saved
    fresh = build_optimizer("sgd", model.parameters(), 0.01, 5e-4)
    training = load_training_state(prefix, model, fresh)
    # exact: a save-and-load round trip
    assert training["epoch"] == 7 and training["best_map"] == 0.5
    np.testing.assert_array_equal(np.asarray(training["bank"]["U"]), np.ones([4, 16]))
    mine, theirs = opt.state_dict(), fresh.state_dict()
    velocity = [k for k in mine if "velocity" in k]
    assert velocity
    for key in velocity:
        # exact: the optimizer's state saved and loaded (a round trip)
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


# ---------------------------------------------------------------- one checkpoint = one verified unit


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved 16-bit checkpoint (model, optimizer, training state)."""
    from models.alexnet import AlexNetHash
    from utils.base.checkpoint import save_checkpoint
    paddle.seed(0)
    model = AlexNetHash(16)
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    prefix = str(tmp_path_factory.mktemp("ckpt") / "last_16")
    save_checkpoint(prefix, model, opt, {"epoch": 1})
    return prefix


def test_checkpoint_manifest_names_both_files_with_checksums(checkpoint):
    import hashlib
    with open(checkpoint + ".manifest.json") as f:
        manifest = json.load(f)
    assert sorted(manifest["files"]) == ["last_16.pdopt", "last_16.pdparams"]
    for name, entry in manifest["files"].items():
        with open(os.path.join(os.path.dirname(checkpoint), name), "rb") as f:
            data = f.read()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_changed_checkpoint_file_is_refused_naming_it(checkpoint, tmp_path):
    import shutil
    from models.alexnet import AlexNetHash
    from utils.base.checkpoint import load_weights
    copy = str(tmp_path / "last_16")
    for suffix in (".pdparams", ".pdopt", ".manifest.json"):
        shutil.copy(checkpoint + suffix, copy + suffix)
    load_weights(AlexNetHash(16), copy)                     # intact: loads
    with open(copy + ".pdparams", "r+b") as f:          # one flipped byte deep in fc6
        f.seek(100_000_000)
        byte = f.read(1)
        f.seek(100_000_000)
        f.write(bytes([byte[0] ^ 1]))
    message = user_error(load_weights, AlexNetHash(16), copy)
    assert message.startswith(f"{copy}.pdparams does not match {copy}.manifest.json "
                              "(sha256 differs)")


KILL_BETWEEN_HALVES = """
import os, signal
import utils, paddle
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from tiny_model import TinyHashNet
from utils.base import checkpoint
prefix = sys.argv[1]
model = TinyHashNet(16)
opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
checkpoint.save_checkpoint(prefix, model, opt, {"epoch": 1})     # a complete unit
real_save = checkpoint.atomic_save
def save_then_die(obj, path):
    real_save(obj, path)
    if path.endswith(".pdopt"):
        os.kill(os.getpid(), signal.SIGKILL)     # the .pdparams half is never written
checkpoint.atomic_save = save_then_die
model.hash_layer.weight.set_value(paddle.ones(model.hash_layer.weight.shape))
checkpoint.save_checkpoint(prefix, model, opt, {"epoch": 2})
"""


def test_killed_between_the_two_halves_resume_names_the_mismatch(demo, tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    proc = run_python("-c", "import sys\n" + KILL_BETWEEN_HALVES, str(out / "last_16"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resume = run_tiny("main_single_gpu.py",
                      *demo_argv(demo, tmp_path, "-bs", "16", "-e", "3", "--resume", *TINY))
    assert_cli_error(resume, f"{out / 'last_16'}.pdopt does not match "
                             f"{out / 'last_16'}.manifest.json", "interrupted between its files")


def test_reference_weights_without_a_manifest_still_load(tmp_path):
    from models.alexnet import AlexNetHash
    from utils.base.checkpoint import load_weights
    model = AlexNetHash(16)
    paddle.save(model.state_dict(), str(tmp_path / "weights_16.pdparams"))   # as released
    load_weights(AlexNetHash(16), str(tmp_path / "weights_16"))


# ---------------------------------------------------------------- weights checked on load


def saved_with(tmp_path, change):
    """A 16-bit HashNet's state with ``change(state)`` applied, saved; its prefix."""
    paddle.seed(2)
    state = {k: v.numpy() for k, v in AlexNetHash(16).state_dict().items()}
    change(state)
    prefix = str(tmp_path / "w_16")
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, prefix + ".pdparams")
    return prefix, state


def test_nan_weights_are_refused(tmp_path):
    prefix, _ = saved_with(tmp_path, lambda s: s["features.0.bias"].__setitem__(1, np.nan))
    message = user_error(load_weights, AlexNetHash(16), prefix)
    assert "features.0.bias has 1 NaN/inf" in message


def test_inf_backbone_is_refused(tmp_path):
    path = str(tmp_path / "alex.pdparams")
    state = {k: v.numpy() for k, v in AlexNet(num_classes=10).state_dict().items()}
    state["features.3.weight"][0, 0, 0, 0] = np.inf
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, path)
    assert "features.3.weight has 1 NaN/inf" in user_error(AlexNetHash(16).load_backbone, path)


def test_float64_weights_are_converted(tmp_path):
    prefix, state = saved_with(tmp_path, lambda s: s.update(
        {k: v.astype(np.float64) for k, v in s.items()}))
    model = AlexNetHash(16)
    load_weights(model, prefix)
    for key, value in model.state_dict().items():
        assert value.dtype == paddle.float32
        # exact: the loader's float64 -> float32 cast is numpy's, the same rounding
        np.testing.assert_array_equal(value.numpy(), state[key].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.int64])
def test_other_dtypes_are_refused(tmp_path, dtype):
    prefix, _ = saved_with(tmp_path, lambda s: s.update(
        {"features.0.weight": s["features.0.weight"].astype(dtype)}))
    message = user_error(load_weights, AlexNetHash(16), prefix)
    assert f"features.0.weight is {np.dtype(dtype).name}, expected float32" in message


def test_wrong_shape_is_refused(tmp_path):
    prefix, _ = saved_with(tmp_path, lambda s: s.update(
        {"features.0.bias": np.zeros(3, np.float32)}))
    assert "features.0.bias has shape [3], expected [64]" in user_error(load_weights, AlexNetHash(16),
                                                                     prefix)


# ---------------------------------------------------------------- the backbone


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
        # exact: "random" loads nothing, so the weights are untouched
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
