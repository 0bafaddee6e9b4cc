"""utils/inference/encoder.py: the fast CPU encoder (Paddle Inference + oneDNN on an
export of the current weights) against dygraph, its dygraph fallback, and
the removal of temp folders left by killed runs.

The model is a centred random HashNet (support/centred_model.py), its hash
layer scaled so that z has unit spread like a trained model's (a random
AlexNet's z are all within ~1e-3 of each other).
"""
import ctypes
import json
import logging
import os
import tempfile

import numpy as np
import paddle
import pytest

from support.centred_model import assert_codes_agree, make_checkpoint
from support.cli import run_python
from support.demo_set import CROP, RESIZE, database_batch
from support.leftovers import leftover_name
from tiny_model import TinyHashNet
from utils.base.runtime import set_num_threads
from utils.data.loaders import ImageList, build_loader
from utils.inference import encoder
from utils.inference.export import allowed_difference
from utils.inference.predictor import InferenceModel

BIT = 16


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


@pytest.mark.float_sensitive
def test_fast_encoder_matches_dygraph(demo, centred):
    """oneDNN's kernels against dygraph's: within the export check's
    tolerance, and a code differs from dygraph's only where z is closer to 0."""
    x = database_batch(demo)
    z_dygraph = encoder.dygraph_forward(centred)(x)
    forward = encoder.fastest_forward(centred, encoder.MIN_IMAGES_TO_EXPORT)
    assert isinstance(forward.__self__, InferenceModel)   # the fast path on CPU
    z_fast = forward(x)
    # exact: a second export of the same weights runs the same oneDNN kernels
    # on the same batch in the same process
    np.testing.assert_array_equal(encoder.inference_forward(centred)(x), z_fast)
    allowed = allowed_difference(z_dygraph)
    assert np.abs(z_fast - z_dygraph).max() <= allowed
    assert np.median(np.abs(z_dygraph)) > 1000 * allowed   # z not all within noise of 0
    codes, labels, indices = encoder.encode_batches(forward, database_loader(demo))
    for got in (np.where(z_fast >= 0, 1, -1), codes):
        assert_codes_agree(got, z_dygraph)   # a bit differs only where |z| <= allowed
    assert indices.tolist() == list(range(len(x))) and labels.shape == (len(x), 10)


def test_export_leaves_the_dygraph_model_as_it_was(demo, centred):
    x = database_batch(demo)[:4]
    before = {k: v.numpy().copy() for k, v in centred.state_dict().items()}
    z_before = encoder.dygraph_forward(centred)(x)
    encoder.inference_forward(centred)
    # exact: exporting must not write the weights (copies compared)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in centred.state_dict().items())
    # exact: the same weights through the same dygraph kernels in this process
    np.testing.assert_array_equal(encoder.dygraph_forward(centred)(x), z_before)


def mkl_threads():
    """MKL's process-wide thread count, read from the MKL this Paddle loaded
    (Paddle can set it, ``core.set_num_threads``, but has no getter); None
    for a Paddle without MKL (an OpenBLAS build)."""
    path = os.path.join(os.path.dirname(paddle.__file__), "libs", "libmklml_intel.so")
    return ctypes.CDLL(path).MKL_Get_Max_Threads() if os.path.isfile(path) else None


@pytest.mark.parametrize("predictor_threads", [2, 1])
def test_a_predictor_leaves_the_math_library_threads_as_they_were(demo, centred, monkeypatch,
                                                                   predictor_threads):
    """Paddle Inference sets MKL's thread count, process-wide, to the
    predictor's own when it is created and to 1 after every run. Dygraph's
    matmuls and convolutions run on MKL, whose sums on some CPUs (AVX-512
    Xeons) depend on the thread count: an evaluation changed the bits of the
    training after it. Forced here: a predictor at the process's
    2 threads, and one at 1 (a count other than dygraph's)."""
    if mkl_threads() is None:
        pytest.skip("this Paddle has no MKL (libmklml_intel.so): no thread count to read")
    set_num_threads(2)   # conftest's setting, whatever an earlier test left
    monkeypatch.setattr(encoder, "num_threads", lambda: predictor_threads)
    forward = encoder.inference_forward(centred)
    assert mkl_threads() == 2, "creating the predictor changed the process's threads"
    forward(database_batch(demo)[:4])
    assert mkl_threads() == 2, "running the predictor changed the process's threads"


# Child of the test below: dygraph z and gradients of one model before and
# after an evaluation's export + predictor run, and at 1 thread for comparison.
FORCED_KERNELS_CHILD = """
import json
import numpy as np
import paddle
from models.alexnet import AlexNetHash
from utils.base.runtime import set_num_threads
from utils.inference import encoder

set_num_threads(2)
paddle.seed(0)
model = AlexNetHash(16)
model.eval()   # no dropout: every forward is the same function
x = paddle.to_tensor(np.random.default_rng(0).normal(0, 1, (4, 3, 64, 64)).astype("float32"))


def z_and_gradients():
    model.clear_gradients()
    z = model(x)
    (z * z).sum().backward()
    grads = [p.grad.numpy().ravel() for p in model.parameters() if p.grad is not None]
    return np.concatenate([z.numpy().ravel()] + grads)


before = z_and_gradients()
set_num_threads(1)
one_thread = z_and_gradients()
set_num_threads(2)
encoder.inference_forward(model)(x.numpy())
after = z_and_gradients()
print(json.dumps({"thread_sensitive": bool((one_thread != before).any()),
                  "changed": int((after != before).sum()), "of": int(before.size),
                  "max_abs": float(np.abs(after - before).max())}))
"""


def test_an_evaluation_leaves_dygraph_bits_with_thread_sensitive_kernels():
    """The failure of the AVX-512 Xeon forced on any x86 CPU: MKL_DEBUG_CPU_TYPE=5
    makes MKL 2019 (Paddle's) take its AVX2 kernels, whose sums (forward and
    backward) depend on the thread count. After an evaluation's export +
    predictor run, dygraph z and gradients (training) must keep every bit.
    Before the fix: 23.9M of 57M values changed (2-core AMD EPYC); with MKL's
    default kernels there, 427 (conv1's weight gradient)."""
    proc = run_python("-c", FORCED_KERNELS_CHILD, extra_env={"MKL_DEBUG_CPU_TYPE": "5"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["thread_sensitive"]:
        pytest.skip("MKL's kernels give the same bits at 1 and 2 threads here even with "
                    "MKL_DEBUG_CPU_TYPE=5 (no MKL, or an MKL that ignores it): nothing to force")
    assert result["changed"] == 0, result


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
    # batches of 10 against one batch of all: a bit may differ only where |z| <= allowed
    assert_codes_agree(codes, encoder.dygraph_forward(centred)(database_batch(demo)))


def test_encoder_removes_temp_folders_of_killed_runs(tmp_path, monkeypatch):
    from utils.inference import encoder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / leftover_name(encoder.TEMP_PREFIX)
    dead.mkdir()
    (dead / "inference_16.pdiparams").write_bytes(b"x" * 1000)
    forward = encoder.inference_forward(TinyHashNet(BIT))
    assert forward is not None
    assert os.listdir(tmp_path) == []   # the leftover and our own folder are gone
