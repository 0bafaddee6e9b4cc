"""Reading pickles without running code from them.

A ``.pdparams`` / ``.pdopt`` file (and CIFAR-10's python batches) is a
pickle, and a pickle can name any function to call while it is read:
``paddle.load`` or ``pickle.load`` of a crafted file runs its code. Every
load of weights and state in the project goes through ``restricted_load``
instead: Python's own (C) unpickler, whose ``find_class`` (asked for every
class or function a pickle names, before it is called) answers only from
``allowed()`` and refuses anything else with one line. Nothing outside the
list is imported or called, so a refused file has run no code of its own.

``allowed()`` is what Paddle's and numpy's pickles need (paddle.framework.io's
``_pickle_save`` writes a tensor as ``(name, ndarray)`` or an ndarray, and
numpy writes an array as ``_reconstruct(ndarray, (0,), b"b")`` + its bytes):
array and dtype reconstruction, numpy scalars, plain containers, bytes from a
protocol-2 file, and Paddle's RNG state (a C++ object of three numbers and a
Mersenne-twister state, saved with the training state).

``paddle_tensors`` then turns the arrays into tensors the way ``paddle.load``
does, so callers see the same objects as before.
"""
import builtins
import collections
import functools
import pickle

import numpy as np

from utils.base.errors import UserError


class RefusedPickle(UserError):
    """A pickle names a class or function outside ``allowed()``; the message
    says which, for callers to put after the file's name."""

    def __init__(self, name):
        self.name = name
        super().__init__(f"it asks to call {name} while loading, which weights and data files "
                         "never need (a crafted or foreign pickle; nothing in it was run)")


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode`` as protocol 2 uses it for bytes, and nothing else
    (another codec name would make Python import that codec's module)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} (only latin1 is allowed)")
    return text.encode("latin1")


def _array_reconstruct():
    """numpy's array rebuilder, under whichever module this numpy keeps it
    (numpy.core in 1.x, numpy._core in 2.x)."""
    return np.zeros(1).__reduce__()[0]


def _scalar_reconstruct():
    return np.float32(0).__reduce__()[0]


def _generator_state():
    """Paddle's RNG state class (``paddle.get_rng_state()`` items), or None."""
    try:
        import paddle
        return type(paddle.get_rng_state()[0])
    except Exception:  # no paddle, or no generator: such a pickle is refused
        return None


@functools.cache
def allowed():
    """{(module, name): the object a pickle gets for it}: everything a pickle may name."""
    table = {}
    for numpy_core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(numpy_core, "_reconstruct")] = _array_reconstruct()
        table[(numpy_core, "scalar")] = _scalar_reconstruct()
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    table[("collections", "OrderedDict")] = collections.OrderedDict
    for name in ("tuple", "list", "dict", "set", "frozenset", "bytearray", "complex"):
        table[("builtins", name)] = table[("__builtin__", name)] = getattr(builtins, name)
    table[("_codecs", "encode")] = _latin1_bytes
    state = _generator_state()
    if state is not None:
        for module in ("paddle.base.libpaddle", "paddle.base.core", "paddle.fluid.libpaddle",
                       "paddle.fluid.core_avx"):
            table[(module, "GeneratorState")] = state
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves names only from ``allowed()``."""

    def find_class(self, module, name):
        try:
            return allowed()[(module, name)]
        except KeyError:
            raise RefusedPickle(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise RefusedPickle(f"persistent id {str(pid)[:40]!r}")


def restricted_load(file, encoding="latin1"):
    """The object pickled in the open binary ``file``; ``RefusedPickle``
    (message: the refused name) if it names anything outside ``allowed()``."""
    return RestrictedUnpickler(file, encoding=encoding).load()


# ------------------------------------------------ as paddle.load returns it
STRUCTURED_NAMES = "StructuredToParameterName@@"
BIG_PARAMS = "UnpackBigParamInfor@@"  # Paddle's spelling  # typos: disable-line


def join_split_params(obj):
    """Protocol 2/3 files store an array over 1 GB in slices listed under
    ``BIG_PARAMS``; put them back together (paddle's ``_pack_loaded_dict``)."""
    if not isinstance(obj, dict) or BIG_PARAMS not in obj:
        return obj
    for key, info in obj.pop(BIG_PARAMS).items():
        obj[key] = np.concatenate([obj.pop(part) for part in info["slices"]]).reshape(
            info["OriginShape"])
    return obj


def is_named_array(obj):
    """A tensor as Paddle ≥ 2.1 pickles it: ``(name, ndarray)``."""
    return (type(obj) is tuple and len(obj) == 2 and isinstance(obj[0], str)
            and isinstance(obj[1], np.ndarray))


def contains(obj, test):
    if test(obj):
        return True
    if type(obj) in (dict, collections.OrderedDict):
        return any(contains(v, test) for v in obj.values())
    if type(obj) in (list, tuple, set):
        return any(contains(v, test) for v in obj)
    return False


def convert_each(obj, test, convert):
    """``obj`` with every part passing ``test`` replaced by ``convert(part)``,
    containers rebuilt in place as paddle's ``_parse_every_object`` does."""
    if test(obj):
        return convert(obj)
    if type(obj) in (dict, collections.OrderedDict):
        for key in list(obj):
            obj[key] = convert_each(obj[key], test, convert)
        return obj
    if type(obj) is list:
        return [convert_each(v, test, convert) for v in obj]
    if type(obj) in (tuple, set):
        return type(obj)(convert_each(v, test, convert) for v in obj)
    return obj


def named_tensor(pair):
    import paddle
    tensor = paddle.to_tensor(pair[1])
    tensor.name = pair[0]
    return tensor


def paddle_tensors(obj):
    """What ``paddle.load`` makes of the unpickled ``obj`` (dygraph mode):
    a state dict with a name table -> its arrays as named tensors; otherwise
    ``(name, ndarray)`` pairs -> tensors if there are any, else every ndarray."""
    import paddle
    obj = join_split_params(obj)
    if isinstance(obj, dict) and STRUCTURED_NAMES in obj:
        names = obj.pop(STRUCTURED_NAMES)
        for key, name in names.items():
            if isinstance(obj.get(key), np.ndarray):
                obj[key] = named_tensor((name, obj[key]))
        return obj
    if contains(obj, is_named_array):
        return convert_each(obj, is_named_array, named_tensor)
    return convert_each(obj, lambda v: isinstance(v, np.ndarray), paddle.to_tensor)


def load_paddle_file(path):
    """``paddle.load(path)`` without running code from the file: the same
    tensors, dicts and numbers, or ``RefusedPickle``."""
    with open(path, "rb") as f:
        return paddle_tensors(restricted_load(f))
