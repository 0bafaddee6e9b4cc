"""Issue 25, rules 1 and 5: no code runs from a weights file, and weights are
checked on load (finite, float32 or float64 converted, expected shapes)."""
import builtins
import collections
import os
import pickle

import numpy as np
import paddle
import pytest

from conftest import run_python, user_error
from models.alexnet import AlexNet
from models.alexnet import AlexNetHash
from utils.base.checkpoint import load_state_file, load_weights, save_checkpoint
from utils.base.safe_pickle import RefusedPickle, load_paddle_file, restricted_load
from utils.data.loaders import read_cifar10
from utils.training.schedules import build_optimizer


class Payload:
    """Pickles as a call of ``func(*args)``: what a crafted weights file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def crafted(path, marker, protocol=4):
    """A file that looks like a state dict (arrays first) and creates
    ``marker`` when an ordinary unpickler reads it."""
    state = collections.OrderedDict(
        [("features.0.weight", np.zeros((2, 2), np.float32)),
         ("features.0.bias", Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"))])
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=protocol)
    return str(path)


def test_the_crafted_file_does_run_code_with_pickle(tmp_path):
    """The test's file is a real attack: plain pickle.load creates the marker."""
    path = crafted(tmp_path / "evil.pdparams", tmp_path / "marker")
    with open(path, "rb") as f:
        pickle.load(f)
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_crafted_checkpoint_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = crafted(tmp_path / "evil.pdparams", marker, protocol)
    message = user_error(load_state_file, path, "checkpoint")
    assert "refused" in message and ".exec while loading" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("func", [os.system, os.remove, getattr, builtins.eval,
                                  np.load, paddle.load])
def test_any_other_callable_is_refused(tmp_path, func):
    path = tmp_path / "x.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"w": Payload(func, "x")}, f)
    with open(path, "rb") as f, pytest.raises(RefusedPickle):
        restricted_load(f)


def test_codecs_only_decodes_latin1(tmp_path):
    import _codecs
    path = tmp_path / "x.pkl"
    with open(path, "wb") as f:
        pickle.dump(Payload(_codecs.encode, "abc", "rot13"), f, protocol=2)
    with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError):
        restricted_load(f)


def test_export_model_refuses_crafted_pretrained(tmp_path):
    """The issue's case end to end: --pretrained on a crafted file, one line, exit 2."""
    marker = tmp_path / "marker"
    crafted(tmp_path / "evil.pdparams", marker)
    result = run_python("export_model.py", "--bit", "16", "--img_size", "64", "--num_threads", "1",
                        "--pretrained", str(tmp_path / "evil"),
                        "--save-inference-dir", str(tmp_path / "inference"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: checkpoint") and "refused" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_backbone_crafted_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = crafted(tmp_path / "evil.pdparams", marker)
    assert "refused" in user_error(AlexNetHash(16).load_backbone, path)
    assert not marker.exists()


def test_crafted_cifar_batch_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "marker"
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")}, f)
    message = user_error(read_cifar10, str(folder))
    assert "data_batch_1 refused" in message
    assert not marker.exists()


# ---------------------------------------------------- same objects as paddle.load
def same(a, b, where="$"):
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, paddle.Tensor):
        assert (a.name, a.dtype, a.shape) == (b.name, b.dtype, b.shape), where
        assert np.array_equal(a.numpy(), b.numpy()), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif type(a).__name__ == "GeneratorState":
        assert a.current_seed() == b.current_seed(), where
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A HashNet checkpoint as training writes it (momentum buffers, the
    training state with RNG states and numpy scalars)."""
    paddle.seed(1)
    model = AlexNetHash(16)
    optimizer = build_optimizer("sgd", model.parameters(), 0.01, 5e-4)
    model(paddle.randn([2, 3, 64, 64])).sum().backward()
    optimizer.step()
    prefix = str(tmp_path_factory.mktemp("ck") / "last_16")
    training = {"epoch": 2, "best_map": np.float32(0.25), "history": [{"loss": 1.5}],
                "rng": {"numpy": np.random.get_state(), "paddle": paddle.get_rng_state()},
                "bank": {"U": paddle.ones([4, 16])}, "config": {"a": None, "b": (1, 2.5)}}
    save_checkpoint(prefix, model, optimizer, training)
    return prefix


@pytest.mark.parametrize("suffix", [".pdparams", ".pdopt"])
def test_checkpoint_loads_as_paddle_load_does(checkpoint, suffix):
    same(load_paddle_file(checkpoint + suffix), paddle.load(checkpoint + suffix))


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_reference_weights_format(tmp_path, protocol):
    """The reference's released weights: paddle.save(model.state_dict()), any protocol."""
    layer = paddle.nn.Sequential(paddle.nn.Linear(3, 4), paddle.nn.Linear(4, 2))
    path = str(tmp_path / "weights_16.pdparams")
    paddle.save(layer.state_dict(), path, protocol=protocol)
    same(load_paddle_file(path), paddle.load(path))


def test_paddle_vision_alexnet_format(tmp_path):
    path = str(tmp_path / "alexnet.pdparams")
    paddle.save(paddle.vision.models.AlexNet(num_classes=10).state_dict(), path)
    same(load_paddle_file(path), paddle.load(path))


def test_tensors_pickled_as_named_arrays(tmp_path):
    """Paddle 2.1+ pickles tensors inside a nested dict as (name, ndarray)."""
    path = str(tmp_path / "nested.pdopt")
    paddle.save({"a": {"w": paddle.ones([2, 3])}, "n": [1, "x"], "s": np.arange(3)}, path)
    same(load_paddle_file(path), paddle.load(path))


def test_split_big_params_are_joined(tmp_path):
    """Protocol 2/3 files slice arrays over 1 GB; the slices are joined."""
    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    flat = value.ravel()
    state = {"w@@.0": flat[:5], "w@@.1": flat[5:],
             "UnpackBigParamInfor@@": {"w": {"OriginShape": (3, 4), "slices": ["w@@.0", "w@@.1"]}},
             "StructuredToParameterName@@": {"w": "linear_0.w_0"}}
    path = str(tmp_path / "big.pdparams")
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=2)
    loaded = load_paddle_file(path)
    assert list(loaded) == ["w"] and loaded["w"].name == "linear_0.w_0"
    np.testing.assert_array_equal(loaded["w"].numpy(), value)


# ----------------------------------------------------------------- rule 5
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
