"""export_model.py -> deploy/inference_python/infer.py on the tiny demo set.

The exported model must give the dygraph model's codes; infer.py must give
predict.py's top-k; bad inputs are one-line errors; a destination that is a
file stops export_model.py before it loads anything, and an export cut
short by the disk installs nothing.
"""
import json
import os
import re

import numpy as np
import paddle
import pytest

from support.centred_model import BIT, assert_codes_agree, brute_topk
from support.cli import run_predict_inprocess, run_python, run_script
from support.demo_set import CROP, RESIZE, database_batch, predict_argv, query_path
from support.errors import assert_cli_error
from support.file_size_limit import run_limited
from support.threads import THREADS
from utils.inference.export import allowed_difference
from utils.inference.predictor import InferenceModel, model_files


INFER = "deploy/inference_python/infer.py"


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):  # noqa: F811
    prefix = trained.prefix
    out = tmp_path_factory.mktemp("inference")
    proc = run_script("export_model.py", "--bit", str(BIT), "--img_size", str(CROP),
                      "--pretrained", prefix, "--save-inference-dir", str(out),
                      "--num_threads", str(THREADS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out), proc.stdout


def infer_argv(demo, model_dir, img, save, *extra, bit=BIT):
    return ["--bit", str(bit), "--dataset", "demo", "--data-path", demo.image_dir,
            "--list-dir", demo.list_dir, "--model-dir", model_dir, "--crop-size", str(CROP),
            "--resize-size", str(RESIZE), "--img-path", img, "--save-path", str(save),
            "--use-gpu", "False", "--num_threads", str(THREADS), *extra]


def test_export_writes_the_model_and_passes_its_check(exported):
    out, stdout = exported
    assert "export check OK" in stdout and "max abs diff" in stdout, stdout
    program, params = model_files(out, BIT)
    # Paddle 3.x writes a PIR program (.json), Paddle 2.x a .pdmodel
    expected = ".json" if int(paddle.__version__.split(".")[0]) >= 3 else ".pdmodel"
    assert program == os.path.join(out, f"inference_{BIT}{expected}")
    assert os.path.getsize(params) > 1e6
    assert not [f for f in os.listdir(out) if f.startswith(".export-")]  # temp dir removed


def test_exported_codes_equal_dygraph_codes(demo, trained, exported):  # noqa: F811
    """Paddle Inference's oneDNN kernels against dygraph's: within the export
    check's tolerance, and a code bit differs only where z is closer to 0."""
    model = trained.model       # the dygraph model the checkpoint was saved from
    x = database_batch(demo)[:16]
    saved = InferenceModel(exported[0], BIT, use_gpu=False, num_threads=THREADS)
    with paddle.no_grad():
        z = model(paddle.to_tensor(x)).numpy()
    allowed = allowed_difference(z)
    assert np.median(np.abs(z)) > 1000 * allowed      # the tolerance is small next to |z|
    assert np.abs(saved.run(x) - z).max() <= allowed
    assert_codes_agree(saved.codes(x), z)   # a bit differs only where |z| <= allowed
    assert len(np.unique(saved.codes(x), axis=0)) > 8   # not a collapsed model


def test_infer_gives_predict_topk(demo, trained, exported, tmp_path, capsys):  # noqa: F811
    q = trained.query
    img = query_path(demo, q)
    run_predict_inprocess(capsys, predict_argv(demo, trained.prefix, img, tmp_path))
    proc_i = run_script(INFER, *infer_argv(demo, exported[0], img, tmp_path, "--benchmark", "True",
                                           "--warmup", "1", "--batch-size", "2",
                                           "--db-batch-size", "7", "--topk", "10"))
    assert proc_i.returncode == 0, proc_i.stderr[-3000:]
    stem = os.path.join(tmp_path, f"retrieval_{os.path.splitext(os.path.basename(img))[0]}_16")
    with open(stem + ".json") as f, open(stem + "_inference.json") as g:
        dygraph, inference = json.load(f), json.load(g)
    # Paddle Inference's codes may differ from dygraph's only where |z| <=
    # allowed_difference(z) (the test above): the rankings agree on the images
    # whose code cannot differ (all of them, unless some z is that near 0)
    with paddle.no_grad():
        z = trained.model(paddle.to_tensor(database_batch(demo))).numpy()
    free = (np.abs(z) <= allowed_difference(z)).any(axis=1)   # codes that may differ
    assert not free[q]                                        # the query's own is settled
    order, dist = brute_topk(trained.codes, q, 10)   # the exact ranking, ties by index
    reference = [(i, d) for i, d in zip(order, dist) if not free[i]]
    assert len(inference["topk"]) == len(dygraph["topk"]) == 10
    settled = [[t for t in r["topk"] if not free[t["index"]]] for r in (inference, dygraph)]
    n = min(len(reference), *map(len, settled))
    assert settled[0][:n] == settled[1][:n]
    assert [(t["index"], t["distance"]) for t in settled[0][:n]] == reference[:n]
    # its own cache, fingerprinted by the model files; encoded in batches
    assert inference["codes"] == "built"
    assert os.path.isfile(os.path.join(tmp_path, "database_code_demo_16_inference.npz"))
    for stage in ("preprocess", "inference", "postprocess"):
        assert f"  {stage} " in proc_i.stdout
    assert "images/s end to end" in proc_i.stdout and "batch 2, 10 runs after 1 warm-up" in proc_i.stdout
    bench = inference["benchmark"]
    assert (bench["batch_size"], bench["runs"]) == (2, 10)
    assert bench["images_per_s"] == pytest.approx(1000 * 2 / sum(bench["ms"].values()))
    printed = re.search(r"throughput\s+([\d.]+) images/s end to end", proc_i.stdout)
    assert float(printed.group(1)) == pytest.approx(bench["images_per_s"], abs=0.051)
    # a second run reuses the cache
    again = run_script(INFER, *infer_argv(demo, exported[0], img, tmp_path))
    assert again.returncode == 0 and "codes: cache" in again.stdout, again.stderr[-2000:]


def test_failed_export_check_installs_nothing(trained, tmp_path, monkeypatch, capsys):  # noqa: F811
    import export_model
    monkeypatch.setattr(export_model, "TOLERANCE", -1.0)   # no model can pass
    with pytest.raises(SystemExit) as info:
        export_model.main(["--bit", str(BIT), "--img_size", str(CROP), "--pretrained", trained.prefix,
                           "--save-inference-dir", str(tmp_path), "--num_threads", str(THREADS)])
    assert info.value.code == 1
    assert "export check FAILED" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["missing_model_dir", "bit_mismatch", "missing_image",
                                  "unreadable_image", "gpu_without_cuda"])
