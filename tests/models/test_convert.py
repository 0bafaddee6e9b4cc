"""models/convert.py and scripts.convert_backbone (scripts.convert_alexnet):
torchvision's and paddle.vision's ImageNet weights of AlexNet, VGG16 and
ResNet50 -> each arch's backbone file, checked on synthetic state dicts in
each library's layout, built here with numpy (no torch needed)."""
import numpy as np
import paddle
import pytest

from support.cli import run_in_process, run_python
from support.errors import assert_cli_error, user_error
from support.weights import assert_same, check_backbone_load, state_numpy
import models
from models.alexnet import AlexNet, AlexNetHash
from models.convert import BACKBONES, convert, read_state

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
        # exact: a copy, transposed
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
        # exact: a copy, or × 0.5 (a power of 2) in float32
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
        # exact: small integers, × 0.5 at most: representable in float32
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


# ------------------------------------------------------------- VGG16 and ResNet50
def torchvision_vgg16_shapes():
    """torchvision's vgg16 (configuration D): 13 3x3 convs in ``features``
    (each followed by a ReLU, each block by a max-pool: the indices count
    them), then Linear layers [out, in] at classifier.0, .3 and .6."""
    shapes, index, channels = {}, 0, 3
    for block in ([64] * 2, [128] * 2, [256] * 3, [512] * 3, [512] * 3):
        for width in block:
            shapes[f"features.{index}.weight"] = (width, channels, 3, 3)
            shapes[f"features.{index}.bias"] = (width,)
            channels, index = width, index + 2      # the conv and its ReLU
        index += 1                                  # the block's max-pool
    for i, (n_out, n_in) in zip((0, 3, 6), ((4096, 512 * 7 * 7), (4096, 4096), (1000, 4096))):
        shapes[f"classifier.{i}.weight"], shapes[f"classifier.{i}.bias"] = (n_out, n_in), (n_out,)
    return shapes


def torch_batch_norm(prefix, n):
    return {f"{prefix}.{p}": (n,) for p in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def torchvision_resnet50_shapes():
    """torchvision's resnet50: conv1/bn1, then 3, 4, 6, 3 bottlenecks (1x1,
    3x3, 1x1 convs, each with its batch norm; a 1x1 conv + batch norm
    ``downsample`` in each stage's first), then fc [1000, 2048]."""
    shapes = {"conv1.weight": (64, 3, 7, 7), **torch_batch_norm("bn1", 64)}
    channels = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            convs = {"conv1": (width, channels, 1, 1), "conv2": (width, width, 3, 3),
                     "conv3": (4 * width, width, 1, 1)}
            for i, (conv, shape) in enumerate(convs.items(), start=1):
                shapes[f"{prefix}.{conv}.weight"] = shape
                shapes.update(torch_batch_norm(f"{prefix}.bn{i}", shape[0]))
            if block == 0:
                shapes[f"{prefix}.downsample.0.weight"] = (4 * width, channels, 1, 1)
                shapes.update(torch_batch_norm(f"{prefix}.downsample.1", 4 * width))
            channels = 4 * width
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 2048), (1000,)
    return shapes


def torchvision_state(shapes, seed):
    """Random float32 tensors, uniform (drawn faster than normal ones: VGG16
    has 138 M), torch's int64 counters a count."""
    rng = np.random.default_rng(seed)
    return {k: (np.int64(7) if k.endswith("num_batches_tracked")
                else rng.random(shape, dtype=np.float32) - 0.5) for k, shape in shapes.items()}


def vgg16_expected(state):
    """What the --arch vgg16 file must hold: the same keys, Linear weights
    transposed, no 1000-way classifier.6."""
    return {k: (v.T if k.startswith("classifier.") and k.endswith(".weight") else v)
            for k, v in state.items() if not k.startswith("classifier.6.")}


def resnet50_expected(state):
    """What the --arch resnet50 file must hold: every tensor behind
    ``backbone.``, running statistics under Paddle's names, no counters, no fc."""
    names = {"running_mean": "_mean", "running_var": "_variance"}
    out = {}
    for key, value in state.items():
        layer, param = key.rsplit(".", 1)
        if layer != "fc" and param != "num_batches_tracked":
            out[f"backbone.{layer}.{names.get(param, param)}"] = value
    return out


@pytest.fixture(scope="module")
def torchvision_resnet50():
    return torchvision_state(torchvision_resnet50_shapes(), seed=5)


def assert_all_same(got, expected):
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == np.float32, key
        assert_same(got[key], value, key)   # exact: a conversion copies (renames, transposes)


def test_torchvision_vgg16_converts_bit_exactly():
    state = torchvision_state(torchvision_vgg16_shapes(), seed=4)
    assert_all_same(BACKBONES["vgg16"](state), vgg16_expected(state))


def test_torchvision_resnet50_converts_bit_exactly(torchvision_resnet50):
    assert_all_same(BACKBONES["resnet50"](torchvision_resnet50), resnet50_expected(torchvision_resnet50))


def test_paddle_vision_vgg16_keeps_its_keys_but_the_classifier():
    """paddle.vision's vgg16 has the arch's keys and Paddle's shapes: only
    the 1000-way classifier.6 goes (zeros: allocated lazily, 0.5 GB)."""
    with paddle.LazyGuard():   # the shapes only
        own = {k: np.zeros(v.shape, np.float32)
               for k, v in models.build("vgg16", 16).state_dict().items() if not k.startswith("hash.")}
    source = dict(own, **{"classifier.6.weight": np.zeros((4096, 1000), np.float32),
                          "classifier.6.bias": np.zeros(1000, np.float32)})
    assert set(BACKBONES["vgg16"](source)) == set(own)


def test_cli_converts_torchvision_resnet50_and_the_arch_loads_it(torchvision_resnet50, tmp_path):
    from scripts import convert_backbone
    src, dst = tmp_path / "torch_layout.pdparams", tmp_path / "resnet50_torchvision.pdparams"
    paddle.save({k: paddle.to_tensor(v) for k, v in torchvision_resnet50.items()}, str(src))
    proc = run_in_process(convert_backbone.main, "--arch", "resnet50", src, dst)
    assert proc.returncode == 0 and str(dst) in proc.stdout, proc.stderr[-2000:]
    model = models.build("resnet50", 16)
    hash_before = model.hash_layer.weight.numpy().copy()
    model.load_backbone(str(dst))
    got = state_numpy(model)
    # exact: the backbone's copies loaded (renamed, transposed); the hash layer untouched
    for key, value in resnet50_expected(torchvision_resnet50).items():
        assert_same(got[key], value, key)
    assert_same(got["hash.weight"], hash_before, "hash.weight")


def test_a_state_dict_of_another_network_is_one_line(torchvision_resnet50):
    """A layer missing (another depth), or torchvision's vgg16_bn's extra
    batch norms: named, one line, nothing written."""
    state = {k: v for k, v in torchvision_resnet50.items() if not k.startswith("layer4.2.")}
    message = user_error(BACKBONES["resnet50"], state)
    assert "backbone.layer4.2.conv1.weight missing" in message and "\n" not in message
    shapes = dict(torchvision_vgg16_shapes(), **torch_batch_norm("features.1", 64))
    with_batch_norm = {k: np.zeros(shape, np.float32) for k, shape in shapes.items()}  # lazy
    assert "unexpected key features.1.weight" in user_error(BACKBONES["vgg16"], with_batch_norm)
