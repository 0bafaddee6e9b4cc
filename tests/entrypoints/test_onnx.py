"""export_model.py --format onnx -> deploy/inference_python/infer.py --use-onnx.

Needs paddle2onnx and onnxruntime (requirements-dev.txt); skipped with the
reason without them. AlexNet's adaptive pool does not convert at the 64 px
demo crops (utils/inference/onnx_model.py has the rule), so the export here
is at its training crop, 224 px, although the checkpoint was trained on 64.
"""
import json
import os
import re

import numpy as np
import pytest

pytest.importorskip("paddle2onnx", reason="ONNX export needs paddle2onnx (requirements-dev.txt)")
pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime (requirements-dev.txt)")

from support.centred_model import BIT  # noqa: E402
from support.cli import run_script  # noqa: E402
from support.demo_set import query_path  # noqa: E402
from support.errors import assert_cli_error  # noqa: E402
from support.threads import THREADS  # noqa: E402
from utils.base.errors import UserError  # noqa: E402
from utils.inference.checkpoints import load_trained_model  # noqa: E402
from utils.inference.export import (ExportMismatch, allowed_difference, check_batch,  # noqa: E402
                                    dygraph_outputs, export_checked)

SIDE = 224
CHECK = re.compile(r"export check OK: onnxruntime vs dygraph .* max abs diff (\S+) "
                   r"\(tolerance 0.0001 x max\(1, max \|z\|\)\), (\d+) of (\d+) code bits differ")


@pytest.fixture(scope="module")
def onnx_export(trained, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("onnx")
    proc = run_script("export_model.py", "--bit", str(BIT), "--img_size", str(SIDE),
                      "--pretrained", trained.prefix, "--save-inference-dir", str(out),
                      "--format", "onnx", "--num_threads", str(THREADS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out), proc.stdout


@pytest.mark.float_sensitive
def test_onnx_export_passes_its_parity_check(onnx_export, trained):
    """onnxruntime's kernels against Paddle's: within the tool's relative
    tolerance, and a code bit may differ only where z is closer to 0 than it."""
    out, stdout = onnx_export
    check = CHECK.search(stdout)
    assert check, stdout
    print(check.group(0))   # the figures (-s): max |dz| and the bits that differ
    model, _ = load_trained_model(BIT, trained.prefix)
    z = dygraph_outputs(model, check_batch(4, SIDE))   # the batch the tool checks
    allowed = allowed_difference(z)
    assert float(check.group(1)) <= allowed
    assert int(check.group(2)) <= int((np.abs(z) <= allowed).sum())
    assert sorted(os.listdir(out)) == [f"inference_{BIT}.export.json",   # one unit, with its
                                       f"inference_{BIT}.manifest.json", f"inference_{BIT}.onnx"]
    info = json.load(open(os.path.join(out, f"inference_{BIT}.export.json")))
    assert info["format"] == "onnx" and info["img_size"] == SIDE


def test_failed_check_installs_nothing(trained, tmp_path):  # noqa: F811
    model, _ = load_trained_model(BIT, trained.prefix)
    with pytest.raises(ExportMismatch):
        export_checked(model, str(tmp_path), SIDE, {}, batch=2, num_threads=THREADS,
                       tolerance=-1.0, fmt="onnx")
    assert os.listdir(tmp_path) == []   # the temporary folder is gone too


@pytest.mark.parametrize("side,map_size", [(64, "1x1"), (288, "8x8")])
def test_size_onnx_cannot_express_is_one_line_and_installs_nothing(trained, tmp_path, side,
                                                                   map_size):
    """64 px would not load in onnxruntime, 288 px would differ from Paddle:
    both stop before any export, naming the map and the size that converts."""
    model, _ = load_trained_model(BIT, trained.prefix)
    with pytest.raises(UserError, match=f"--img_size {side} .* {map_size} map for 6x6 .* "
                                        "--img_size 224"):
        export_checked(model, str(tmp_path), side, {}, batch=2, num_threads=THREADS, fmt="onnx")
    assert os.listdir(tmp_path) == []


def test_infer_runs_the_onnx_file(demo, trained, onnx_export, tmp_path):  # noqa: F811
    img = query_path(demo, trained.query)
    proc = run_script("deploy/inference_python/infer.py", "--bit", str(BIT), "--dataset", "demo",
                      "--data-path", demo.image_dir, "--list-dir", demo.list_dir,
                      "--model-dir", onnx_export[0], "--img-path", img,
                      "--save-path", str(tmp_path), "--use-onnx", "True", "--use-gpu", "False",
                      "--num_threads", str(THREADS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnxruntime" in proc.stdout and f"inference_{BIT}.onnx" in proc.stdout
    assert "at Hamming distance 0" in proc.stdout   # the query is in the database


def test_infer_use_onnx_without_the_file_is_one_line(demo, trained, tmp_path):  # noqa: F811
    proc = run_script("deploy/inference_python/infer.py", "--bit", str(BIT), "--dataset", "demo",
                      "--data-path", demo.image_dir, "--list-dir", demo.list_dir,
                      "--model-dir", str(tmp_path), "--img-path", query_path(demo, trained.query),
                      "--save-path", str(tmp_path), "--use-onnx", "--use-gpu", "False")
    assert_cli_error(proc, f"inference_{BIT}.onnx not found", "--format onnx")