def test_bad_input_is_a_one_line_error(demo, trained, exported, tmp_path, case):  # noqa: F811
    img = query_path(demo, trained.query)
    argv = infer_argv(demo, exported[0], img, tmp_path)
    if case == "missing_model_dir":
        argv[argv.index("--model-dir") + 1] = str(tmp_path / "no_model")
        expect = "model dir"
    elif case == "bit_mismatch":      # a 16-bit export asked for as 32 bits
        argv[argv.index("--bit") + 1] = "32"
        expect = "no complete 32-bit inference model"
    elif case == "missing_image":
        argv[argv.index("--img-path") + 1] = str(tmp_path / "nope.jpg")
        expect = "not found"
    elif case == "unreadable_image":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
        argv[argv.index("--img-path") + 1] = str(tmp_path / "broken.png")
        expect = "unreadable"
    else:
        argv[argv.index("--use-gpu") + 1] = "True"
        expect = "CUDA"
    proc = run_script(INFER, *argv)
    if case == "gpu_without_cuda" and paddle.is_compiled_with_cuda():
        # a CUDA build: the error is only for a machine without a visible device
        if paddle.device.cuda.device_count() > 0:
            assert proc.returncode == 0, proc.stderr[-2000:]
            return
    assert_cli_error(proc, expect)


# ---------------------------------------------------------------- export_model.py's destination


def test_export_dir_that_is_a_file_stops_before_loading(tmp_path, a_file):
    """No checkpoint is even read: the destination is checked first."""
    result = run_python("export_model.py", "--bit", "16", "--pretrained", str(tmp_path / "none"),
                        "--save-inference-dir", a_file)
    assert_cli_error(result, "--save-inference-dir", "is a file, not a folder")


def test_export_cut_short_by_the_disk_is_an_error_and_installs_nothing(tmp_path):
    from models.alexnet import AlexNetHash
    prefix = tmp_path / "w_16"
    paddle.save(AlexNetHash(16).state_dict(), str(prefix) + ".pdparams")
    out = tmp_path / "inference"
    code = ("import runpy\nsys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = run_limited(50 << 20, code, "export_model.py", "--bit", "16", "--img_size", "64",
                       "--pretrained", str(prefix), "--save-inference-dir", str(out))
    assert_cli_error(proc, f"cannot write {out / 'inference_16.pdiparams'}: only 50.0 MiB of "
                           "at least 217.7 MiB were written")
    assert os.listdir(out) == []       # no model, no .export-* temp folder
