"""An exported HashNet (utils/inference/export.py) on Paddle Inference.

``paddle.jit.save`` writes ``inference_{bit}.json`` (Paddle 3.x, PIR
program) or ``inference_{bit}.pdmodel`` (Paddle 2.x) next to
``inference_{bit}.pdiparams``; ``inference.Config(model_file, params_file)``
takes either. Used by deploy/inference_python/infer.py, by
export_model.py's post-export check, and by the encoder (utils/inference/encoder.py)
on an export of the current weights.

An export is one unit through ``inference_{bit}.manifest.json`` (the
checkpoint manifest's layout, utils/base/checkpoint.py): export_model.py
writes it for the new files *before* it moves any of them into place, so a
folder left by a kill at any point holds either the complete old export
with its manifest, or files that do not all match the manifest; the reader
(``model_files``) refuses the latter in one line. An export without a
manifest (older ones) is used unverified, as before.
"""
import os

import numpy as np

import models
from utils.retrieval.codes import sign_codes
from utils.base.distributed import gpu_count
from utils.base.checkpoint import verify_against_manifest, write_manifest
from utils.base.errors import UserError, one_line
from utils.base.flags import SIDE
from utils.base.runtime import restoring_num_threads
from utils.base.text_files import read_json
from utils.data.caffe_pipeline import PIPELINES

MODEL_SUFFIXES = (".json", ".pdmodel")   # Paddle 3.x first, then 2.x


def model_files(model_dir, bit):
    """(program file, params file) of ``<model_dir>/inference_{bit}``; a
    missing directory or file is a UserError naming what is there."""
    if not os.path.isdir(model_dir):
        raise UserError(f"model dir {model_dir} not found (export one with "
                        f"`python export_model.py --bit {bit} --save-inference-dir {model_dir}`)")
    prefix = os.path.join(model_dir, f"inference_{bit}")
    programs = [prefix + s for s in MODEL_SUFFIXES if os.path.isfile(prefix + s)]
    params = prefix + ".pdiparams"
    if not programs or not os.path.isfile(params):
        present = sorted(f for f in os.listdir(model_dir) if f.startswith("inference_"))
        raise UserError(f"{model_dir} has no complete {bit}-bit inference model (needs "
                        f"inference_{bit}.json or .pdmodel, and inference_{bit}.pdiparams; found: "
                        f"{', '.join(present) or 'nothing'}; --bit must match export_model.py --bit)")
    verify_export(prefix, [programs[0], params, export_info_path(model_dir, bit)])
    return programs[0], params


EXPORT_REMEDY = "run export_model.py again"


def verify_export(prefix, files):
    """Refuse a mix of two exports (or a changed file): each of ``files``
    that exists must match ``<prefix>.manifest.json`` when there is one."""
    for path in files:
        if os.path.isfile(path):
            verify_against_manifest(path, prefix, EXPORT_REMEDY)


def export_files(folder, bit):
    """The names of the ``inference_{bit}.*`` files in ``folder``: one
    export, of either format, and its manifest and sidecar."""
    return sorted(name for name in os.listdir(folder) if name.startswith(f"inference_{bit}."))


def write_export_manifest(folder, bit):
    """The manifest of the export in ``folder`` (all its inference_{bit}.*
    files), written there; export_model.py installs it first."""
    prefix = os.path.join(folder, f"inference_{bit}")
    suffixes = [name[len(f"inference_{bit}"):] for name in export_files(folder, bit)
                if not name.endswith(".manifest.json")]
    write_manifest(prefix, suffixes)
    return prefix + ".manifest.json"


def export_info_path(model_dir, bit):
    """export_model.py's sidecar: the input size the model was exported at."""
    return os.path.join(model_dir, f"inference_{bit}.export.json")


def read_export_info(model_dir, bit):
    """export_model.py's sidecar as a dict ({} when there is none: an older
    export, which is AlexNet's), each field it records that a reader uses
    checked for its type and range."""
    info_path = export_info_path(model_dir, bit)
    if not os.path.isfile(info_path):
        return {}
    try:
        info = read_json(info_path)
    except (OSError, ValueError) as err:
        raise UserError(f"{info_path} is unreadable ({one_line(err)}): export the model again "
                        "with export_model.py")
    problem = export_info_problem(info, bit)
    if problem:
        raise UserError(f"{info_path}: {problem}: not export_model.py's record of this model; "
                        "export it again")
    return info


