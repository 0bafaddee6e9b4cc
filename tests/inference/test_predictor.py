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


EXPORT_INFO = {"weights": "output/model_best_16.pdparams", "paddle": "3.3.1", "arch": "alexnet",
               "input_pipeline": "reference", "bit": 16, "img_size": 64, "format": "paddle"}


def test_an_export_record_of_the_wrong_shape_is_one_line(tmp_path):
    import json
    from utils.inference.predictor import read_export_info
    for change, fragment in (({"img_size": 1e400}, "img_size 'inf' is not valid"),
                             ({"arch": ["alexnet"]}, "arch \"['alexnet']\" is not valid"),
                             ({"bit": 64}, "bit '64' is not valid"), ([1], "not a JSON object")):
        record = dict(EXPORT_INFO, **change) if isinstance(change, dict) else change
        (tmp_path / "inference_16.export.json").write_text(json.dumps(record))
        assert fragment in user_error(read_export_info, str(tmp_path), 16)


def test_fuzzed_export_record_is_read_or_refused_in_one_line(tmp_path_factory):
    import json
    from hypothesis import given
    from support.fuzz import FUZZ, json_like, mutated, one_line_or_result
    from utils.inference.predictor import exported_image_size
    folder = tmp_path_factory.mktemp("fuzzed_export_info")

    @FUZZ
    @given(data=json_like(EXPORT_INFO) | mutated([json.dumps(EXPORT_INFO).encode()]))
    def fuzz(data):
        (folder / "inference_16.export.json").write_bytes(
            data if isinstance(data, bytes) else json.dumps(data).encode())
        side = one_line_or_result(exported_image_size, str(folder), 16,
                                  str(folder / "inference_16.pdmodel"))
        assert side is None or 1 <= side <= 4096
    fuzz()
