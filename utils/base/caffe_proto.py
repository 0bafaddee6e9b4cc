"""Caffe's protobuf files read (and, for test fixtures, written) without
Caffe or the protobuf package: the wire format is small enough to decode here.

Only what the project reads from caffe.proto (BVLC/caffe src/caffe/proto/caffe.proto):
  NetParameter     name = 1, layers = 2 (V1LayerParameter), layer = 100 (LayerParameter)
  LayerParameter   name = 1, type = 2 (a string), blobs = 7
  V1LayerParameter name = 4, type = 5 (an enum), blobs = 6
  BlobProto        num/channels/height/width = 1/2/3/4 (legacy 4-d shape),
                   data = 5 (packed float), shape = 7 (BlobShape: dim = 1, packed int64)
A ``.caffemodel`` is a NetParameter; a ``.binaryproto`` mean file is one BlobProto.
"""
import math

import numpy as np

from utils.base.errors import UserError

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
NET_NAME, NET_LAYERS_V1, NET_LAYER = 1, 2, 100
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7
V1_NAME, V1_TYPE, V1_BLOBS = 4, 5, 6
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH, BLOB_DATA, BLOB_SHAPE = 1, 2, 3, 4, 5, 7
SHAPE_DIM = 1
MAX_DIMS = 32   # numpy's limit on an array's dimensions
# V1LayerParameter.LayerType values of the layers that carry weights
V1_TYPES = {4: "Convolution", 14: "InnerProduct"}


class ProtoError(ValueError):
    """The bytes are not a well-formed message of the expected kind."""


# ---------------------------------------------------------------- wire format
def read_varint(buf, pos):
    """(value, next position) of the base-128 varint at ``pos``."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 10 bytes")


def fields(buf):
    """Yield (field number, wire type, value) of a message: an int for
    varints and fixed widths, a memoryview for length-delimited fields."""
    buf = memoryview(buf)
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == LENGTH:
            size, pos = read_varint(buf, pos)
            if pos + size > len(buf):
                raise ProtoError(f"field {number} runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (FIXED32, FIXED64):
            width = 4 if wire == FIXED32 else 8
            if pos + width > len(buf):
                raise ProtoError(f"field {number} runs past the end")
            value, pos = buf[pos:pos + width], pos + width
        else:
            raise ProtoError(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def varint_bytes(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_bytes(number, payload):
    """A length-delimited field (or, for an int payload, a varint field)."""
    if isinstance(payload, int):
        return varint_bytes(number << 3 | VARINT) + varint_bytes(payload)
    return varint_bytes(number << 3 | LENGTH) + varint_bytes(len(payload)) + bytes(payload)


# ---------------------------------------------------------------- Caffe messages
def packed_varints(view):
    values, pos = [], 0
    while pos < len(view):
        value, pos = read_varint(view, pos)
        values.append(value)
    return values


def float_values(wire, value):
    """BlobProto.data as float32: packed (LENGTH, a whole number of floats)
    or one FIXED32 float; any other encoding is malformed."""
    if wire == FIXED32 or (wire == LENGTH and len(value) % 4 == 0):
        return np.frombuffer(value, "<f4")
    raise ProtoError(f"blob data of wire type {wire} is not whole float32 values")


def shape_dims(buf):
    """BlobShape.dim: packed or repeated varints."""
    dims = []
    for number, wire, value in fields(buf):
        if number == SHAPE_DIM:
            if wire not in (VARINT, LENGTH):
                raise ProtoError(f"blob shape dim of wire type {wire}")
            dims.extend(packed_varints(value) if wire == LENGTH else [value])
    return dims


def read_blob(buf):
    """A BlobProto as a float32 array of its shape (BlobShape, else the legacy
    num/channels/height/width; Caffe drops the legacy dims of size 1 only for
    InnerProduct, so they are kept and reshaped by the converter). The shape
    must hold exactly the values the blob has: sizes come from the file."""
    data, shape, legacy = [], None, {}
    for number, wire, value in fields(buf):
        if number == BLOB_DATA:
            data.append(float_values(wire, value))
        elif number == BLOB_SHAPE:
            if wire != LENGTH:
                raise ProtoError(f"blob shape of wire type {wire}")
            shape = shape_dims(value)
        elif number in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wire == VARINT:
            legacy[number] = value
    if shape is None:
        shape = [legacy.get(n, 1) for n in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH)]
    values = np.concatenate(data) if data else np.zeros(0, np.float32)
    if len(shape) > MAX_DIMS or values.size != math.prod(shape):
        raise ProtoError(f"blob of shape {shape[:MAX_DIMS]} holds {values.size} values")
    return values.reshape(shape).astype(np.float32)


def text_field(wire, value, what):
    if wire != LENGTH:
        raise ProtoError(f"{what} of wire type {wire}, not a string")
    return bytes(value).decode("utf-8", "replace")


def read_layer(buf, v1):
    """(name, type, [blobs]) of a LayerParameter or a V1LayerParameter."""
    name_no, type_no, blobs_no = (V1_NAME, V1_TYPE, V1_BLOBS) if v1 else (LAYER_NAME, LAYER_TYPE,
                                                                             LAYER_BLOBS)
    name, kind, blobs = None, None, []
    for number, wire, value in fields(buf):
        if number == name_no:
            name = text_field(wire, value, "layer name")
        elif number == type_no and v1:
            if wire != VARINT:
                raise ProtoError(f"V1 layer type of wire type {wire}, not an enum")
            kind = V1_TYPES.get(value, f"V1:{value}")
        elif number == type_no:
            kind = text_field(wire, value, "layer type")
        elif number == blobs_no and wire == LENGTH:
            blobs.append(read_blob(value))
    return name, kind, blobs


def read_net(path):
    """{layer name: (type, [blobs as float32 arrays])} of a .caffemodel, from
    either its V2 ``layer`` or its V1 ``layers`` entries; a file that is not
    one is a UserError."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
        layers = {}
        for number, wire, value in fields(buf):
            if number in (NET_LAYER, NET_LAYERS_V1) and wire == LENGTH:
                name, kind, blobs = read_layer(value, v1=number == NET_LAYERS_V1)
                if blobs:
                    layers[name] = (kind, blobs)
    except (OSError, ProtoError) as err:
        raise UserError(f"{path} is not a readable .caffemodel ({err}): delete it and fetch "
                        "it again")
    if not layers:
        raise UserError(f"{path} has no layers with weights: not a .caffemodel")
    return layers


