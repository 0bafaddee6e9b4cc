"""Comparing weights exactly."""
import numpy as np


def state_numpy(layer):
    """{key: numpy copy} of a layer's state dict."""
    return {k: v.numpy() for k, v in layer.state_dict().items()}


def assert_same(actual, expected, key=""):
    """Exact equality; fast on the 37M-element fc6 (numpy's detailed report
    only when they differ)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape or not np.array_equal(actual, expected):
        np.testing.assert_array_equal(actual, expected, err_msg=key)


def check_backbone_load(model, path, alexnet_state):
    """model.load_backbone(path) must set features.* and fc6/fc7
    (classifier_plus.1/.4) to ``alexnet_state`` (torchvision keys, Paddle
    shapes) exactly and leave the hash layer (classifier_plus.6) alone."""
    before = state_numpy(model)
    model.load_backbone(path)
    got = state_numpy(model)
    for key, value in got.items():
        if key.startswith("classifier_plus.6."):
            # exact: the hash layer is not loaded
            assert_same(value, before[key], key)
        else:
            # exact: a copy of the saved weights
            assert_same(value, alexnet_state[key.replace("classifier_plus.", "classifier.")], key)
    assert not np.array_equal(before["features.0.weight"], got["features.0.weight"])
