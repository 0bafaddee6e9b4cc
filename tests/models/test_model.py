"""HashNet's layout (spec §1 table), forward shapes, binary codes, init and
the hash layer's 10x learning rate seen in one optimizer step."""
import math

import numpy as np
import paddle
import pytest

from models.alexnet import AlexNetHash
from utils.retrieval.codes import sign_codes
from utils.methods import method_class
from utils.training.schedules import build_optimizer, hash_layer_groups


def spec_shapes(bit):
    """spec §1: every parameter of the reference's released weights."""
    return {
        "features.0.weight": [64, 3, 11, 11], "features.0.bias": [64],
        "features.3.weight": [192, 64, 5, 5], "features.3.bias": [192],
        "features.6.weight": [384, 192, 3, 3], "features.6.bias": [384],
        "features.8.weight": [256, 384, 3, 3], "features.8.bias": [256],
        "features.10.weight": [256, 256, 3, 3], "features.10.bias": [256],
        "classifier_plus.1.weight": [9216, 4096], "classifier_plus.1.bias": [4096],
        "classifier_plus.4.weight": [4096, 4096], "classifier_plus.4.bias": [4096],
        "classifier_plus.6.weight": [4096, bit], "classifier_plus.6.bias": [bit],
    }


@pytest.fixture(scope="module")
def model64():
    paddle.seed(0)
    model = AlexNetHash(64)
    model.eval()
    return model


@pytest.mark.parametrize("bit", [16, 32, 48])
def test_state_dict_matches_spec_table(bit):
    state = AlexNetHash(bit).state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == spec_shapes(bit)


def test_state_dict_matches_spec_table_64(model64):
    assert {k: list(v.shape) for k, v in model64.state_dict().items()} == spec_shapes(64)


@pytest.mark.parametrize("size", [224, 64])
def test_forward_shape(model64, size):
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 3, size, size)).astype("float32"))
    with paddle.no_grad():
        z = model64(x)
    assert list(z.shape) == [2, 64]
    assert z.dtype == paddle.float32
    assert np.all(np.isfinite(z.numpy()))


def test_forward_is_real_valued_not_binary(model64):
    x = paddle.to_tensor(np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype("float32"))
    with paddle.no_grad():
        z = model64(x).numpy()
    assert len(np.unique(np.abs(z))) > 2  # not sign(z) or tanh saturated


def test_sign_codes_maps_zero_to_plus_one():
    row = [[0.0, -0.0, 1e-30, -1e-30, 2.5, -3.0]]
    for z in (paddle.to_tensor(row), np.asarray(row, dtype=np.float32)):  # tensor or array
        codes = sign_codes(z)
        assert codes.dtype == np.int8
        np.testing.assert_array_equal(codes, [[1, 1, 1, -1, 1, -1]])
    assert set(np.unique(sign_codes(paddle.randn([50, 16])))) == {-1, 1}


def test_hash_layer_init(model64):
    w = model64.classifier_plus[6].weight.numpy()
    b = model64.classifier_plus[6].bias.numpy()
    assert w.std() == pytest.approx(0.01, rel=0.05)  # Normal(0, 0.01), 262k draws
    assert abs(w.mean()) < 1e-3
    assert not b.any()


@pytest.mark.parametrize("key,fan_in", [("features.0.weight", 3 * 11 * 11),
                                        ("features.10.bias", 256 * 9),
                                        ("classifier_plus.1.weight", 9216),
                                        ("classifier_plus.4.bias", 4096)])
def test_random_init_uniform_fan_in(model64, key, fan_in):
    value = model64.state_dict()[key].numpy()
    bound = 1 / math.sqrt(fan_in)
    assert np.abs(value).max() <= bound * (1 + 1e-6)
    assert np.abs(value).max() > 0.9 * bound
    assert value.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def first_step(optimizer_name, loss_of, keys, lr, **kwargs):
    """One optimizer step on a fresh 16-bit HashNet at 64 px; returns
    {key: (value before, grad, value after)} for the named parameters."""
    paddle.seed(1)
    model = AlexNetHash(16)
    groups = hash_layer_groups(model, method_class("hashnet").hash_lr)   # the reference recipe's
    opt = build_optimizer(optimizer_name, groups, lr, weight_decay=0.0, **kwargs)
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=(2, 3, 64, 64)).astype("float32"))
    loss_of(model(x)).backward()
    params = dict(model.named_parameters())
    before = {k: (params[k].numpy().copy(), params[k].grad.numpy().copy()) for k in keys}
    opt.step()
    return {k: (*before[k], params[k].numpy()) for k in keys}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_hash_layer_learns_ten_times_faster(momentum):
    """Momentum SGD without weight decay: the first update is lr_mult·lr·grad
    (velocity starts at 0), so hash layer deltas are 10·lr·grad, fc6/fc7 and
    conv deltas 1·lr·grad."""
    lr = 0.05
    target = paddle.to_tensor(np.random.default_rng(3).normal(size=(2, 16)).astype("float32"))
    keys = {"classifier_plus.6.weight": 10, "classifier_plus.6.bias": 10,
            "classifier_plus.4.weight": 1, "classifier_plus.1.bias": 1, "features.0.weight": 1}
    steps = first_step("sgd", lambda z: (z * target).sum(), keys, lr, momentum=momentum)
    for key, mult in keys.items():
        before, grad, after = steps[key]
        expected = -mult * lr * grad
        assert np.abs(grad).max() > 0, key
        # float32 parameters: the delta carries rounding of the parameter's size
        ulp = float(np.spacing(np.abs(before).max().astype(np.float32)))
        np.testing.assert_allclose(after - before, expected, rtol=1e-3, atol=2 * ulp, err_msg=key)
        assert np.abs(expected).max() > 100 * ulp, key  # the step is well above rounding


def test_hash_layer_ten_times_faster_with_adamw():
    """AdamW's first step is lr_mult·lr·g/(|g|+eps): the ratio to fc7's is 10."""
    lr = 1e-4
    keys = {"classifier_plus.6.weight": 10, "classifier_plus.4.weight": 1}
    steps = first_step("adamw", lambda z: z.sum(), keys, lr)
    for key, mult in keys.items():
        before, grad, after = steps[key]
        mask = np.abs(grad) > 1e-4  # well above Adam's eps: the step is ±mult·lr
        assert mask.sum() > 10, key
        np.testing.assert_allclose((after - before)[mask], -mult * lr * np.sign(grad[mask]),
                                   rtol=1e-3, err_msg=key)
