"""Model -> binary codes of a whole data set: the one encoder behind
training's evaluation and ``--eval`` (utils/training/engine.py), predict.py and
deploy/inference_python/infer.py.

Encoding a database is most of the cost of an evaluation on a CPU, and
dygraph runs AlexNet far below the machine's speed. So on a CPU the model's
*current* weights are exported (``paddle.jit.save`` into a temporary folder,
about 2 s) and run by a Paddle Inference predictor with oneDNN
(utils/inference/predictor.py), 4-7x faster than dygraph (benchmarks/bench_encode.py);
sets too small to repay the export stay in dygraph.
Its outputs z match dygraph to float rounding (<1e-6), so a code bit can differ
only where |z| is that close to 0 (tests/inference/test_encoder.py). On a GPU, or if the
export fails, the model runs in dygraph (the latter says so in one log line).
Training itself always stays dygraph.
"""
import logging
import shutil
import sys
import tempfile

import numpy as np
import paddle
from tqdm import tqdm

from utils.retrieval.codes import sign_codes
from utils.base.io import make_temp_dir, remove_leftovers
from utils.base.runtime import num_threads
from utils.inference.export import save_inference_model
from utils.inference.predictor import InferenceModel

log = logging.getLogger("hashnet")
TEMP_PREFIX = "hashnet-encoder-"


def dygraph_forward(model):
    """x [N,3,S,S] float32 numpy -> z [N, bit] numpy, in dygraph, eval mode."""
    model.eval()

    @paddle.no_grad()
    def forward(x):
        return model(paddle.to_tensor(x)).numpy()
    return forward


def inference_forward(model):
    """The same function on Paddle Inference with oneDNN, from an export of
    the model's current weights (any batch size and image size); it raises
    whatever the export or the predictor raises."""
    # The folders of killed runs (a full model each) go first; ours is named
    # after this process so that the next run can tell (utils/base/io.py).
    remove_leftovers(tempfile.gettempdir(), TEMP_PREFIX)
    tmp = make_temp_dir(tempfile.gettempdir(), TEMP_PREFIX)
    try:
        # The predictor reads both files when it is created, so the folder can go.
        save_inference_model(model, tmp)
        return InferenceModel(tmp, model.bit, use_gpu=False, num_threads=num_threads()).run
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# The export costs about what dygraph needs for a few hundred 64 px images, so
# smaller sets (the test suite's) are encoded in dygraph.
MIN_IMAGES_TO_EXPORT = 256


def fastest_forward(model, images):
    """The forward to encode ``images`` images with: ``inference_forward`` on
    a CPU, ``dygraph_forward`` on a GPU, for fewer than MIN_IMAGES_TO_EXPORT
    images, or when the export fails."""
    if not paddle.device.get_device().startswith("cpu") or images < MIN_IMAGES_TO_EXPORT:
        return dygraph_forward(model)
    try:
        return inference_forward(model)
    except Exception as err:  # any failure only costs speed, never codes
        reason = (str(err).strip().splitlines() or [""])[-1][:200]
        log.warning(f"encoder: Paddle Inference export failed ({type(err).__name__}: "
                    f"{reason}); encoding in dygraph instead (slower)")
        return dygraph_forward(model)


def encode_batches(forward, loader, desc="encoding", code_rule=sign_codes):
    """Codes ``code_rule(forward(x))`` (int8 ±1 [n, bit]; sign(z) unless the
    method names another rule), labels [n, C] and dataset indices [n] of every
    batch of ``loader``, in loader order (in one process that is dataset order)."""
    codes, labels, indices = [], [], []
    for x, y, ind in tqdm(loader, desc=desc, leave=False, disable=not sys.stderr.isatty()):
        codes.append(code_rule(forward(x.numpy())))
        labels.append(y.numpy())
        indices.append(ind.numpy())
    return np.concatenate(codes), np.concatenate(labels), np.concatenate(indices)


def encode_dataset(model, loader, desc="encoding"):
    """``encode_batches`` with the fastest forward for this machine and set."""
    return encode_batches(fastest_forward(model, len(loader.dataset)), loader, desc)