def export_info_problem(info, bit):
    """What in ``info`` (an export.json) is of the wrong type or range, or None."""
    if not isinstance(info, dict):
        return "not a JSON object"
    valid = {"bit": lambda v: type(v) is int and v == bit,
             "img_size": lambda v: type(v) is int and SIDE.violation(v) is None,
             "arch": lambda v: isinstance(v, str) and v in models.ARCHS,
             "input_pipeline": lambda v: isinstance(v, str) and v in PIPELINES}
    bad = next((key for key, ok in valid.items() if key in info and not ok(info[key])), None)
    return None if bad is None else f"{bad} {str(info[bad])[:40]!r} is not valid here"


def exported_image_size(model_dir, bit, program_file):
    """The side S of the model's [N, 3, S, S] input: from export_model.py's
    sidecar, else from the data op of a PIR (.json) program; None if neither
    says (a Paddle 2.x .pdmodel from elsewhere)."""
    info = read_export_info(model_dir, bit)
    if "img_size" in info:
        return info["img_size"]
    return pir_input_side(program_file) if program_file.endswith(".json") else None


def pir_input_side(program_file):
    """S of the ``data`` op's [-1, 3, S, S] shape in a PIR program, or None."""
    try:
        ops = read_json(program_file)["program"]["regions"][0]["blocks"][0]["ops"]
        for op in ops:
            if str(op.get("#", "")).endswith(".data"):
                shape = next(a["AT"]["D"] for a in op["A"] if a.get("N") == "shape")
                if len(shape) == 4 and shape[2] == shape[3] and shape[2] > 0:
                    return int(shape[2])
    except (OSError, ValueError, KeyError, TypeError, IndexError, StopIteration):
        pass
    return None


def resolve_use_gpu(use_gpu):
    """``None`` = GPU when Paddle has CUDA and a device; True without them is
    a UserError."""
    import paddle
    has_gpu = gpu_count() > 0
    if use_gpu and not paddle.is_compiled_with_cuda():
        raise UserError("--use-gpu True but this Paddle is built without CUDA "
                        "(install paddlepaddle-gpu, or pass --use-gpu False)")
    if use_gpu and not has_gpu:
        raise UserError("--use-gpu True but no CUDA device is visible (pass --use-gpu False)")
    return has_gpu if use_gpu is None else bool(use_gpu)


class InferenceModel:
    """A Paddle Inference predictor for ``<model_dir>/inference_{bit}``:
    ``run(x [N,3,S,S] float32)`` -> z [N, bit]; ``codes(x)`` -> int8 ±1.
    It runs on ``num_threads`` CPU threads and leaves the process's own
    thread count (utils/base/runtime.py) as it found it."""

    def __init__(self, model_dir, bit, use_gpu=False, num_threads=1, gpu_mem_mb=500):
        from paddle import inference
        self.bit = bit
        self.files = model_files(model_dir, bit)
        self.image_size = exported_image_size(model_dir, bit, self.files[0])
        self.use_gpu = bool(use_gpu)
        config = inference.Config(*self.files)
        if self.use_gpu:
            config.enable_use_gpu(gpu_mem_mb, 0)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(max(1, num_threads))
            # oneDNN kernels: ~4-6x Paddle's plain CPU kernels for AlexNet
            # (benchmarks/bench_encode.py), outputs equal to float rounding.
            config.enable_mkldnn()
        # No enable_memory_optim(): with a PIR (.json) program Paddle 3.3 then
        # fails in create_predictor ("Not find predictor_id 0 and pass_name
        # memory_optimize_pass"); the model is small enough without it.
        config.disable_glog_info()
        config.switch_ir_optim(True)
        self.config = config
        try:
            with restoring_num_threads():   # the predictor sets them process-wide
                self.predictor = inference.create_predictor(config)
        except Exception as err:  # a corrupt or foreign model file is bad input
            raise UserError(f"cannot load the inference model {self.files[0]} "
                            f"({type(err).__name__}: {str(err).strip().splitlines()[-1][:200]})")
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def run(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.input.reshape(list(x.shape))
        self.input.copy_from_cpu(x)
        with restoring_num_threads():   # the run leaves them at 1, process-wide
            self.predictor.run()
        return checked_output(self.output.copy_to_cpu(), self.bit, self.files[0])

    def codes(self, x):
        return sign_codes(self.run(x))


def checked_output(z, bit, model_file):
    """``z`` of an exported model, refused in one line unless it is [N, bit]
    (a model of another bit length, or not a HashNet)."""
    if z.ndim != 2 or z.shape[1] != bit:
        raise UserError(f"{model_file} outputs shape {list(z.shape)}, not [N, {bit}]: "
                        f"not a {bit}-bit HashNet (check --bit)")
    return z
