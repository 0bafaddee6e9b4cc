"""--arch caffenet / vgg16 / resnet50 (models/): shapes, parameter counts,
minimum crops, CaffeNet against the authors' train_val.prototxt, the
caffemodel reader and converters on fixture files, the Caffe input pipeline,
the arch in checkpoints and exports, one training step per arch and recipe."""
import json
import os
import types

import numpy as np
import paddle
import paddle.nn as nn
import pytest

import models
from download_fixtures import put, serve
from support.demo_set import demo_argv
from support.errors import user_error
from support.paths import REPO
from models.backbone import smallest_input
from utils.base import caffe_proto
from utils.base import download
from utils.base.checkpoint import load_weights
from utils.base.io import atomic_save
from utils.training import recipes
from utils.training.config import build_method, parse_args

BIT = 16
SMALL = {"alexnet": 63, "caffenet": 55, "vgg16": 32, "resnet50": 32}   # crops the tests use
# trainable parameters with a 16-bit hash layer (ImageNet classifier replaced)
PARAMETERS = {"alexnet": 57_069_392, "caffenet": 56_933_776, "vgg16": 134_326_096,
              "resnet50": 23_540_816}


def trainable(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


@pytest.fixture(scope="module")
def built():
    paddle.seed(0)
    return {arch: models.build(arch, BIT) for arch in PARAMETERS}


def test_every_arch_is_registered():
    assert {"alexnet", "caffenet", "vgg16", "resnet50"} <= set(models.ARCHS)


@pytest.mark.parametrize("arch", sorted(PARAMETERS))
def test_forward_shape_and_parameter_count(built, arch):
    model = built[arch]
    model.eval()
    with paddle.no_grad():
        z = model(paddle.zeros([2, 3, SMALL[arch], SMALL[arch]]))
    assert z.shape == [2, BIT]
    assert trainable(model) == PARAMETERS[arch]
    hash_in = {"alexnet": 4096, "caffenet": 4096, "vgg16": 4096, "resnet50": 2048}[arch]
    assert model.hash_layer.weight.shape == [hash_in, BIT]
    # the reference recipe's optimizer gives the hash layer HashNet's 10x
    args = parse_args(["--arch", arch, "--bit", str(BIT)])
    recipes.build(args, build_method(args)).optimizer(model)
    assert model.hash_layer.weight.optimize_attr["learning_rate"] == 10.0
    assert model.hash_layer.bias.optimize_attr["learning_rate"] == 10.0
    others = [p for p in model.parameters() if p.name != model.hash_layer.weight.name
              and p.name != model.hash_layer.bias.name]
    assert {p.optimize_attr["learning_rate"] for p in others} == {1.0}


def test_min_crop_is_the_smallest_valid_input():
    alexnet = [(11, 4, 2, False), (3, 2, 0, False), (5, 1, 2, False), (3, 2, 0, False)] + \
        [(3, 1, 1, False)] * 3 + [(3, 2, 0, False)]
    assert smallest_input(alexnet) == models.model_class("alexnet").min_crop == 63
    assert [models.model_class(a).min_crop for a in ("caffenet", "vgg16", "resnet50")] == [55, 32, 1]


@pytest.mark.float_sensitive
def test_paddle_lrn_is_caffes_across_channels():
    """Caffe: x / (1 + α/n Σ_{window of n channels, zero-padded} x²)^β."""
    x = np.random.default_rng(0).standard_normal((1, 8, 3, 3)).astype(np.float32) * 10
    n, alpha, beta = 5, 1.0, 0.75    # a large α so that a wrong scaling shows
    padded = np.pad(x.astype(np.float64) ** 2, ((0, 0), (2, 2), (0, 0), (0, 0)))
    caffe = x / (1 + alpha / n * sum(padded[:, i:i + 8] for i in range(n))) ** beta   # float64
    from models.caffenet import CaffeLRN
    for layer in (nn.LocalResponseNorm(n, alpha, beta, 1.0), CaffeLRN(n, alpha, beta, 1.0)):
        # float32 kernels, each step (squares, their sum, pow, divide) within a
        # few ulps whatever its order or ISA; a wrong α/n or window is off by %
        np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), caffe, rtol=1e-5)


