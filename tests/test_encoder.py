"""utils/inference/encoder.py: the fast CPU encoder (Paddle Inference + oneDNN on an
export of the current weights) against dygraph, and its dygraph fallback.

The model is the random HashNet of test_predict, its hash-layer bias centred
on the database, and its hash layer scaled so that z has unit spread like a
trained model's (a random AlexNet's z are all within ~1e-3 of each other).
"""
import logging
import os

import numpy as np
import paddle
import pytest

from conftest import CROP, RESIZE
from utils.inference.predictor import InferenceModel
from test_predict import database_batch, make_checkpoint
from utils.inference import encoder
from utils.datasets import ImageList, build_loader


@pytest.fixture(scope="module")
def centred(demo, tmp_path_factory):
    model = make_checkpoint(str(tmp_path_factory.mktemp("enc") / "hashnet_16"), demo)
    hash_layer = model.classifier_plus[6]
    scale = 1.0 / float(np.std(encoder.dygraph_forward(model)(database_batch(demo))))
    hash_layer.weight.set_value(hash_layer.weight.numpy() * scale)
    hash_layer.bias.set_value(hash_layer.bias.numpy() * scale)
    return model


def database_loader(demo, batch_size=10):
    db = ImageList(os.path.join(demo.list_dir, "database.txt"), demo.image_dir, 10,
                   train=False, resize_size=RESIZE, crop_size=CROP)
    return build_loader(db, batch_size, shuffle=False)


def test_fast_encoder_matches_dygraph(demo, centred):
    x = database_batch(demo)
    z_dygraph = encoder.dygraph_forward(centred)(x)
    forward = encoder.fastest_forward(centred, encoder.MIN_IMAGES_TO_EXPORT)
    assert isinstance(forward.__self__, InferenceModel)   # the fast path on CPU
    z_fast = forward(x)
    np.testing.assert_array_equal(encoder.inference_forward(centred)(x), z_fast)  # deterministic
    assert np.abs(z_fast - z_dygraph).max() <= 1e-3
    assert np.median(np.abs(z_dygraph)) > 0.1   # a real test: z not all within noise of 0
    agreement = (np.sign(z_fast) == np.sign(z_dygraph)).mean()
    assert agreement >= 0.999
    codes, labels, indices = encoder.encode_batches(forward, database_loader(demo))
    assert (codes == np.where(z_dygraph >= 0, 1, -1)).mean() >= 0.999
    assert indices.tolist() == list(range(len(x))) and labels.shape == (len(x), 10)


def test_export_leaves_the_dygraph_model_as_it_was(demo, centred):
    x = database_batch(demo)[:4]
    before = {k: v.numpy().copy() for k, v in centred.state_dict().items()}
    z_before = encoder.dygraph_forward(centred)(x)
    encoder.inference_forward(centred)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in centred.state_dict().items())
    np.testing.assert_array_equal(encoder.dygraph_forward(centred)(x), z_before)


def test_small_sets_stay_in_dygraph(centred):
    forward = encoder.fastest_forward(centred, encoder.MIN_IMAGES_TO_EXPORT - 1)
    assert not hasattr(forward, "__self__")


def test_failed_export_falls_back_to_dygraph_with_one_log_line(demo, centred, monkeypatch,
                                                               caplog):
    def broken(model):
        raise RuntimeError("no space left on device")
    monkeypatch.setattr(encoder, "inference_forward", broken)
    monkeypatch.setattr(encoder, "MIN_IMAGES_TO_EXPORT", 0)   # the tiny set takes the fast path
    logger = logging.getLogger("hashnet")
    monkeypatch.setattr(logger, "propagate", True)   # let caplog see it
    with caplog.at_level(logging.WARNING, logger="hashnet"):
        codes, _, _ = encoder.encode_dataset(centred, database_loader(demo))
    lines = [r.getMessage() for r in caplog.records if r.name == "hashnet"]
    assert len(lines) == 1 and "no space left on device" in lines[0] and "dygraph" in lines[0]
    with paddle.no_grad():
        expected = np.where(centred(paddle.to_tensor(database_batch(demo))).numpy() >= 0, 1, -1)
    np.testing.assert_array_equal(codes, expected)
