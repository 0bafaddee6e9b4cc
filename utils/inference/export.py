"""Export and verify: the one place that turns a dygraph model into a Paddle
Inference model, used by export_model.py, the encoder (an export of the
current weights into a temporary folder) and the GPU check.

``paddle.jit.save`` with input spec [None, 3, S, S] writes
``<dir>/inference_{bit}.json`` + ``.pdiparams`` on Paddle 3.x (``.pdmodel`` +
``.pdiparams`` on Paddle 2.x); S = None exports a model for any image size.
``export_checked`` writes into a temporary folder beside the destination,
loads the files back with Paddle Inference, compares them with the dygraph
model on a batch, and installs them only if the largest difference of the
hash-layer outputs is within the tolerance. ``fmt="onnx"`` converts that
export with paddle2onnx (utils/inference/onnx_model.py) and checks and
installs ``inference_{bit}.onnx`` (run with onnxruntime) instead.
"""
import os
import shutil

import numpy as np
import paddle
from paddle.static import InputSpec

from utils.retrieval.codes import sign_codes
from utils.base.io import (atomic_write_json, check_not_cut_short, disk_full_is_user_error,
                           fsync_dir, fsync_file, make_temp_dir, remove_leftovers)
from utils.data.transforms import normalize
from utils.inference.onnx_model import OnnxModel, check_onnx_size, convert_to_onnx, onnx_path
from utils.inference.predictor import (MODEL_SUFFIXES, InferenceModel, export_files,
                                       export_info_path, write_export_manifest)

TOLERANCE = 1e-4   # of the hash-layer outputs, relative to max(1, max |z|)


def allowed_difference(z, tolerance=TOLERANCE):
    """``tolerance`` absolute for outputs up to 1, relative beyond: a float32
    export (oneDNN fuses batch norm into the convolutions) differs by a few
    ulps of z, and ResNet50's z reaches the hundreds before training."""
    return tolerance * max(1.0, float(np.abs(z).max()))


def save_inference_model(model, model_dir, image_size=None):
    """``paddle.jit.save`` of ``model`` in eval mode (the export traces eval
    mode: no dropout) as ``<model_dir>/inference_{bit}``; returns the prefix."""
    model.eval()
    prefix = os.path.join(model_dir, f"inference_{model.bit}")
    paddle.jit.save(model, prefix,
                    input_spec=[InputSpec([None, 3, image_size, image_size], "float32", "x")])
    return prefix


def check_batch(n, size, seed=0):
    """Random images in pixel range, normalised like the test transform."""
    return normalize(np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32))


def dygraph_outputs(model, x):
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


FORMATS = ("paddle", "onnx")


def load_exported(model_dir, bit, fmt="paddle", use_gpu=False, num_threads=1):
    """The exported model of ``fmt`` in ``model_dir``, ready to ``run``."""
    if fmt == "onnx":
        return OnnxModel(model_dir, bit, num_threads=num_threads)
    return InferenceModel(model_dir, bit, use_gpu=use_gpu, num_threads=num_threads)


def compare_with_dygraph(model_dir, bit, x, z_dygraph, use_gpu=False, num_threads=1,
                         fmt="paddle"):
    """The exported model in ``model_dir`` vs the dygraph outputs
    ``z_dygraph`` of batch ``x``: (max abs diff, number of differing code bits)."""
    z_saved = load_exported(model_dir, bit, fmt, use_gpu, num_threads).run(x)
    diff = float(np.abs(z_dygraph - z_saved).max())
    flips = int((sign_codes(z_dygraph) != sign_codes(z_saved)).sum())
    return diff, flips


def parameter_bytes(model):
    """The weights' payload: a complete .pdiparams holds at least this much."""
    return sum(int(np.prod(p.shape)) * p.element_size() for p in model.state_dict().values())


def install(tmp_dir, out_dir, bit):
    """Move the checked files into place as one unit: the manifest first, so
    that a reader (predictor.model_files, OnnxModel) sees the whole old
    export, the whole new one, or files the manifest does not list or match,
    which it refuses; never a mix. Then every other ``inference_{bit}.*``
    file of the folder goes (the other format's, a stale one): the folder
    holds this export of the bit length and nothing else of it."""
    os.makedirs(out_dir, exist_ok=True)
    manifest = os.path.basename(write_export_manifest(tmp_dir, bit))
    written = sorted(os.listdir(tmp_dir), key=lambda name: name != manifest)  # manifest first
    for name in written:
        fsync_file(os.path.join(tmp_dir, name))
        os.replace(os.path.join(tmp_dir, name), os.path.join(out_dir, name))
    for name in export_files(out_dir, bit):
        if name not in written:
            os.remove(os.path.join(out_dir, name))
    fsync_dir(out_dir)
    return [os.path.join(out_dir, name) for name in written]


class ExportMismatch(Exception):
    """The exported model does not reproduce the dygraph model."""


def to_onnx(model_dir, bit):
    """Replace the Paddle export in ``model_dir`` by its ONNX conversion."""
    prefix = os.path.join(model_dir, f"inference_{bit}")
    program = next(prefix + s for s in MODEL_SUFFIXES if os.path.isfile(prefix + s))
    convert_to_onnx(program, prefix + ".pdiparams", onnx_path(model_dir, bit))
    for name in (program, prefix + ".pdiparams"):
        os.remove(name)


def export_checked(model, out_dir, image_size, info, batch=4, num_threads=1,
                   tolerance=TOLERANCE, fmt="paddle"):
    """Export ``model`` for [N, 3, image_size, image_size] inputs into
    ``out_dir`` after checking it: returns (max abs diff, differing code bits,
    installed files); ExportMismatch(diff, flips, allowed) (nothing installed)
    when the difference exceeds ``allowed_difference(z, tolerance)``. ``info``
    goes into ``inference_{bit}.export.json`` with the bit length and image
    size, which infer.py reads."""
    bit = model.bit
    if fmt == "onnx":
        check_onnx_size(model, image_size)
    x = check_batch(batch, image_size)
    z_dygraph = dygraph_outputs(model, x)   # the reference, before jit.save touches the model
    os.makedirs(out_dir, exist_ok=True)
    remove_leftovers(out_dir, ".export-")   # temp folders of killed exports
    tmp_dir = make_temp_dir(out_dir, ".export-")
    try:
        params = f"inference_{bit}.pdiparams"
        with disk_full_is_user_error(os.path.join(out_dir, params)):
            save_inference_model(model, tmp_dir, image_size)
        check_not_cut_short(os.path.join(tmp_dir, params), parameter_bytes(model),
                            os.path.join(out_dir, params))
        atomic_write_json(dict(info, bit=bit, img_size=image_size, format=fmt),
                          export_info_path(tmp_dir, bit))
        if fmt == "onnx":
            to_onnx(tmp_dir, bit)
        diff, flips = compare_with_dygraph(tmp_dir, bit, x, z_dygraph, num_threads=num_threads,
                                           fmt=fmt)
        allowed = allowed_difference(z_dygraph, tolerance)
        if diff > allowed:
            raise ExportMismatch(diff, flips, allowed)
        return diff, flips, install(tmp_dir, out_dir, bit)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