def read_mean_file(path):
    """The [C, H, W] mean image of a .binaryproto (a BlobProto of shape [1, C, H, W])."""
    try:
        with open(path, "rb") as f:
            blob = read_blob(f.read())
    except (OSError, ProtoError) as err:
        raise UserError(f"{path} is not a readable mean .binaryproto ({err}): delete it and "
                        "fetch it again")
    if blob.ndim != 4 or blob.shape[0] != 1:
        raise UserError(f"{path}: mean blob has shape {list(blob.shape)}, expected [1, C, H, W]: "
                        "delete it and fetch it again")
    return blob[0]


# ---------------------------------------------------------------- writers (fixtures)
def blob_bytes(array, legacy=False):
    """A BlobProto of ``array``: its shape as BlobShape (V2) or as the legacy
    num/channels/height/width (V1 files, arrays of at most 4 dims)."""
    array = np.asarray(array, "<f4")
    if legacy:
        dims = [1] * (4 - array.ndim) + list(array.shape)
        head = b"".join(field_bytes(n, d) for n, d in
                        zip((BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH), dims))
    else:
        packed = b"".join(varint_bytes(d) for d in array.shape)
        head = field_bytes(BLOB_SHAPE, field_bytes(SHAPE_DIM, packed))
    return head + field_bytes(BLOB_DATA, array.tobytes())


def net_bytes(layers, v1=False, name="fixture"):
    """A NetParameter of ``layers`` [(name, type, [arrays])] in the V1 or V2 format."""
    out = field_bytes(NET_NAME, name.encode())
    v1_codes = {kind: code for code, kind in V1_TYPES.items()}
    for layer_name, kind, blobs in layers:
        if v1:
            body = field_bytes(V1_NAME, layer_name.encode()) + field_bytes(V1_TYPE, v1_codes[kind])
            body += b"".join(field_bytes(V1_BLOBS, blob_bytes(b, legacy=True)) for b in blobs)
            out += field_bytes(NET_LAYERS_V1, body)
        else:
            body = (field_bytes(LAYER_NAME, layer_name.encode())
                    + field_bytes(LAYER_TYPE, kind.encode()))
            body += b"".join(field_bytes(LAYER_BLOBS, blob_bytes(b)) for b in blobs)
            out += field_bytes(NET_LAYER, body)
    return out

