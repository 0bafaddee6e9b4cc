"""BVLC's ``bvlc_reference_caffenet.caffemodel`` -> ``--arch caffenet`` keys,
read without Caffe (utils/base/caffe_proto.py), from files in either the V1
(``layers``) or the V2 (``layer``) format.

Caffe names the layers as models/caffenet.py does. Convolution weights are
[out, in/group, k, k] in both; InnerProduct weights are [out, in] in Caffe
(legacy V1 blobs: [1, 1, out, in]) and become Paddle's [in, out]; biases are
flattened. fc8 (the 1000-way classifier) has no counterpart and is dropped.
"""
import math

import numpy as np

from utils.base.caffe_proto import read_net
from utils.base.errors import UserError

CONVOLUTIONS = ("conv1", "conv2", "conv3", "conv4", "conv5")
INNER_PRODUCTS = ("fc6", "fc7")


def caffenet_state(layers, source="the caffemodel"):
    """{layer name: (type, [weight, bias])} (read_net) -> {key: float32 array}."""
    state = {}
    for name in CONVOLUTIONS + INNER_PRODUCTS:
        if name not in layers or len(layers[name][1]) != 2:
            raise UserError(f"{source} has no {name} with weight and bias: not a CaffeNet model")
        weight, bias = layers[name][1]
        if name in INNER_PRODUCTS:
            if weight.ndim < 2 or math.prod(weight.shape[:-2]) != 1:
                raise UserError(f"{source}: {name} weight has shape {list(weight.shape)}, not "
                                "[out, in] (or [1, 1, out, in]): not a CaffeNet model")
            weight = weight.reshape(weight.shape[-2:]).T   # Caffe [out, in] -> Paddle [in, out]
        state[f"{name}.weight"] = np.ascontiguousarray(weight, np.float32)
        state[f"{name}.bias"] = np.ascontiguousarray(bias.reshape(-1), np.float32)
    return state


def convert_caffemodel(path):
    return caffenet_state(read_net(path), path)
