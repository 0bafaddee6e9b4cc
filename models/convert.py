"""ImageNet weights in other layouts -> this project's backbone keys.

Sources: torchvision's state dicts (.pth; torch is imported only to read one,
never at training time) or paddle.vision's weights (.pdparams), of AlexNet,
VGG16 and ResNet50 (``BACKBONES``). Torch Linear weights are [out, in] and
are transposed to Paddle's [in, out]. Paddle's AlexNet names its layers
differently; they are renamed to torchvision's keys (``AlexNetHash`` maps
those at load). VGG16's keys are the same in both libraries; ResNet50's too
but for torchvision's batch-norm statistics (``running_mean``/``running_var``
-> ``_mean``/``_variance``). The 1000-way classifiers of VGG16 and ResNet50
are dropped, and their keys are the arch's own. The command line is
scripts/convert_backbone.py (scripts/convert_alexnet.py for AlexNet).
"""
import os

import numpy as np

from utils.base.errors import UserError

# paddle.vision.models.AlexNet layer names -> torchvision keys (conv3/conv4
# are plain Conv2D there, the others conv+pool blocks with an inner _conv)
PADDLE_VISION_KEYS = {
    "_conv1._conv": "features.0", "_conv2._conv": "features.3",
    "_conv3": "features.6", "_conv4": "features.8",
    "_conv3._conv": "features.6", "_conv4._conv": "features.8",  # older layouts
    "_conv5._conv": "features.10",
    "_fc6": "classifier.1", "_fc7": "classifier.4", "_fc8": "classifier.6",
}
# paddle.vision's AlexNet drops out in "downscale_in_infer" mode (inputs to
# fc6/fc7 halved at inference); ours upscales in training instead, so the
# weights reading a dropped-out input are halved to compute the same function.
DOWNSCALED_IN_INFER = ("classifier.1.weight", "classifier.4.weight")
EXPECTED_SHAPES = {  # Paddle shapes of the converted weights
    "features.0.weight": [64, 3, 11, 11], "features.3.weight": [192, 64, 5, 5],
    "features.6.weight": [384, 192, 3, 3], "features.8.weight": [256, 384, 3, 3],
    "features.10.weight": [256, 256, 3, 3], "classifier.1.weight": [9216, 4096],
    "classifier.4.weight": [4096, 4096], "classifier.6.weight": [4096, 1000],
}


def from_torchvision(state):
    """torchvision AlexNet (numpy arrays) -> Paddle layout: transpose Linear weights."""
    out = {}
    for key, value in state.items():
        value = np.asarray(value, dtype=np.float32)
        if key.startswith("classifier.") and key.endswith(".weight"):
            value = value.T
        out[key] = np.ascontiguousarray(value)
    return out


def from_paddle_vision(state):
    """paddle.vision AlexNet -> torchvision key names (shapes already Paddle's)."""
    out = {}
    for key, value in state.items():
        prefix, param = key.rsplit(".", 1)
        if prefix not in PADDLE_VISION_KEYS:
            raise UserError(f"unexpected key {key} in a paddle.vision AlexNet file")
        out[f"{PADDLE_VISION_KEYS[prefix]}.{param}"] = np.asarray(value, dtype=np.float32)
    for key in DOWNSCALED_IN_INFER:
        if key in out:
            out[key] = out[key] * 0.5
    return out


def convert(state):
    """Either source format -> {torchvision key: Paddle-shaped float32 array}."""
    if any(k.startswith("_conv1") for k in state):
        out = from_paddle_vision(state)
    else:
        out = from_torchvision(state)
    for key, shape in EXPECTED_SHAPES.items():
        if key not in out:
            raise UserError(f"{key} missing: not an AlexNet state dict")
        if list(out[key].shape) != shape:
            raise UserError(f"{key} has shape {list(out[key].shape)} after conversion, expected {shape}")
    return out


def torch_linear_layout(state, key):
    """Whether ``state`` holds Linear weight ``key`` as torch does, [out, in]
    (its shape is [in, out] in Paddle's), judged by its bias: bias length = out."""
    return (key in state and np.ndim(state[key]) == 2
            and np.shape(state[key])[0] == np.size(state[key.replace(".weight", ".bias")]))


def vgg16_state(state):
    """torchvision's or paddle.vision's vgg16 -> ``--arch vgg16`` keys: the
    same names, torchvision's Linear weights transposed, classifier.6 gone."""
    transpose = torch_linear_layout(state, "classifier.0.weight")
    out = {}
    for key, value in state.items():
        if key.startswith("classifier.6."):
            continue
        value = np.asarray(value, dtype=np.float32)
        if transpose and key.startswith("classifier.") and key.endswith(".weight"):
            value = value.T
        out[key] = np.ascontiguousarray(value)
    return out


TORCH_BATCH_NORM = {"running_mean": "_mean", "running_var": "_variance"}


def resnet50_state(state):
    """torchvision's or paddle.vision's resnet50 -> ``--arch resnet50`` keys:
    behind ``backbone.``, torchvision's batch-norm statistics renamed, its
    ``num_batches_tracked`` counters and the 1000-way fc gone."""
    out = {}
    for key, value in state.items():
        layer, param = key.rsplit(".", 1)
        if layer == "fc" or param == "num_batches_tracked":
            continue
        out[f"backbone.{layer}.{TORCH_BATCH_NORM.get(param, param)}"] = \
            np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    return out


def checked_against(arch, state):
    """``state`` holds exactly the ``arch`` backbone's keys (all but the hash
    layer's) in its shapes, else a UserError naming the first difference."""
    import paddle
    from models.registry import BITS, build
    with paddle.LazyGuard():   # the keys and shapes, without initialising 138 M weights
        model = build(arch, BITS[0])
    label = model.label
    hash_prefix = next(f"{name}." for name, layer in model.named_sublayers()
                       if layer is model.hash_layer)
    own = {k: list(v.shape) for k, v in model.state_dict().items() if not k.startswith(hash_prefix)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(f"not a torchvision or paddle.vision {label} state dict: "
                        + (f"{missing[0]} missing" if missing else f"unexpected key {unexpected[0]}")
                        + f" after conversion ({len(missing)} missing, {len(unexpected)} unexpected)")
    for key, shape in own.items():
        if list(state[key].shape) != shape:
            raise UserError(f"{key} has shape {list(state[key].shape)} after conversion, "
                            f"expected {shape} (--arch {arch})")
    return state


# arch -> its converter (either source -> the arch's backbone file)
BACKBONES = {
    "alexnet": convert,
    "vgg16": lambda state: checked_against("vgg16", vgg16_state(state)),
    "resnet50": lambda state: checked_against("resnet50", resnet50_state(state)),
}


def read_state(path):
    if not os.path.isfile(path):
        raise UserError(f"{path} not found")
    if path.endswith((".pth", ".pt")):
        try:
            import torch
        except ImportError:
            raise UserError("reading a .pth needs torch: pip install torch (only for this conversion)")
        # weights_only: torch's own restricted unpickler (tensors and containers)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a refused or broken file
            raise UserError(f"{path} is refused or unreadable by torch.load(weights_only=True) "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
        return {k: v.numpy() for k, v in state.items()}
    from utils.base.checkpoint import load_state_file
    return {k: np.asarray(v) for k, v in load_state_file(path, "ImageNet weights").items()}

