"""scripts.convert_alexnet: torchvision and paddle.vision AlexNet weights ->
this project's backbone file, checked on synthetic state dicts."""
import numpy as np
import paddle
import pytest

from support.cli import run_in_process, run_python
from support.errors import assert_cli_error, user_error
from support.weights import assert_same, check_backbone_load, state_numpy
from models.alexnet import AlexNet
from models.convert import convert, read_state
from models.alexnet import AlexNetHash

# torchvision's alexnet: Linear weights are [out, in]
TORCH_SHAPES = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}


@pytest.fixture(scope="module")
def torch_state():
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s, dtype=np.float32) * 0.01 for k, s in TORCH_SHAPES.items()}


@pytest.fixture(scope="module")
def converted(torch_state):
    return convert(torch_state)


def test_torchvision_keys_kept(torch_state, converted):
    assert set(converted) == set(TORCH_SHAPES)


def paddle_layout(torch_state):
    """What a torchvision state dict must become: Linear weights transposed."""
    return {k: (v.T if k.startswith("classifier.") and k.endswith(".weight") else v)
            for k, v in torch_state.items()}


def test_torchvision_linear_weights_transposed(torch_state, converted):
    for key, value in paddle_layout(torch_state).items():
        assert converted[key].dtype == np.float32, key
        assert_same(converted[key], value, key)


def test_converted_matches_our_alexnet_shapes(converted):
    ours = {k: list(v.shape) for k, v in AlexNet(num_classes=1000).state_dict().items()}
    assert {k: list(v.shape) for k, v in converted.items()} == ours


# ------------------------------------------------------------- paddle.vision
@pytest.fixture(scope="module")
def paddle_vision():
    """The layout paddle.vision.models.alexnet really has (its own state dict)."""
    paddle.seed(0)
    model = paddle.vision.models.alexnet(pretrained=False)
    model.eval()
    return model


# paddle.vision AlexNet layer -> torchvision layer (written from both
# libraries' layer orders: conv1..conv5 are features.0/3/6/8/10, fc6..fc8
# classifier.1/4/6)
PADDLE_VISION_TO_TORCH = {
    "_conv1._conv": "features.0", "_conv2._conv": "features.3", "_conv3": "features.6",
    "_conv4": "features.8", "_conv5._conv": "features.10",
    "_fc6": "classifier.1", "_fc7": "classifier.4", "_fc8": "classifier.6",
}


def test_paddle_vision_keys_map_to_torchvision(paddle_vision):
    src = state_numpy(paddle_vision)
    out = convert(src)
    assert set(out) == set(TORCH_SHAPES)
    for key, value in src.items():
        layer, param = key.rsplit(".", 1)
        mapped = f"{PADDLE_VISION_TO_TORCH[layer]}.{param}"
        # already Paddle shapes; fc6/fc7 weights halved for the dropout mode
        # (see test_paddle_vision_conversion_computes_the_same_function)
        scale = 0.5 if mapped in ("classifier.1.weight", "classifier.4.weight") else 1.0
        assert_same(out[mapped], value * np.float32(scale), key)


def test_paddle_vision_synthetic_layout():
    """Keys as paddle.vision names them (``_conv1._conv.weight``, ``_fc6.weight``)."""
    paddle_shapes = {k: (s[::-1] if k.startswith("classifier.") and k.endswith(".weight") else s)
                     for k, s in TORCH_SHAPES.items()}
    names = {"features.0": "_conv1._conv", "features.3": "_conv2._conv",
             "features.6": "_conv3._conv", "features.8": "_conv4._conv",
             "features.10": "_conv5._conv", "classifier.1": "_fc6", "classifier.4": "_fc7",
             "classifier.6": "_fc8"}
    src = {}
    for key, shape in paddle_shapes.items():
        layer, param = key.rsplit(".", 1)
        src[f"{names[layer]}.{param}"] = np.full(shape, len(src), dtype=np.float32)
    out = convert(src)
    for i, key in enumerate(paddle_shapes):
        expected = i * (0.5 if key in ("classifier.1.weight", "classifier.4.weight") else 1.0)
        assert out[key].shape == paddle_shapes[key] and np.all(out[key] == expected), key


@pytest.mark.float_sensitive
def test_paddle_vision_conversion_computes_the_same_function(paddle_vision):
    """Converted weights in our AlexNet give paddle.vision's eval outputs.
    paddle.vision's AlexNet uses Dropout(mode="downscale_in_infer") (eval
    multiplies by 0.5 before fc6 and fc7), ours the default upscale_in_train
    (eval is the identity), so a faithful conversion must account for it."""
    ours = AlexNet(num_classes=1000)
    ours.set_state_dict({k: paddle.to_tensor(v)
                         for k, v in convert(state_numpy(paddle_vision)).items()})
    ours.eval()
    x = paddle.to_tensor(np.random.default_rng(1).uniform(0, 3, (2, 3, 224, 224)).astype("float32"))
    with paddle.no_grad():
        expected, got = paddle_vision(x).numpy(), ours(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


# ------------------------------------------------------------- bad input
def test_wrong_shape_is_user_error():
    message = user_error(convert, {"features.0.weight": np.zeros((64, 3, 5, 5), np.float32)})
    assert "features.0.weight" in message and "[64, 3, 11, 11]" in message


def test_already_transposed_linear_is_user_error(torch_state):
    state = dict(torch_state)
    state["classifier.1.weight"] = np.zeros((9216, 4096), np.float32)  # Paddle shape in a torch file
    assert "classifier.1.weight" in user_error(convert, state)


def test_missing_layer_is_user_error(torch_state):
    state = {k: v for k, v in torch_state.items() if not k.startswith("classifier.4")}
    assert "classifier.4.weight" in user_error(convert, state)


def test_unknown_paddle_vision_key_is_user_error():
    state = {"_conv1._conv.weight": np.zeros((64, 3, 11, 11), np.float32),
             "_head.weight": np.zeros((3, 3), np.float32)}
    assert "_head.weight" in user_error(convert, state)


def test_pth_without_torch_or_missing_file(tmp_path):
    assert "not found" in user_error(read_state, str(tmp_path / "alexnet.pth"))
    (tmp_path / "alexnet.pth").write_bytes(b"x")
    import importlib.util
    if importlib.util.find_spec("torch") is None:  # not a dependency: say how to get it
        assert "pip install torch" in user_error(read_state, str(tmp_path / "alexnet.pth"))


# ------------------------------------------------------------- the CLI
def test_cli_converts_pdparams_and_hashnet_loads_it(torch_state, tmp_path):
    src, dst = str(tmp_path / "torch_layout.pdparams"), str(tmp_path / "AlexNet_pretrained.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in torch_state.items()}, src)
    proc = run_python("-m", "scripts.convert_alexnet", src, dst)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert dst in proc.stdout
    paddle.seed(2)
    check_backbone_load(AlexNetHash(32), dst, paddle_layout(torch_state))


def test_cli_missing_source(tmp_path):
    from scripts import convert_alexnet   # in-process: the test above runs its __main__
    proc = run_in_process(convert_alexnet.main, tmp_path / "none.pdparams", tmp_path / "out.pdparams")
    assert_cli_error(proc, "none.pdparams")