def test_caffenet_is_the_prototxt_layer_by_layer(built):
    """train_val.prototxt (thuml/HashNet 85387b8, caffe/models/train/coco)."""
    m = built["caffenet"]
    convs = {  # name: (out, kernel, stride, pad, group)
        "conv1": (96, 11, 4, 0, 1), "conv2": (256, 5, 1, 2, 2), "conv3": (384, 3, 1, 1, 1),
        "conv4": (384, 3, 1, 1, 2), "conv5": (256, 3, 1, 1, 2)}
    for name, (out, kernel, stride, pad, group) in convs.items():
        conv = getattr(m, name)
        assert (conv._out_channels, conv._kernel_size[0], conv._stride[0], conv._padding,
                conv._groups) == (out, kernel, stride, pad, group), name
    for norm in (m.norm1, m.norm2):
        assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, 1e-4, 0.75, 1.0)
    assert [d.p for d in (m.drop6, m.drop7)] == [0.5, 0.5]
    assert m.fc6.weight.shape == [9216, 4096] and m.fc7.weight.shape == [4096, 4096]
    # the order: LRN after pool1 and pool2, dropout on fc6's and fc7's outputs
    x = paddle.rand([1, 3, 227, 227])
    m.eval()
    after_pool1 = m.pool1(m.relu(m.conv1(x)))
    assert after_pool1.shape == [1, 96, 27, 27]
    assert m.features(x).shape == [1, 256, 6, 6]


# ------------------------------------------------------------- caffemodel reader
def small_caffenet_layers(rng):
    """CaffeNet's layer names with small shapes (Caffe's [out, in] fc blobs)."""
    shapes = {"conv1": (4, 3, 3, 3), "conv2": (6, 2, 3, 3), "conv3": (5, 6, 1, 1),
              "conv4": (4, 3, 1, 1), "conv5": (2, 2, 1, 1), "fc6": (7, 8), "fc7": (3, 7),
              "fc8": (2, 3)}
    layers = []
    for name, shape in shapes.items():
        kind = "InnerProduct" if name.startswith("fc") else "Convolution"
        layers.append((name, kind, [rng.standard_normal(shape).astype(np.float32),
                                    rng.standard_normal(shape[0]).astype(np.float32)]))
    return layers


@pytest.mark.parametrize("v1", [False, True], ids=["V2 layer", "V1 layers"])
def test_caffemodel_round_trip(tmp_path, v1):
    layers = small_caffenet_layers(np.random.default_rng(1))
    path = tmp_path / "net.caffemodel"
    path.write_bytes(caffe_proto.net_bytes(layers, v1=v1))
    read = caffe_proto.read_net(str(path))
    assert list(read) == [name for name, _, _ in layers]
    for name, kind, blobs in layers:
        assert read[name][0] == kind
        for got, want in zip(read[name][1], blobs):
            # V1 keeps the legacy 4-d num/channels/height/width shape; exact:
            # a write-and-read round trip of float32 bytes
            np.testing.assert_array_equal(got.reshape(want.shape), want)
    from models.caffe_convert import caffenet_state
    state = caffenet_state(read)   # exact: the blobs read back, renamed and transposed (copies)
    np.testing.assert_array_equal(state["fc6.weight"], layers[5][2][0].T)   # Paddle [in, out]
    np.testing.assert_array_equal(state["fc6.bias"], layers[5][2][1])
    np.testing.assert_array_equal(state["conv2.weight"], layers[1][2][0])
    assert "fc8.weight" not in state


