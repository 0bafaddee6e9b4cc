"""Reading pickles without running code from them.

A ``.pdparams`` / ``.pdopt`` file (and CIFAR-10's python batches) is a
pickle, and a pickle can name any function to call while it is read:
``paddle.load`` or ``pickle.load`` of a crafted file runs its code. Every
load of weights and state in the project goes through ``restricted_load``
instead: an unpickler whose ``find_class`` (asked for every class or
function a pickle names, before it is called) answers only from
``allowed()`` and refuses anything else with one line. Nothing outside the
list is imported or called, so a refused file has run no code of its own.

``allowed()`` is what Paddle's and numpy's pickles need (paddle.framework.io's
``_pickle_save`` writes a tensor as ``(name, ndarray)`` or an ndarray, and
numpy writes an array as ``_reconstruct(ndarray, (0,), b"b")`` + its bytes):
array and dtype reconstruction, numpy scalars, plain containers, bytes from a
protocol-2 file, and Paddle's RNG state (a C++ object of three numbers and a
Mersenne-twister state, saved with the training state).

Allowed names are not enough: a pickle also sets the state of what they
build (its BUILD opcode), and declares sizes before its bytes. So the
unpickler (Python's own, with two opcodes replaced) builds only plain
numeric arrays:

* a dtype is a plain number (bool, int, uint, float, complex), built as a
  fresh copy, and its state must be exactly that dtype's own: no object
  dtype, no fields or flags set by the pickle (with them numpy would read an
  object array's pointers from the file's raw bytes);
* an array starts empty (numpy's ``(0,)``) and its bytes must be exactly its
  declared shape times its item size; a scalar's bytes its item size;
* no read or allocation exceeds what the file still holds (``BoundedReader``:
  a 67-byte file cannot ask for 1.5 GiB), ``bytearray(n)`` is refused.

``paddle_tensors`` then turns the arrays into tensors the way ``paddle.load``
does, so callers see the same objects as before.
"""
import builtins
import collections
import functools
import math
import pickle
import struct

import numpy as np

from utils.base.errors import UserError


class RefusedPickle(UserError):
    """A pickle names a class or function outside ``allowed()``, or builds
    something a weights file never holds; the message says which, for
    callers to put after the file's name."""

    def __init__(self, name, why=None):
        self.name = name
        super().__init__(why or f"it asks to call {name} while loading, which weights and data "
                         "files never need (a crafted or foreign pickle; nothing in it was run)")


def refused_build(what):
    return RefusedPickle(what, f"it builds {what}, which weights and data files never hold "
                               "(a crafted or foreign pickle; nothing was built from it)")


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode`` as protocol 2 uses it for bytes, and nothing else
    (another codec name would make Python import that codec's module)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} (only latin1 is allowed)")
    return text.encode("latin1")


def _byte_array(source=b"", encoding=None):
    """``bytearray`` of bytes or latin-1 text; never of a size (an allocation
    the file does not hold)."""
    if isinstance(source, str):
        return bytearray(_latin1_bytes(source, encoding or "latin1"))
    if not isinstance(source, (bytes, bytearray)) or encoding is not None:
        raise refused_build(f"a bytearray from {type(source).__name__}")
    return bytearray(source)


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


# ------------------------------------------------ plain numeric arrays only
NUMERIC_KINDS = "biufc"   # bool, signed, unsigned, float, complex


def is_plain_numeric(dtype):
    """A number type with no fields, sub-array, object or metadata."""
    return (isinstance(dtype, np.dtype) and dtype.kind in NUMERIC_KINDS and dtype.fields is None
            and dtype.subdtype is None and not dtype.hasobject and dtype.metadata is None)


class _ArrayType:
    """What ``numpy.ndarray`` resolves to: the marker numpy's pickles pass
    to ``_reconstruct``; calling it (an array of a size the pickle names)
    is refused."""

    def __call__(self, *args, **kwargs):
        raise refused_build("numpy.ndarray(...) of a size the pickle names")


ARRAY_TYPE = _ArrayType()


def _empty_array(subtype, shape, typecode):
    """numpy's ``_reconstruct(ndarray, (0,), b"b")``: the empty array BUILD
    then fills; another type or size is refused."""
    if subtype is not ARRAY_TYPE or shape != (0,):
        raise refused_build(f"an array by _reconstruct({shape!r}) (numpy pickles (0,))")
    return _array_reconstruct()(np.ndarray, (0,), b"b")


def _plain_dtype(spec, align=False, copy=False):
    """``numpy.dtype(spec)`` of a plain number type, as a fresh copy (its
    BUILD must never touch numpy's own float32)."""
    try:
        dtype = np.dtype(spec) if isinstance(spec, str) else None
    except (TypeError, ValueError):
        dtype = None
    if not is_plain_numeric(dtype):
        raise refused_build(f"numpy.dtype({str(spec)[:40]!r}) (only plain number types are read)")
    return np.dtype(spec, align=False, copy=True)


def _plain_scalar(dtype, data=b""):
    """A numpy scalar of a plain number type from exactly its item size."""
    if not is_plain_numeric(dtype):
        raise refused_build(f"a numpy scalar of dtype {dtype!r}")
    data = data.encode("latin1") if isinstance(data, str) else data
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(f"a {dtype} scalar of {len(data)} bytes")
    return _scalar_reconstruct()(dtype, data)


def set_dtype_state(dtype, state):
    """BUILD of a dtype: only the state that dtype has on its own (in either
    byte order); fields, flags or an item size set by the pickle are refused."""
    order = state[1] if type(state) is tuple and len(state) > 1 else None
    if order not in ("<", ">", "|"):
        raise refused_build("a dtype with a state of its own")
    expected = dtype.newbyteorder(order) if order != "|" else dtype
    simple = all(type(x) in (int, str, type(None)) for x in state)
    if not simple or state != expected.__reduce__()[2]:
        raise refused_build(f"a {dtype} dtype with fields or flags set by the pickle")
    dtype.__setstate__(state)


def set_array_state(array, state):
    """BUILD of an array: a plain numeric dtype and exactly the bytes its
    declared shape needs."""
    if type(state) is not tuple or len(state) not in (4, 5):
        raise pickle.UnpicklingError("an array state that is not numpy's")
    shape, dtype, fortran, data = state[-4:]
    if not is_plain_numeric(dtype):
        raise refused_build(f"an array of dtype {dtype!r} (only plain numbers are read)")
    data = data.encode("latin1") if isinstance(data, str) else data
    if (type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape)
            or type(fortran) is not bool or not isinstance(data, bytes)):
        raise pickle.UnpicklingError("an array state that is not numpy's")
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise pickle.UnpicklingError(f"an array of shape {list(shape)} {dtype} holds "
                                     f"{len(data):,} bytes")
    array.__setstate__((1, shape, dtype, fortran, data))


