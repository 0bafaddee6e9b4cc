"""An exported HashNet as ONNX: converted with paddle2onnx, run with onnxruntime.

paddle2onnx 2.x reads Paddle 3's PIR program (``inference_{bit}.json``)
directly, and a Paddle 2 ``.pdmodel`` after translating it. Two of its
defaults are avoided here: polygraphy constant folding (it pip-installs
onnx_graphsurgeon on first use and crashed with SIGFPE on this model) and
writing ``save_file`` itself (the bytes come back and are written atomically).
Which image sizes convert is decided by the adaptive average pools (AlexNet's
and CaffeNet's to 6x6, VGG16's to 7x7; ResNet50's to 1x1 is a global pool,
any size): paddle2onnx writes a pool of an n-long axis to m outputs as an
ONNX AveragePool of stride floor(n/m) and kernel n - (m-1)*floor(n/m), which
computes Paddle's windows [floor(i*n/m), ceil((i+1)*n/m)) only for some n (n a
multiple of m, and a few others: AlexNet's 13 -> 6 at 448 px), and loads in
no onnxruntime for n < m (stride 0). ``onnx_size_problem`` applies that rule
to a model at a size, so an export that would fail or differ stops first.

Both packages are optional (requirements-dev.txt); a missing one is a
UserError naming the pip command.
"""
import os

import numpy as np

from utils.retrieval.codes import sign_codes
from utils.base.errors import UserError
from utils.base.io import atomic_write
from utils.inference.predictor import (checked_output, export_info_path, exported_image_size,
                                       verify_export)

OPSET = 11


def onnx_path(model_dir, bit):
    return os.path.join(model_dir, f"inference_{bit}.onnx")


def require(module):
    """Import an optional package, or say how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"ONNX needs {module}: pip install paddle2onnx onnxruntime "
                        "(both are in requirements-dev.txt)") from None


def adaptive_windows(n, m):
    """Paddle's adaptive pool of an n-long axis to m outputs: each window's (start, end)."""
    return [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]


def onnx_pool_windows(n, m):
    """The windows of the AveragePool paddle2onnx writes for it (a global pool for m = 1)."""
    stride = n // m
    kernel = n - (m - 1) * stride
    return [(i * stride, i * stride + kernel) for i in range(m)]


def pool_converts(n, m):
    """Whether ONNX computes that adaptive pool as Paddle does."""
    return n >= m and adaptive_windows(n, m) == onnx_pool_windows(n, m)


def adaptive_pools(model, image_size):
    """[(layer name, input [h, w], output [h, w])] of every adaptive pool of
    ``model`` on a [1, 3, image_size, image_size] input (one forward pass)."""
    import paddle
    seen, hooks = [], []
    for name, layer in model.named_sublayers():
        if isinstance(layer, (paddle.nn.AdaptiveAvgPool2D, paddle.nn.AdaptiveMaxPool2D)):
            hooks.append(layer.register_forward_post_hook(
                lambda layer, inputs, out, name=name:
                seen.append((name, list(inputs[0].shape[2:]), list(out.shape[2:])))))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, 3, image_size, image_size]))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return seen


def unconvertible_pool(pools):
    """The first of ``adaptive_pools``' entries ONNX does not compute as Paddle, or None."""
    return next(((name, (h, w), (out_h, out_w)) for name, (h, w), (out_h, out_w) in pools
                 if not (pool_converts(h, out_h) and pool_converts(w, out_w))), None)


def onnx_size_problem(model, image_size):
    """None when ``model`` converts to ONNX at ``image_size`` px, else why not (one line)."""
    pool = unconvertible_pool(adaptive_pools(model, image_size))
    if pool is None:
        return None
    name, (h, w), (out_h, out_w) = pool
    stride = h // out_h
    written = f"stride {stride}, kernel {h - (out_h - 1) * stride}" if stride else \
        "stride 0, which onnxruntime refuses"
    return (f"{model.label} at --img_size {image_size} feeds its adaptive pool {name} a "
            f"{h}x{w} map for {out_h}x{out_w} outputs, which ONNX's AveragePool "
            f"({written}) does not compute as Paddle does")


def check_onnx_size(model, image_size):
    """A UserError naming the size and the arch's training crop when ONNX cannot
    express ``model`` at ``image_size`` (docs/deployment.md#onnx has the rule)."""
    problem = onnx_size_problem(model, image_size)
    if problem:
        hint = ("" if onnx_size_problem(model, model.default_crop)
                else f": export at its training crop, --img_size {model.default_crop}")
        raise UserError(f"--format onnx: {problem}{hint} (the sizes that convert: "
                        "docs/deployment.md#onnx)")


def convert_to_onnx(program_file, params_file, out_file, opset=OPSET):
    """paddle2onnx: the Paddle inference model -> ``out_file``; returns it."""
    paddle2onnx = require("paddle2onnx")
    onnx_bytes = paddle2onnx.export(program_file, params_file, save_file=None,
                                    opset_version=opset, enable_onnx_checker=True,
                                    optimize_tool="none")
    if not onnx_bytes:   # paddle2onnx logs the reason and returns nothing
        raise UserError(f"paddle2onnx could not convert {program_file} (see its log above)")
    atomic_write(out_file, lambda tmp: open(tmp, "wb").write(onnx_bytes))
    return out_file


class OnnxModel:
    """``<model_dir>/inference_{bit}.onnx`` on onnxruntime (CPU), with
    InferenceModel's interface: ``run(x [N,3,S,S] float32)`` -> z [N, bit]."""

    def __init__(self, model_dir, bit, num_threads=1):
        ort = require("onnxruntime")
        self.bit = bit
        path = onnx_path(model_dir, bit)
        if not os.path.isfile(path):
            raise UserError(f"{path} not found (export it with `python export_model.py --bit {bit} "
                            f"--format onnx --save-inference-dir {model_dir}`)")
        self.files = (path,)
        info = export_info_path(model_dir, bit)
        verify_export(path[:-len(".onnx")], [path, info])   # its manifest, when it has one
        self.image_size = exported_image_size(model_dir, bit, path) if os.path.isfile(info) else None
        self.use_gpu = False
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, num_threads)
        options.log_severity_level = 3   # not the unused-initializer warnings of every load
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # a corrupt file, or an op onnxruntime refuses
            raise UserError(f"onnxruntime cannot load {path} ({type(err).__name__}: "
                            f"{str(err).strip().splitlines()[-1][:200]})")
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x):
        z = self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
        return checked_output(z, self.bit, self.files[0])

    def codes(self, x):
        return sign_codes(self.run(x))
