"""What every registered ``--arch`` must do (models/backbone.py ``HashModel``),
checked for each network in the registry (the tests' own included)."""
import numpy as np
import paddle
import pytest

import models
from support.errors import user_error
from models.backbone import HashModel, hash_layer_keys

BIT = 16
ARCHS = sorted(models.ARCHS)


@pytest.fixture(scope="module")
def built():
    """One model of every arch (VGG16 and ResNet50 take seconds to build)."""
    paddle.seed(0)
    return {}


def model_of(built, arch):
    if arch not in built:
        built[arch] = models.build(arch, BIT)
    return built[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_at_its_smallest_crop_gives_z(built, arch):
    model = model_of(built, arch)
    assert isinstance(model, HashModel) and model.arch in (arch, *models.ARCHS)
    assert model.label and model.min_crop >= 1 and model.default_crop >= model.min_crop
    model.eval()
    with paddle.no_grad():
        z = model(paddle.zeros([2, 3, model.min_crop, model.min_crop]))
    assert z.shape == [2, BIT] and np.isfinite(z.numpy()).all()
    assert isinstance(model.hash_layer, paddle.nn.Linear)
    assert model.hash_layer.weight.shape[1] == BIT


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_keys_name_the_arch(built, arch):
    """Its ``signature`` key is in its checkpoints and in no other arch's, so
    ``arch_of_state`` names the arch of a checkpoint loaded with the wrong
    --arch (an arch extending another shares the other's)."""
    model = model_of(built, arch)
    keys = model.state_dict().keys()
    assert model.signature in keys
    found = models.arch_of_state(keys)
    assert found is not None and isinstance(model, models.model_class(found))
    for other, cls in models.ARCHS.items():
        if not (isinstance(model, cls) or issubclass(cls, type(model))):   # unrelated archs
            assert cls.signature not in keys, other


@pytest.mark.parametrize("arch", ARCHS)
def test_random_backbone_keeps_every_weight(built, arch):
    model = model_of(built, arch)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    model.load_backbone("random")
    for key, value in model.state_dict().items():
        # exact: "random" loads nothing, so the weights are untouched
        np.testing.assert_array_equal(value.numpy(), before[key], err_msg=key)
    assert hash_layer_keys(model) <= set(before)


@pytest.mark.parametrize("arch", [a for a in ARCHS if models.ARCHS[a].backbone_hint])
def test_a_missing_backbone_file_is_one_line_naming_it(built, arch, tmp_path):
    missing = str(tmp_path / "no_such_backbone.pdparams")
    message = user_error(model_of(built, arch).load_backbone, missing)
    assert "no_such_backbone.pdparams" in message and "\n" not in message


def library_arch(arch):
    """An arch of models/, not one the tests register."""
    return models.ARCHS[arch].__module__.startswith("models.")


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_size_rule_is_what_onnx_computes(built, arch):
    """At its training crop and its smallest, the rule's verdict on the arch
    (utils/inference/onnx_model.py) is what paddle2onnx and onnxruntime make
    of each of its adaptive pools at the sizes it feeds them; the library's
    archs convert at their training crop."""
    pytest.importorskip("paddle2onnx", reason="ONNX export needs paddle2onnx (requirements-dev.txt)")
    pytest.importorskip("onnxruntime", reason="ONNX needs onnxruntime (requirements-dev.txt)")
    from support.onnx_pool import onnx_computes_pool
    from utils.inference.onnx_model import adaptive_pools, unconvertible_pool
    model = model_of(built, arch)
    converts = {}
    for size in (model.default_crop, model.min_crop):
        pools = adaptive_pools(model, size)
        converts[size] = unconvertible_pool(pools) is None
        assert converts[size] == all(h == w and oh == ow and onnx_computes_pool(h, oh)
                                     for _, (h, w), (oh, ow) in pools), (size, pools)
    if library_arch(arch):
        assert converts[model.default_crop]
