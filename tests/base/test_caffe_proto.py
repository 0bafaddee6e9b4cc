"""utils/base/caffe_proto.py on malformed files: a .caffemodel or a mean
.binaryproto whose fields have the wrong wire type, a size that does not
fit or a shape that does not hold its values is one line, never a
traceback or an allocation the file does not hold."""
import numpy as np
import pytest
from hypothesis import given

from models.caffe_convert import convert_caffemodel
from support.errors import user_error
from support.fuzz import FUZZ, mutated, one_line_or_result
from utils.base import caffe_proto
from utils.base.caffe_proto import (BLOB_DATA, BLOB_SHAPE, FIXED64, LAYER_BLOBS, LAYER_NAME,
                                    LAYER_TYPE, NET_LAYER, NET_LAYERS_V1, SHAPE_DIM, V1_BLOBS,
                                    V1_NAME, V1_TYPE, blob_bytes, field_bytes, net_bytes, varint_bytes)


def layers_of(rng):
    """A convolution and an inner product, as CaffeNet names them."""
    return [("conv1", "Convolution", [rng.standard_normal((2, 3, 1, 1)).astype(np.float32),
                                      rng.standard_normal(2).astype(np.float32)]),
            ("fc6", "InnerProduct", [rng.standard_normal((3, 2)).astype(np.float32),
                                     rng.standard_normal(3).astype(np.float32)])]


SEEDS = [net_bytes(layers_of(np.random.default_rng(0))),
         net_bytes(layers_of(np.random.default_rng(1)), v1=True),
         blob_bytes(np.ones((3, 2, 2), np.float32), legacy=True)]


def layer_with(field, v1=False):
    """A layer entry of a net holding ``field`` (encoded) besides its name and a blob."""
    name = field_bytes(V1_NAME if v1 else LAYER_NAME, b"conv1")
    blob = field_bytes(V1_BLOBS if v1 else LAYER_BLOBS, blob_bytes(np.ones(2, np.float32), v1))
    return field_bytes(NET_LAYERS_V1 if v1 else NET_LAYER, name + field + blob)


@pytest.mark.parametrize("layer", [
    layer_with(field_bytes(LAYER_TYPE, 10 ** 9)),   # a string field as a varint
    layer_with(field_bytes(V1_TYPE, b"Convolution"), v1=True),   # an enum as a string
    layer_with(field_bytes(LAYER_NAME, 7)),
    field_bytes(NET_LAYER, field_bytes(LAYER_BLOBS, field_bytes(BLOB_DATA, b"\0\0\0"))),
    field_bytes(NET_LAYER, field_bytes(LAYER_BLOBS, varint_bytes(BLOB_DATA << 3 | FIXED64)
                                       + bytes(8))),
    field_bytes(NET_LAYER, field_bytes(LAYER_BLOBS, field_bytes(
        BLOB_SHAPE, field_bytes(SHAPE_DIM, varint_bytes(2 ** 62) + varint_bytes(2 ** 62))))),
    field_bytes(NET_LAYER, field_bytes(LAYER_BLOBS, field_bytes(BLOB_SHAPE, 5))),
], ids=["type as varint", "V1 type as string", "name as varint", "data not whole floats",
        "data as fixed64", "shape of 2^124 values", "shape as varint"])
def test_malformed_fields_are_one_line(tmp_path, layer):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(field_bytes(caffe_proto.NET_NAME, b"x") + layer)
    assert "not a readable .caffemodel" in user_error(caffe_proto.read_net, str(path))


@pytest.mark.parametrize("blob", [field_bytes(BLOB_SHAPE, 5),            # a shape as a varint
                                  blob_bytes(np.ones((2, 3), np.float32))],   # no [1, C, H, W]
                         ids=["shape as varint", "not [1, C, H, W]"])
def test_a_bad_mean_file_says_to_fetch_it_again(tmp_path, blob):
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob)
    message = user_error(caffe_proto.read_mean_file, str(path))
    assert message.endswith("delete it and fetch it again") and "\n" not in message


def test_an_inner_product_that_is_not_a_matrix_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    layers = [(name, "Convolution", [np.ones((1, 1, 1, 1), np.float32), np.ones(1, np.float32)])
              for name in ("conv1", "conv2", "conv3", "conv4", "conv5")]
    layers += [("fc6", "InnerProduct", [rng.standard_normal(4).astype(np.float32),
                                        np.ones(1, np.float32)]),
               ("fc7", "InnerProduct", [np.ones((1, 1), np.float32), np.ones(1, np.float32)])]
    path = tmp_path / "flat_fc6.caffemodel"
    path.write_bytes(net_bytes(layers))
    assert "fc6 weight has shape [4]" in user_error(convert_caffemodel, str(path))


@FUZZ
@given(data=mutated(SEEDS))
def test_fuzzed_caffemodel_is_read_or_refused_in_one_line(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzzed.caffemodel"
    path.write_bytes(data)
    one_line_or_result(convert_caffemodel, str(path))


@FUZZ
@given(data=mutated(SEEDS))
def test_fuzzed_mean_file_is_read_or_refused_in_one_line(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzzed.binaryproto"
    path.write_bytes(data)
    mean = one_line_or_result(caffe_proto.read_mean_file, str(path))
    assert mean is None or (mean.ndim == 3 and mean.dtype == np.float32)
