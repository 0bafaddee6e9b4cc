"""A random HashNet whose codes differ between the demo images.

A random AlexNet maps every image to nearly the same hash-layer output, so
all codes would tie. ``make_checkpoint`` keeps the random weights but
centres the hash layer on the median output over the database (every bit
then splits the database in half and codes differ between images) and
scales it to unit spread, so that z is large next to float rounding.
"""
import types

import numpy as np
import paddle

import models
from support.demo_set import database_batch
from utils.inference.export import allowed_difference
from utils.retrieval.codes import sign_codes

BIT = 16


def make_checkpoint(prefix, demo, bit=BIT, seed=0, arch="alexnet"):
    """Save a random HashNet (hash layer centred and scaled on the demo database) at
    ``prefix``.pdparams; returns the model (eval mode)."""
    paddle.seed(seed)
    model = models.build(arch, bit)
    model.eval()
    with paddle.no_grad():
        z = model(paddle.to_tensor(database_batch(demo))).numpy()
        # centred on the median, then scaled to unit spread per bit: the same
        # codes, but |z| ~ 1 (unscaled it is ~1e-4, the export check's tolerance)
        centre = np.median(z, axis=0)
        scale = 1.0 / np.maximum((z - centre).std(axis=0), 1e-12)
        hash_layer = model.hash_layer
        hash_layer.weight.set_value((hash_layer.weight.numpy() * scale).astype("float32"))
        hash_layer.bias.set_value((-centre * scale).astype("float32"))
    paddle.save(model.state_dict(), prefix + ".pdparams")
    return model


def codes_of(model, x):
    with paddle.no_grad():
        return sign_codes(model(paddle.to_tensor(x)))


def assert_codes_agree(codes, z):
    """``codes`` from other kernels, batch shapes or thread counts than ``z``:
    sign(z), except where |z| <= allowed_difference(z), the export check's
    rule (docs/contributing.md, Floats)."""
    differ = np.asarray(codes) != sign_codes(z)
    assert not (differ & (np.abs(z) > allowed_difference(z))).any(), np.argwhere(differ)


def brute_topk(codes, q, k):
    """Reference ranking: Hamming distance, ties by database index."""
    dist = (codes.shape[1] - codes.astype(np.int64) @ codes[q].astype(np.int64)) // 2
    order = np.argsort(dist, kind="stable")[:k]
    return order.tolist(), dist[order].tolist()


def centred_checkpoint(demo, folder, arch="alexnet"):
    """The checkpoint ``prefix``, its ``model``, the database ``codes`` and a
    ``query`` index: a test image (so also in the database) whose code no
    other image has."""
    prefix = str(folder / "hashnet_16")
    model = make_checkpoint(prefix, demo, arch=arch)
    codes = codes_of(model, database_batch(demo))
    unique = [i for i in range(1, demo.counts["test"])
              if (codes == codes[i]).all(axis=1).sum() == 1]
    assert unique, "the centred random model should give most images their own code"
    return types.SimpleNamespace(prefix=prefix, model=model, codes=codes, query=unique[0])
