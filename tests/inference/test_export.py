"""utils/inference/export.py: an export is one unit (the reader refuses a mix
of two exports, after a kill at any point of the install), and an export
removes the temp folders of killed exports."""
import hashlib
import os
import shutil

import paddle
import pytest

from support.cli import TINY, run_tiny
from support.demo_set import CROP
from support.errors import user_error
from support.leftovers import leftover_name
from tiny_model import TinyHashNet
from utils.base.io import HOST
from utils.inference.predictor import InferenceModel, model_files

BIT = 16


def export(prefix, out):
    """export_model.py on tiny-net weights: the export unit is the same for any net."""
    result = run_tiny("export_model.py", *TINY, "--bit", str(BIT), "--img_size", str(CROP),
                      "--pretrained", prefix, "--save-inference-dir", str(out),
                      "--num_threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    return str(out)


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    """Exports of two different weights: (old folder, new folder)."""
    root = tmp_path_factory.mktemp("exports")
    folders = []
    for seed in (1, 2):
        paddle.seed(seed)
        prefix = str(root / f"w{seed}_{BIT}")
        paddle.save(TinyHashNet(BIT).state_dict(), prefix + ".pdparams")
        folders.append(export(prefix, root / f"export{seed}"))
    return folders


def digests(folder):
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in os.listdir(folder) if name.startswith(f"inference_{BIT}.")}


def test_export_writes_a_manifest_of_its_files(two_exports):
    names = sorted(digests(two_exports[0]))
    assert f"inference_{BIT}.manifest.json" in names
    assert f"inference_{BIT}.pdiparams" in names and f"inference_{BIT}.export.json" in names


def test_a_mix_of_two_exports_is_refused(two_exports, tmp_path):
    old, new = two_exports
    mixed = str(tmp_path / "mixed")
    shutil.copytree(old, mixed)
    shutil.copy(os.path.join(new, f"inference_{BIT}.pdiparams"), mixed)
    message = user_error(model_files, mixed, BIT)
    assert f"inference_{BIT}.pdiparams does not match" in message
    assert "run export_model.py again" in message


@pytest.mark.parametrize("moves_before_kill", range(5))
def test_killed_install_leaves_old_or_new_never_a_mix(two_exports, tmp_path, monkeypatch,
                                                     moves_before_kill):
    """utils.inference.export.install stopped after each number of its renames (what a
    kill -9 between them leaves): the reader gets the whole old export, the
    whole new one, or a one-line refusal."""
    from utils.inference import export
    old, new = two_exports
    out, staged = str(tmp_path / "out"), str(tmp_path / "staged")
    shutil.copytree(old, out)
    shutil.copytree(new, staged)
    os.remove(os.path.join(staged, f"inference_{BIT}.manifest.json"))  # as jit.save left it
    real_replace, moves = os.replace, []

    def replace_then_die(src, dst):
        if len(moves) == moves_before_kill:
            raise SystemExit("killed")
        moves.append(dst)
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(SystemExit):
        export.install(staged, out, BIT)
    monkeypatch.setattr(os, "replace", real_replace)
    seen = digests(out)
    try:
        model_files(out, BIT)
    except Exception as err:
        assert "does not match" in str(err) and "\n" not in str(err)
        assert seen != digests(old) and seen != digests(new)
        return
    assert seen in (digests(old), digests(new))


def test_export_without_a_manifest_still_loads(two_exports, tmp_path):
    """Exports made before the manifest existed are used as before."""
    legacy = str(tmp_path / "legacy")
    shutil.copytree(two_exports[0], legacy)
    os.remove(os.path.join(legacy, f"inference_{BIT}.manifest.json"))
    InferenceModel(legacy, BIT)


