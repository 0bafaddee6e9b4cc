"""utils/base/safe_pickle.py: no code runs from a weights or data file (a
checkpoint, a backbone, a CIFAR-10 batch, export_model.py --pretrained),
and what it reads equals paddle.load's objects."""
import builtins
import collections
import os
import pickle

import numpy as np
import paddle
import pytest
from hypothesis import given

from models.alexnet import AlexNetHash
from support.cli import run_python
from support.errors import user_error
from support.fuzz import FUZZ, mutated, one_line_or_result
from utils.base.checkpoint import load_state_file, save_checkpoint
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
    """End to end: --pretrained on a crafted file, one line, exit 2."""
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


# ---------------------------------------------------------------- same objects as paddle.load


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
        # exact: the same file's bytes, read by two loaders
        assert np.array_equal(a.numpy(), b.numpy()), where
    elif isinstance(a, np.ndarray):   # exact: the same file's bytes, read by two loaders
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
    # exact: a pickle round trip
    np.testing.assert_array_equal(loaded["w"].numpy(), value)


# ---------------------------------------------------------------- plain numeric arrays only
class Reduced:
    """Pickles as ``func(*args)`` with ``state`` set by BUILD: how numpy pickles
    arrays and dtypes, with the parts a crafted file chooses."""

    def __init__(self, func, args, state):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return self.func, self.args, self.state


RECONSTRUCT = np.zeros(1).__reduce__()[0]


def object_fields_dtype(flags=0):
    """A void dtype of one object field whose flags the pickle clears (with
    them, numpy would ask for a list of objects, not raw bytes)."""
    return Reduced(np.dtype, ("V8", False, True),
                   (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, flags))


def raw_array(dtype, data, shape=(2,)):
    return Reduced(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


def pickled(obj, path):
    with open(path, "wb") as f:
        pickle.dump({"features.0.weight": obj}, f, protocol=4)
    return str(path)


def test_the_object_array_attack_is_real_with_pickle(tmp_path):
    """Plain pickle builds an object array whose pointers are the file's raw
    bytes (zeros here, so that this test does not crash the interpreter)."""
    path = pickled(raw_array(object_fields_dtype(), bytes(16)), tmp_path / "x.pdparams")
    with open(path, "rb") as f:
        array = pickle.load(f)["features.0.weight"]
    assert array.dtype.fields["a"][0].hasobject and not array.dtype.hasobject


@pytest.mark.parametrize("obj", [
    raw_array(object_fields_dtype(), bytes(16)),
    raw_array(Reduced(np.dtype, ("f4", False, True), (3, "<", None, None, None, -1, -1, 63)),
              bytes(8)),
    raw_array(np.dtype("O"), bytes(16)),
    Reduced(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2,), np.dtype("O"), False, [1, 2])),
    Reduced(np.zeros(1, np.float32)[0].__reduce__()[0], (np.dtype("O"), 7), None),
], ids=["object field, flags cleared", "float32 with object flags", "object dtype",
        "object array from a list", "object scalar"])
def test_only_plain_numeric_arrays_are_built(tmp_path, obj):
    message = user_error(load_state_file, pickled(obj, tmp_path / "x.pdparams"), "checkpoint")
    assert "refused" in message and "never hold" in message


@pytest.mark.parametrize("obj", [
    Reduced(RECONSTRUCT, (np.ndarray, (1_500_000_000,), b"b"), None),
    Reduced(np.ndarray, ((1_500_000_000,),), None),
    Reduced(bytearray, (1_500_000_000,), None),
    raw_array(np.dtype("f4"), bytes(8), shape=(10 ** 9,)),
], ids=["_reconstruct of 1.5 GB", "ndarray(1.5 GB)", "bytearray(1.5 GB)", "shape past the bytes"])
def test_declared_sizes_are_bounded_by_the_file(tmp_path, obj):
    import tracemalloc
    path = pickled(obj, tmp_path / "x.pdparams")
    tracemalloc.start()
    message = user_error(load_state_file, path, "checkpoint")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "refused" in message or "unreadable" in message
    assert peak < 16 << 20


