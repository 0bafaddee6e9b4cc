"""What ONNX really computes for a lone adaptive average pool: the layer
exported by Paddle, converted by paddle2onnx (the project's own call) and run
by onnxruntime. A pool converts in milliseconds, so the tests check the size
rule of utils/inference/onnx_model.py against the real tools without
converting whole networks (VGG16's export alone is half a gigabyte)."""
import functools
import os
import tempfile

import numpy as np
import paddle
from paddle.static import InputSpec

from utils.base.errors import UserError
from utils.inference.export import allowed_difference
from utils.inference.onnx_model import convert_to_onnx

CHANNELS = 2


@functools.lru_cache(maxsize=None)
def onnx_computes_pool(n, m):
    """Whether AdaptiveAvgPool2D(m) on an n x n map loads in onnxruntime after
    conversion and gives Paddle's output, at the export check's tolerance
    (two libraries' kernels)."""
    import onnxruntime as ort
    layer = paddle.nn.AdaptiveAvgPool2D(m)
    layer.eval()
    x = np.random.default_rng(n * 100 + m).random((1, CHANNELS, n, n), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        prefix = os.path.join(folder, "pool")
        paddle.jit.save(layer, prefix, input_spec=[InputSpec([None, CHANNELS, n, n], "float32")])
        program = next(prefix + s for s in (".json", ".pdmodel") if os.path.isfile(prefix + s))
        try:
            convert_to_onnx(program, prefix + ".pdiparams", prefix + ".onnx")
            session = ort.InferenceSession(prefix + ".onnx", providers=["CPUExecutionProvider"])
        except (UserError, Exception):   # paddle2onnx refused it, or onnxruntime did
            return False
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
    want = layer(paddle.to_tensor(x)).numpy()
    return got.shape == want.shape and float(np.abs(got - want).max()) <= allowed_difference(want)