# ---------------------------------------------------------------- one export per bit length
def staged_onnx(folder):
    """What an ONNX export leaves in its temp folder before install (the
    bytes need not be a model: install and the manifest check come first)."""
    os.makedirs(folder)
    with open(os.path.join(folder, f"inference_{BIT}.onnx"), "wb") as f:
        f.write(b"onnx bytes")
    with open(os.path.join(folder, f"inference_{BIT}.export.json"), "w") as f:
        f.write('{"bit": %d, "img_size": 64, "format": "onnx"}' % BIT)
    return folder


def test_installing_the_other_format_replaces_the_whole_export(two_exports, tmp_path):
    from utils.inference import export
    out = str(tmp_path / "out")
    shutil.copytree(two_exports[0], out)
    export.install(staged_onnx(str(tmp_path / "staged")), out, BIT)
    assert sorted(digests(out)) == [f"inference_{BIT}.{s}" for s in ("export.json",
                                                                     "manifest.json", "onnx")]
    message = user_error(model_files, out, BIT)     # no Paddle file of the old export is left
    assert "has no complete 16-bit inference model" in message
    staged = str(tmp_path / "paddle_again")
    shutil.copytree(two_exports[1], staged)
    os.remove(os.path.join(staged, f"inference_{BIT}.manifest.json"))
    export.install(staged, out, BIT)
    assert digests(out) == digests(two_exports[1])   # the .onnx went with the ONNX export


def onnx_export(folder):
    """An ONNX export's files and manifest in ``folder`` (bytes, not a model)."""
    from utils.inference.predictor import write_export_manifest
    staged_onnx(folder)
    write_export_manifest(folder, BIT)
    return folder


def test_the_onnx_file_is_verified_against_its_manifest(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX needs onnxruntime (requirements-dev.txt)")
    from utils.inference.onnx_model import OnnxModel
    folder = onnx_export(str(tmp_path / "onnx"))
    with open(os.path.join(folder, f"inference_{BIT}.onnx"), "ab") as f:
        f.write(b"other weights")
    message = user_error(OnnxModel, folder, BIT)
    assert f"inference_{BIT}.onnx does not match" in message and "\n" not in message


def test_a_stale_onnx_beside_a_paddle_export_is_not_used(two_exports, tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX needs onnxruntime (requirements-dev.txt)")
    from utils.inference.onnx_model import OnnxModel
    out = str(tmp_path / "out")
    shutil.copytree(two_exports[0], out)
    with open(os.path.join(out, f"inference_{BIT}.onnx"), "wb") as f:
        f.write(b"an older export")
    assert "is not one of the files" in user_error(OnnxModel, out, BIT)


def test_fuzzed_manifest_is_read_or_refused_in_one_line(two_exports, tmp_path_factory):
    import json
    from hypothesis import given
    from support.fuzz import FUZZ, json_like, mutated, one_line_or_result
    folder = str(tmp_path_factory.mktemp("fuzzed_export") / "export")
    shutil.copytree(two_exports[0], folder)
    manifest = os.path.join(folder, f"inference_{BIT}.manifest.json")
    seed = json.load(open(manifest))

    @FUZZ
    @given(data=json_like(seed) | mutated([json.dumps(seed).encode()]))
    def fuzz(data):
        with open(manifest, "wb") as f:
            f.write(data if isinstance(data, bytes) else json.dumps(data).encode())
        one_line_or_result(model_files, folder, BIT)
    fuzz()


# ---------------------------------------------------------------- leftovers


def test_export_removes_temp_folders_of_killed_exports(two_exports, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(two_exports[0], out)
    dead = os.path.join(out, leftover_name(".export-"))
    os.mkdir(dead)
    with open(os.path.join(dead, f"inference_{BIT}.pdiparams"), "wb") as f:
        f.write(os.urandom(1000))
    alive = os.path.join(out, f".export-{os.getppid()}@{HOST}.0badf00d")   # a running export
    os.mkdir(alive)
    prefix = os.path.join(os.path.dirname(two_exports[0]), f"w1_{BIT}")
    export(prefix, out)
    assert not os.path.exists(dead) and os.path.isdir(alive)
