"""utils/inference/predictor.py: the input size of an exported model, read
from its sidecar or from a PIR program, and infer.py's sizes fitted to it
(deploy/cli.py)."""
import paddle

from support.errors import user_error


def test_infer_takes_the_exported_size_and_refuses_another(tmp_path):
    import types
    from deploy.cli import fit_sizes_to_model
    from utils.inference.predictor import exported_image_size
    (tmp_path / "inference_16.export.json").write_text('{"bit": 16, "img_size": 96}')
    side = exported_image_size(str(tmp_path), 16, str(tmp_path / "inference_16.pdmodel"))
    assert side == 96
    args = fit_sizes_to_model(types.SimpleNamespace(arch=None, crop_size=None, resize_size=None), side, "m")
    assert (args.crop_size, args.resize_size) == (96, 109)
    message = user_error(fit_sizes_to_model,
                         types.SimpleNamespace(arch=None, crop_size=224, resize_size=None), side, "m")
    assert "--crop_size 224 differs from the 96 px the model m was exported at" in message
    message = user_error(fit_sizes_to_model,
                         types.SimpleNamespace(arch=None, crop_size=None, resize_size=None), None, "m")
    assert "m does not record its input size: pass --crop_size" in message


def test_the_input_size_is_read_from_a_pir_program_without_sidecar(tmp_path):
    from paddle.static import InputSpec
    from utils.inference.predictor import pir_input_side

    class Tiny(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 2, 3)

        def forward(self, x):
            return self.conv(x)
    paddle.jit.save(Tiny(), str(tmp_path / "inference_16"),
                    input_spec=[InputSpec([None, 3, 80, 80], "float32", name="x")])
    program = tmp_path / "inference_16.json"     # Paddle 3.x: a PIR program
    assert pir_input_side(str(program)) == 80