@functools.cache
def allowed():
    """{(module, name): the object a pickle gets for it}: everything a pickle may name."""
    table = {}
    for numpy_core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(numpy_core, "_reconstruct")] = _empty_array
        table[(numpy_core, "scalar")] = _plain_scalar
    table[("numpy", "ndarray")] = ARRAY_TYPE
    table[("numpy", "dtype")] = _plain_dtype
    table[("collections", "OrderedDict")] = collections.OrderedDict
    for name in ("tuple", "list", "dict", "set", "frozenset", "complex"):
        table[("builtins", name)] = table[("__builtin__", name)] = getattr(builtins, name)
    table[("builtins", "bytearray")] = table[("__builtin__", "bytearray")] = _byte_array
    table[("_codecs", "encode")] = _latin1_bytes
    state = _generator_state()
    if state is not None:
        for module in ("paddle.base.libpaddle", "paddle.base.core", "paddle.fluid.libpaddle",
                       "paddle.fluid.core_avx"):
            table[(module, "GeneratorState")] = state
    return table


class BoundedReader:
    """``read`` / ``readline`` of an open binary file that refuse a size past
    its end: the unpickler allocates what an opcode declares before reading."""

    def __init__(self, file):
        self.file = file
        start = file.tell()
        self.end = file.seek(0, 2)
        file.seek(start)

    def read(self, n):
        left = self.end - self.file.tell()
        if n > left:
            raise pickle.UnpicklingError(f"the pickle declares {n:,} bytes where the file has "
                                         f"{left:,} left (truncated, or a crafted size)")
        return self.file.read(n)

    def readline(self):
        return self.file.readline()


class RestrictedUnpickler(pickle._Unpickler):
    """Python's unpickler that resolves names only from ``allowed()``,
    sets the state only of plain numeric arrays and dtypes and Paddle's RNG
    state, and reads no size past the file's end (see the module docstring)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, encoding="latin1"):
        super().__init__(BoundedReader(file), encoding=encoding)

    def find_class(self, module, name):
        try:
            return allowed()[(module, name)]
        except KeyError:
            raise RefusedPickle(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise RefusedPickle(f"persistent id {str(pid)[:40]!r}")

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray:
            set_array_state(inst, state)
        elif isinstance(inst, np.dtype):
            set_dtype_state(inst, state)
        elif type(inst) is allowed().get(("paddle.base.libpaddle", "GeneratorState")):
            inst.__setstate__(state)
        else:
            raise refused_build(f"a {type(inst).__name__} with a state set by the pickle")
    dispatch[pickle.BUILD[0]] = load_build

    def load_bytearray8(self):
        size, = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self.read(size)))   # read first: the size is bounded by the file
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


def restricted_load(file, encoding="latin1"):
    """The object pickled in the open binary ``file``; ``RefusedPickle``
    (message: the refused name or build) if it names anything outside
    ``allowed()`` or builds anything but plain numeric arrays."""
    try:
        return RestrictedUnpickler(file, encoding=encoding).load()
    except KeyError as err:   # the pure-Python unpickler's dispatch table has no such opcode
        if not isinstance(err.args[0], int):
            raise
        raise pickle.UnpicklingError(f"not a pickle: byte {err.args[0]:#04x} is no pickle "
                                     "opcode") from None


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