def test_a_broken_caffemodel_is_one_line(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(caffe_proto.net_bytes(small_caffenet_layers(np.random.default_rng(0)))[:-9])
    assert "not a readable .caffemodel" in user_error(caffe_proto.read_net, str(path))


def test_the_real_mean_file_layout_reads(tmp_path):
    """A mean .binaryproto as Caffe writes it: legacy dims 1 x 3 x H x W."""
    mean = np.random.default_rng(0).random((3, 4, 5), dtype=np.float32) * 255
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(caffe_proto.blob_bytes(mean, legacy=True))
    np.testing.assert_array_equal(caffe_proto.read_mean_file(str(path)), mean)   # round trip


@pytest.fixture
def fixture_server(tmp_path, monkeypatch):
    from paddle.utils import download as paddle_download
    root = tmp_path / "mirror"
    srv = serve(root)
    checksums = {}
    monkeypatch.setattr(paddle_download, "WEIGHTS_HOME", str(tmp_path / "weights"))
    monkeypatch.setenv(download.BASE_ENV, srv.base)
    checksums_file = tmp_path / "checksums.json"
    srv.put = lambda url, data: (put(str(root), url, data, checksums, kind=url.kind),
                                 checksums_file.write_text(json.dumps(checksums)))
    monkeypatch.setenv(download.CHECKSUMS_ENV, str(checksums_file))
    yield srv
    srv.shutdown()


class Url(str):
    kind = "md5"


def test_caffenet_imagenet_weights_are_fetched_checked_and_converted(fixture_server, tmp_path):
    from models.imagenet_backbone import CAFFENET_REMOTE, imagenet_backbone
    layers = small_caffenet_layers(np.random.default_rng(2))
    url = Url(CAFFENET_REMOTE.url)
    url.kind = "sha1"
    fixture_server.put(url, caffe_proto.net_bytes(layers, v1=True))
    path = imagenet_backbone("caffenet")
    assert path.endswith(".pdparams") and "bvlc_reference_caffenet.hashnet-" in path
    state = paddle.load(path)
    # exact: the served bytes converted (a copy, transposed) and saved, then loaded
    np.testing.assert_array_equal(state["fc7.weight"].numpy(), layers[6][2][0].T)
    assert [p for p, _ in fixture_server.seen] == ["/dl.caffe.berkeleyvision.org/"
                                                   "bvlc_reference_caffenet.caffemodel"]
    assert imagenet_backbone("caffenet") == path and len(fixture_server.seen) == 1


def test_caffenet_sha1_mismatch_is_one_line(fixture_server, monkeypatch, tmp_path):
    from models.imagenet_backbone import CAFFENET_REMOTE
    fixture_server.put(Url(CAFFENET_REMOTE.url), b"not the model")   # checksums: md5, not sha1
    overrides = json.loads(open(os.environ[download.CHECKSUMS_ENV]).read())
    overrides[CAFFENET_REMOTE.url] = {"checksum": CAFFENET_REMOTE.checksum, "size": None}
    open(os.environ[download.CHECKSUMS_ENV], "w").write(json.dumps(overrides))
    message = user_error(models.build("caffenet", BIT).load_backbone, "imagenet")
    assert "could not download the ImageNet CaffeNet weights" in message
    assert "sha1:4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46" in message


def test_resnet50_imagenet_conversion_loads_paddle_vision_weights(tmp_path):
    """paddle.vision's resnet50 state -> backbone.* keys, fc dropped, loaded bit-exactly."""
    from paddle.vision.models import resnet50
    from models.imagenet_backbone import convert_paddle_vision
    paddle.seed(3)
    source = tmp_path / "resnet50.pdparams"
    paddle.save(resnet50().state_dict(), str(source))
    converted = tmp_path / "converted.pdparams"
    atomic_save({k: paddle.to_tensor(v) for k, v in convert_paddle_vision("resnet50")(str(source)).items()},
                str(converted))
    model = models.build("resnet50", BIT)
    hash_before = model.hash_layer.weight.numpy().copy()
    model.load_backbone(str(converted))
    want = paddle.load(str(source))
    # exact: loading copies the saved values; the hash layer is left as it was
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            np.testing.assert_array_equal(value.numpy(), want[key[len("backbone."):]].numpy())
    np.testing.assert_array_equal(model.hash_layer.weight.numpy(), hash_before)


# ------------------------------------------------------------- Caffe input pipeline
def test_input_pipeline_defaults(make_args):
    assert make_args("--arch", "caffenet").input_pipeline == "auto"
    from utils.training.config import data_settings

    def input_pipeline(args):
        return data_settings(args).pipeline
    assert input_pipeline(make_args("--arch", "caffenet", "--recipe", "caffe")) == "caffe"
    assert input_pipeline(make_args("--arch", "alexnet")) == "reference"
    assert input_pipeline(make_args("--arch", "caffenet", "--input_pipeline", "reference")) == \
        "reference"
    from utils.training.config import parse_args
    assert parse_args(["--arch", "caffenet"]).crop_size == 227
    assert parse_args([]).crop_size == 224


# ------------------------------------------------------------- checkpoints, exports
def test_loading_another_arch_names_both(tmp_path, built):
    from utils.base.checkpoint import save_checkpoint
    model = built["caffenet"]
    optimizer = paddle.optimizer.SGD(parameters=model.parameters())
    prefix = str(tmp_path / "caffenet_16")
    save_checkpoint(prefix, model, optimizer, {})
    assert json.load(open(prefix + ".manifest.json"))["arch"] == "caffenet"
    message = user_error(load_weights, models.build("alexnet", BIT), prefix, models.arch_of_state)
    assert "--arch caffenet weights, not --arch alexnet: pass --arch caffenet" in message
    os.remove(prefix + ".manifest.json")   # no record: told by its keys
    message = user_error(load_weights, built["vgg16"], prefix, models.arch_of_state)
    assert "--arch caffenet weights, not --arch vgg16" in message
    from utils.training import engine   # --resume tells it the same way as --pretrained
    resume = types.SimpleNamespace(resume=prefix, output_dir=str(tmp_path), bit=BIT)
    message = user_error(engine.resume, resume, None, (built["vgg16"], None, None), None, None)
    assert "--arch caffenet weights, not --arch vgg16" in message
    load_weights(models.build("caffenet", BIT), prefix, models.arch_of_state)


@pytest.mark.parametrize("arch", ["caffenet", "vgg16", "resnet50"])
def test_export_parity_and_recorded_arch(tmp_path, built, arch):
    from utils.inference.export import (allowed_difference, check_batch, dygraph_outputs,
                                        export_checked)
    from utils.inference.predictor import read_export_info
    model = built[arch]
    z = dygraph_outputs(model, check_batch(2, SMALL[arch]))   # the batch the check runs
    diff, flips, files = export_checked(model, str(tmp_path), SMALL[arch], {"arch": arch}, batch=2)
    # diff is within allowed_difference, or export_checked raises; a code bit of
    # Paddle Inference's may differ from dygraph's only where |z| is within it
    assert flips <= int((np.abs(z) <= allowed_difference(z)).sum())
    assert read_export_info(str(tmp_path), BIT)["arch"] == arch
    # the encoder's export takes any image size (Paddle's own LRN would not)
    from utils.inference.encoder import dygraph_forward, inference_forward
    x = np.random.default_rng(0).standard_normal((2, 3, SMALL[arch] + 8, SMALL[arch] + 8),
                                                 dtype=np.float32)
    z = dygraph_forward(model)(x)
    assert np.abs(inference_forward(model)(x) - z).max() <= allowed_difference(z)
    import types
    from deploy.cli import fit_arch_to_model
    args = types.SimpleNamespace(arch="alexnet", input_pipeline="auto")
    message = user_error(fit_arch_to_model, args, {"arch": arch}, "m.json")
    assert f"is an --arch {arch} model, not --arch alexnet: pass --arch {arch}" in message


# ------------------------------------------------------------- one training step each
def tiny_lists(demo, tmp_path, n_train=4, n_test=2, n_db=4):
    """The demo lists cut to a few images, so that a step of VGG16 stays cheap."""
    out = tmp_path / "lists"
    out.mkdir()
    for split, n in (("train", n_train), ("test", n_test), ("database", n_db)):
        lines = open(os.path.join(demo.list_dir, f"{split}.txt")).read().splitlines()[:n]
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return str(out)


RECIPE_FLAGS = {"reference": ["-e", "1", "-ee", "1", "-bs", "2"],
                "caffe": ["--max_iter", "1", "--eval_iter", "1", "--snapshot_iter", "1",
                          "-bs", "2", "--input_pipeline", "reference"]}


@pytest.mark.parametrize("recipe", sorted(RECIPE_FLAGS))
@pytest.mark.parametrize("arch", ["caffenet", "vgg16", "resnet50"])
def test_one_training_step(demo, tmp_path, arch, recipe, no_evaluation):
    """Trains, saves and reloads; no evaluation (nothing here reads an mAP)."""
    from utils.training.config import parse_args
    from utils.training import engine
    crop = max(SMALL[arch], 32)
    argv = demo_argv(demo, tmp_path, "--arch", arch, "--recipe", recipe,
                     "--list-dir", tiny_lists(demo, tmp_path), "--crop_size", str(crop),
                     "--resize_size", str(crop + 4), "--input_pipeline", "reference",
                     *RECIPE_FLAGS[recipe])
    engine.run(parse_args(argv))
    assert no_evaluation == [({"reference": "epoch", "caffe": "iter"}[recipe], 1)]
    prefix = os.path.join(tmp_path, "output", f"last_{BIT}")
    assert json.load(open(prefix + ".manifest.json"))["arch"] == arch
    trained = models.build(arch, BIT)
    load_weights(trained, prefix)
    assert np.isfinite(trained.hash_layer.weight.numpy()).all()


def test_readme_names_every_arch():
    readme = open(os.path.join(REPO, "README.md")).read()
    for arch in ("caffenet", "vgg16", "resnet50"):
        assert f"--arch {arch}" in readme


def test_caffenet_caffe_recipe_with_its_input_pipeline(demo, tmp_path, fixture_server):
    """The default for --recipe caffe --arch caffenet: the Caffe pipeline, its
    mean file fetched from the authors' repo (here: the fixture server)."""
    from utils.training.config import parse_args
    from utils.data.caffe_pipeline import MEAN_REMOTE
    from utils.training import engine
    url = Url(MEAN_REMOTE.url)
    url.kind = "git-blob-sha1"
    mean = np.full((1, 3, 8, 8), 110.0, np.float32)
    fixture_server.put(url, caffe_proto.blob_bytes(mean, legacy=True))
    argv = demo_argv(demo, tmp_path, "--arch", "caffenet", "--recipe", "caffe",
                     "--list-dir", tiny_lists(demo, tmp_path), "--crop_size", "55",
                     "--resize_size", "60", "--max_iter", "1", "--eval_iter", "1", "-bs", "2")
    args = parse_args(argv)
    engine.run(args)
    assert [p for p, _ in fixture_server.seen] == [
        "/raw.githubusercontent.com/thuml/HashNet/85387b814fcf95daff887bd325cbaa0e8def7323/"
        "caffe/data/ilsvrc12/imagenet_mean.binaryproto"]
    config = paddle.load(os.path.join(tmp_path, "output", f"last_{BIT}.pdopt"))["training"]["config"]
    assert config["arch"] == "caffenet" and config["input_pipeline"] == "auto"


def test_export_tolerance_is_absolute_up_to_1_then_relative():
    from utils.inference.export import allowed_difference
    assert allowed_difference(np.array([0.5, -0.9])) == pytest.approx(1e-4)
    assert allowed_difference(np.array([3.0, -200.0])) == pytest.approx(2e-2)