def test_a_67_byte_file_cannot_ask_for_gigabytes(tmp_path):
    """Counted opcodes (bytes, str, bytearray, long, frame) declare their size
    before their data: one past the file's end is refused before it is read."""
    import struct
    import tracemalloc
    for opcode in (pickle.BINBYTES8, pickle.BINUNICODE8, pickle.BYTEARRAY8, pickle.FRAME):
        path = tmp_path / "x.pdparams"
        path.write_bytes(b"\x80\x05" + opcode + struct.pack("<Q", 3 << 29) + b"x" * 8)
        tracemalloc.start()
        message = user_error(load_state_file, str(path), "checkpoint")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert "unreadable" in message and "bytes where the file has" in message, opcode
        assert peak < 16 << 20, opcode


def test_big_endian_and_numpy_scalars_still_load(tmp_path):
    state = {"w": np.arange(6, dtype=">f4").reshape(2, 3), "n": np.int64(7), "b": np.bool_(True)}
    path = tmp_path / "be.pdopt"
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=2)
    loaded = load_state_file(str(path), "state")
    # exact: a pickle round trip (byte order converted, values unchanged)
    np.testing.assert_array_equal(loaded["w"].numpy(), state["w"])
    assert loaded["n"] == 7 and loaded["b"]


FUZZ_SEEDS = [
    pickle.dumps({"features.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
                  "features.0.bias": np.zeros(2, np.float64)}, protocol=p) for p in (2, 4)
] + [pickle.dumps({"optimizer": {"w_velocity_0": np.ones(3, np.float32)},
                   "training": {"epoch": 2, "best_map": np.float32(0.5), "history": [{"loss": 1.0}],
                                "rng": {"numpy": np.random.RandomState(0).get_state()}}},
                  protocol=4)]


@FUZZ
@given(data=mutated(FUZZ_SEEDS))
def test_fuzzed_checkpoint_is_read_or_refused_in_one_line(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzzed.pdparams"
    path.write_bytes(data)
    state = one_line_or_result(load_state_file, str(path), "checkpoint")
    assert state is None or isinstance(state, dict)


# ---------------------------------------------------------------- each check on its own
# The file-level tests above pass through several checks; these hold each one
# to its contract, so that a check that stops working is noticed although the
# others still refuse the file.
def test_an_array_is_filled_only_with_a_plain_numeric_dtype():
    from utils.base.safe_pickle import set_array_state
    for dtype in (np.dtype([("a", "O")]), np.dtype("O"), np.dtype("V8"), np.dtype("S8")):
        message = user_error(set_array_state, np.ndarray((0,), np.uint8),
                             (1, (2,), dtype, False, bytes(16)))
        assert "which weights and data files never hold" in message, dtype


def test_a_dtype_state_is_only_its_own():
    from utils.base.safe_pickle import set_dtype_state
    fields = (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0)
    for dtype, state in ((np.dtype("V8", copy=True), fields),
                         (np.dtype("f4", copy=True), (3, "<", None, None, None, -1, -1, 63)),
                         (np.dtype("f4", copy=True), (3, "<", None, None, None, 8, 4, 0))):
        assert "fields or flags set by the pickle" in user_error(set_dtype_state, dtype, state)
    big = np.dtype("f4", copy=True)
    set_dtype_state(big, (3, ">", None, None, None, -1, -1, 0))   # its own, big-endian
    assert big == np.dtype(">f4")


def test_a_read_past_the_end_is_refused_before_it_allocates():
    import io
    from utils.base.safe_pickle import BoundedReader
    reader = BoundedReader(io.BytesIO(b"12345"))
    assert reader.read(3) == b"123"
    with pytest.raises(pickle.UnpicklingError, match="declares 3 bytes where the file has 2 left"):
        reader.read(3)


def test_a_byte_that_is_no_opcode_is_named(tmp_path):
    """Bytes that are not a pickle say so, naming the byte (the unpickler's
    own error would be a bare KeyError of its dispatch table)."""
    path = tmp_path / "noise.pdparams"
    path.write_bytes(b"\xe9" + bytes(64))
    message = user_error(load_state_file, str(path), "checkpoint")
    assert "not a pickle: byte 0xe9 is no pickle opcode" in message and "\n" not in message
