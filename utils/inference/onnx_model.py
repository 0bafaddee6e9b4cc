"""An exported HashNet as ONNX: converted with paddle2onnx, run with onnxruntime.

paddle2onnx 2.x reads Paddle 3's PIR program (``inference_{bit}.json``)
directly, and a Paddle 2 ``.pdmodel`` after translating it. Two of its
defaults are avoided here: polygraphy constant folding (it pip-installs
onnx_graphsurgeon on first use and crashed with SIGFPE on this model) and
writing ``save_file`` itself (the bytes come back and are written atomically).
AlexNet's adaptive average pool becomes an ONNX AveragePool, which exists only
when the last feature map is a multiple of 6 (a 224 px input; the tests' 64 px
crop gives a 1x1 map): other sizes fail to load in onnxruntime, a UserError.

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
