"""TIPC with the reference's own configs (PaddleClas format, changed only to
run on CPU: test_tipc/configs/reference/) and the paddle2onnx mode.

The reference's configs train on the ImageNet backbone (main_single_gpu.py's
default --backbone imagenet): prepare.sh fetches it, here from the local
fixture server (tests/download_fixtures.py: paddle.vision's AlexNet layout
with random weights) into a temporary HOME, so the real cache is untouched.
One end-to-end run, one epoch instead of the config's two (every step still
runs): ~1.5-3 minutes on a 2-core CPU, then the paddle2onnx mode on its
checkpoint (~1 minute).
"""
import json
import os
import re

import pytest

from download_fixtures import alexnet_fixture, serve
from support.paths import REPO
from support.tipc import LITE, NO_GPU, bash, statuses

REFERENCE = "test_tipc/configs/reference/hashnet_{bit}/train_infer_python.txt"
ONNX_CONFIG = "test_tipc/configs/hashnet_16/paddle2onnx_infer_python.txt"


@pytest.fixture(scope="module")
def backbone_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    checksums = {}
    alexnet_fixture(str(root), checksums)
    (root / "checksums.json").write_text(json.dumps(checksums))
    server = serve(root)
    yield {"HASHNET_DOWNLOAD_BASE": server.base,
           "HASHNET_CHECKSUMS": str(root / "checksums.json"),
           "HOME": str(tmp_path_factory.mktemp("home"))}
    server.shutdown()


def edited(path, out, *edits):
    """A copy of config ``path`` in ``out`` with each (line regex, line) edit."""
    text = open(os.path.join(REPO, path)).read()
    for pattern, line in edits:
        text, n = re.subn(f"(?m)^{pattern}$", line, text)
        assert n == 1, pattern
    config = out / os.path.basename(path)
    config.write_text(text)
    return str(config)


@pytest.fixture(scope="module")
def reference_run(backbone_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("tipc_reference")
    config = edited(REFERENCE.format(bit=16), out,
                    ("--epoch:.*", "--epoch:lite_train_lite_infer=1|whole_train_whole_infer=150"))
    env = dict(backbone_env, TIPC_OUTPUT_DIR=str(out))
    prep = bash("test_tipc/prepare.sh", config, LITE, env=env)
    assert prep.returncode == 0, prep.stderr[-3000:]
    proc = bash("test_tipc/test_train_inference_python.sh", config, LITE, env=env)
    yield out, env, proc
    for big in ("*.pdparams", "*.pdopt", "*.pdiparams", "*.onnx"):
        for path in out.rglob(big):
            path.unlink()


def test_reference_configs_differ_from_the_reference_only_for_cpu():
    """The changed lines, and nothing else, against the reference's values."""
    for bit in (16, 32, 48, 64):
        lines = open(os.path.join(REPO, REFERENCE.format(bit=bit))).read().splitlines()
        assert lines[2:5] == ["python:python", "gpu_list:0", "use-gpu:False|False"]
        assert lines[27] == "--use-gpu:False"
        assert f"infer_export:export_model.py --bit={bit}" in lines
        assert lines[30] == "--img-path:./resources/COCO_val2014_000000403864.jpg"


def test_reference_config_runs_every_step(reference_run):
    out, _, proc = reference_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = statuses(proc.stdout)
    assert [verdict for verdict, _ in found] == ["successfully"] * 4, proc.stdout
    scripts = ["main_single_gpu.py --bit=16", "main_single_gpu.py --eval", "export_model.py",
               "deploy/inference_python/infer.py"]
    run = out / "hashnet_16" / LITE / "gpus_0"
    for (_, command), script in zip(found, scripts):
        assert f"python {script}" in command, (script, command)
    # the reference's meanings: the checkpoint in the driver's folder, exported
    # there, inferred from there, on the --img-path photo, with --benchmark
    assert f"--pretrained {run}/model_best_16" in found[1][1]
    assert f"--save-inference-dir {run}/inference" in found[2][1]
    assert f"--model-dir {run}/inference" in found[3][1]
    assert "--img-path ./resources/COCO_val2014_000000403864.jpg" in found[3][1]
    log = (run / "infer_use_gpu_False.log").read_text()
    assert "benchmark (CPU" in log


def test_use_gpu_true_without_a_gpu_is_skipped_with_the_reason(reference_run, tmp_path):
    """The reference's unchanged use-gpu:True entry: every step skipped, exit 0."""
    _, env, _ = reference_run
    config = edited(REFERENCE.format(bit=16), tmp_path, ("use-gpu:.*", "use-gpu:True|True"),
                    ("--use-gpu:.*", "--use-gpu:True|False"))
    proc = bash("test_tipc/test_train_inference_python.sh", config, LITE,
                env=dict(env, TIPC_OUTPUT_DIR=str(tmp_path)))
    if "GPU(s) visible" in proc.stderr and " 0 GPU(s)" not in proc.stderr:
        pytest.skip("this machine has a GPU")
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = statuses(proc.stdout)
    assert [v for v, _ in found] == ["skipped"] * 5, proc.stdout
    assert all(NO_GPU in command for _, command in found)


def test_paddle2onnx_mode_on_the_trained_checkpoint(reference_run):
    pytest.importorskip("paddle2onnx", reason="the paddle2onnx mode needs paddle2onnx")
    pytest.importorskip("onnxruntime", reason="the paddle2onnx mode needs onnxruntime")
    out, env, _ = reference_run
    config = edited(ONNX_CONFIG, out,
                    ("--pretrained:.*", "--pretrained:{tipc_output}/hashnet_16/"
                                        "lite_train_lite_infer/gpus_0/model_best_16"),
                    ("--img-path:.*", "--img-path:./resources/COCO_val2014_000000403864.jpg"),
                    ("--dataset:.*", "--dataset:coco_lite"),
                    ("--data-path:.*", "--data-path:./datasets/coco_lite/"),
                    ("--list-dir:.*", "--list-dir:./data/coco_lite"))
    proc = bash("test_tipc/test_paddle2onnx.sh", config, LITE, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = statuses(proc.stdout)
    assert [v for v, _ in found] == ["successfully"] * 2, proc.stdout
    assert "export_model.py --format onnx" in found[0][1]
    assert "infer.py --use-onnx True" in found[1][1]
    run = out / "hashnet_16" / "paddle2onnx_lite_train_lite_infer"
    assert "export check OK: onnxruntime vs dygraph" in (run / "paddle2onnx.log").read_text()
    results = (out / "hashnet_16" / "results_paddle2onnx.log").read_text().splitlines()
    assert results == proc.stdout.splitlines()


def test_paddle2onnx_without_a_checkpoint_is_a_config_error(tmp_path):
    proc = bash("test_tipc/test_paddle2onnx.sh", ONNX_CONFIG, LITE,
                env={"TIPC_OUTPUT_DIR": str(tmp_path)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no checkpoint" in proc.stderr and "test_train_inference_python.sh first" in proc.stderr
