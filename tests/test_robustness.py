"""Nothing lost, round two (issue 14): full disks, durable writes with normal
permissions, one checkpoint = one verified unit, one run per output folder,
unique log folders, and list files as editors write them."""
import errno
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from conftest import (REPO, TINY, assert_cli_error, demo_argv, run_python, run_tiny,
                      user_error)
from utils.base import io as uio

LIMITED = """
import resource, signal, sys
sys.path.insert(0, {repo!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
"""


def run_limited(limit, code, *argv, timeout=300):
    """``python -c code`` under a file-size limit of ``limit`` bytes."""
    script = LIMITED.format(repo=REPO, limit=limit) + code
    return run_python("-c", script, *argv, timeout=timeout)


def temp_files(folder):
    return [f for _, _, files in os.walk(folder) for f in files if f.endswith(".tmp")]


# ---------------------------------------------------------------- disk full
def test_file_size_limit_is_one_line_error_old_file_intact_no_temp(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    target.parent.mkdir()
    target.write_text("old\n")
    code = ("from utils.base.errors import run_cli\nfrom utils.base.io import atomic_write_json\n"
            "run_cli(lambda argv: atomic_write_json({'x': 'y' * 4_000_000}, argv[0]), sys.argv[1:])")
    proc = run_limited(1 << 20, code, str(target))
    line = assert_cli_error(proc, f"cannot write {target}: File too large (", "free there)")
    assert " GiB free" in line or " MiB free" in line or " KiB free" in line, line
    assert target.read_text() == "old\n"
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_no_space_and_quota_while_writing_are_user_errors(tmp_path, monkeypatch, code):
    target = tmp_path / "code_cache.npz"
    target.write_bytes(b"previous")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError(code, os.strerror(code))
    message = user_error(uio.atomic_write, str(target), write)
    assert message.startswith(f"cannot write {target}: {os.strerror(code)} (")
    assert target.read_bytes() == b"previous" and temp_files(tmp_path) == []


def test_full_disk_in_the_log_stops_with_the_one_line_error(tmp_path):
    from utils.base.runtime import setup_logger
    log = setup_logger(str(tmp_path), main_process=False, rank=3)
    handler = log.handlers[0]

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    handler.stream.write = full
    try:
        message = user_error(log.info, "a line")
    finally:
        logging.getLogger("hashnet").removeHandler(handler)
    assert message.startswith(f"cannot write {tmp_path / 'log_3.txt'}: No space left on device")


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    def write(tmp):
        raise OSError(errno.EACCES, "Permission denied")
    with pytest.raises(PermissionError):
        uio.atomic_write(str(tmp_path / "x"), write)


def test_training_with_a_full_disk_exits_2_naming_the_checkpoint(demo, tmp_path):
    argv = ["main_single_gpu.py", *demo_argv(demo, tmp_path, "-bs", "16", "-e", "1", "-ee", "1")]
    code = ("import runpy\nsys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = run_limited(50 << 20, code, *argv, timeout=600)   # logs fit; a 230 MB checkpoint not
    assert_cli_error(proc, f"cannot write {tmp_path / 'output' / 'model_best_16.pdopt'}: "
                           "File too large")     # epoch 1's best is the first checkpoint
    out = tmp_path / "output"
    assert not os.path.exists(out / "model_best_16.pdopt") and temp_files(out) == []


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


# ---------------------------------------------------------------- durable writes
def test_atomic_write_fsyncs_file_before_and_folder_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", os.path.basename(dst)))
        real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    uio.atomic_write_json({"a": 1}, str(tmp_path / "m.json"))
    assert events == [("fsync", "file"), ("rename", "m.json"), ("fsync", "dir")]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_get_the_umask_permissions_not_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        uio.atomic_write_json({"a": 1}, str(tmp_path / "m.json"))
        uio.atomic_save({"w": paddle.zeros([2])}, str(tmp_path / "w.pdparams"))
    finally:
        os.umask(old)
    for name in ("m.json", "w.pdparams"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name


# ---------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved 16-bit checkpoint (model, optimizer, training state)."""
    from models.alexnet import AlexNetHash
    from utils.base.checkpoint import save_checkpoint
    paddle.seed(0)
    model = AlexNetHash(16)
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    prefix = str(tmp_path_factory.mktemp("ckpt") / "last_16")
    save_checkpoint(prefix, model, opt, {"epoch": 1})
    return prefix


def test_checkpoint_manifest_names_both_files_with_checksums(checkpoint):
    import hashlib
    with open(checkpoint + ".manifest.json") as f:
        manifest = json.load(f)
    assert sorted(manifest["files"]) == ["last_16.pdopt", "last_16.pdparams"]
    for name, entry in manifest["files"].items():
        with open(os.path.join(os.path.dirname(checkpoint), name), "rb") as f:
            data = f.read()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_changed_checkpoint_file_is_refused_naming_it(checkpoint, tmp_path):
    import shutil
    from models.alexnet import AlexNetHash
    from utils.base.checkpoint import load_weights
    copy = str(tmp_path / "last_16")
    for suffix in (".pdparams", ".pdopt", ".manifest.json"):
        shutil.copy(checkpoint + suffix, copy + suffix)
    load_weights(AlexNetHash(16), copy)                     # intact: loads
    with open(copy + ".pdparams", "r+b") as f:          # one flipped byte deep in fc6
        f.seek(100_000_000)
        byte = f.read(1)
        f.seek(100_000_000)
        f.write(bytes([byte[0] ^ 1]))
    message = user_error(load_weights, AlexNetHash(16), copy)
    assert message.startswith(f"{copy}.pdparams does not match {copy}.manifest.json "
                              "(sha256 differs)")


KILL_BETWEEN_HALVES = """
import os, signal
import utils, paddle
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from tiny_model import TinyHashNet
from utils.base import checkpoint
prefix = sys.argv[1]
model = TinyHashNet(16)
opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
checkpoint.save_checkpoint(prefix, model, opt, {"epoch": 1})     # a complete unit
real_save = checkpoint.atomic_save
def save_then_die(obj, path):
    real_save(obj, path)
    if path.endswith(".pdopt"):
        os.kill(os.getpid(), signal.SIGKILL)     # the .pdparams half is never written
checkpoint.atomic_save = save_then_die
model.hash_layer.weight.set_value(paddle.ones(model.hash_layer.weight.shape))
checkpoint.save_checkpoint(prefix, model, opt, {"epoch": 2})
"""


def test_killed_between_the_two_halves_resume_names_the_mismatch(demo, tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    proc = run_python("-c", "import sys\n" + KILL_BETWEEN_HALVES, str(out / "last_16"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resume = run_tiny("main_single_gpu.py",
                      *demo_argv(demo, tmp_path, "-bs", "16", "-e", "3", "--resume", *TINY))
    assert_cli_error(resume, f"{out / 'last_16'}.pdopt does not match "
                             f"{out / 'last_16'}.manifest.json", "interrupted between its files")


def test_reference_weights_without_a_manifest_still_load(tmp_path):
    from models.alexnet import AlexNetHash
    from utils.base.checkpoint import load_weights
    model = AlexNetHash(16)
    paddle.save(model.state_dict(), str(tmp_path / "weights_16.pdparams"))   # as released
    load_weights(AlexNetHash(16), str(tmp_path / "weights_16"))


# ---------------------------------------------------------------- one run per --output-dir
HOLD_LOCK = """
import sys, time
sys.path.insert(0, {repo!r})
from utils.base.run_lock import output_dir_lock
with output_dir_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_run_on_a_locked_output_dir_refuses_then_a_dead_holder_is_taken_over(
        demo, tmp_path, capsys):
    out = tmp_path / "output"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK.format(repo=REPO), str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = run_python("main_single_gpu.py", *demo_argv(demo, tmp_path, "-bs", "16"))
        line = assert_cli_error(second, f"--output-dir {out} is in use by another training run "
                                        f"(pid {holder.pid} on ", ", started 20")
        assert "wait for it to finish, or pass another --output-dir" in line
        assert not os.path.isdir(tmp_path / "logs") or os.listdir(tmp_path / "logs") == []
    finally:
        holder.kill()
        holder.wait()
    from utils.base.run_lock import output_dir_lock
    with output_dir_lock(str(out)):          # the kernel dropped the dead holder's flock
        pass
    err = capsys.readouterr().err
    assert (f"warning: taking over the lock of --output-dir {out} from a run that is gone "
            f"(pid {holder.pid} on ") in err
    with output_dir_lock(str(out)):          # a clean release leaves nothing to take over
        pass
    assert "taking over" not in capsys.readouterr().err


def test_log_folders_of_runs_started_in_the_same_second_differ(tmp_path, monkeypatch):
    from utils.base.runtime import new_run_dir
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261201-101010")
    first, second, third = (new_run_dir(str(tmp_path), "train-16") for _ in range(3))
    assert [os.path.basename(p) for p in (first, second, third)] == [
        "train-16-20261201-101010", "train-16-20261201-101010-2", "train-16-20261201-101010-3"]
    assert all(os.path.isdir(p) for p in (first, second, third))


# ---------------------------------------------------------------- list files
LIST = ["a.jpg 0 1 0", "b/c.jpg 1 0 0"]


@pytest.mark.parametrize("name, data", [
    ("plain", ("\n".join(LIST) + "\n").encode()),
    ("utf8 BOM", b"\xef\xbb\xbf" + ("\n".join(LIST) + "\n").encode()),
    ("CRLF", ("\r\n".join(LIST) + "\r\n").encode()),
    ("tabs", "\n".join(line.replace(" ", "\t") for line in LIST).encode()),
    ("blank lines, no final newline", ("\n\n" + "\n".join(LIST) + "\n\n  \n").encode().rstrip(b"\n")),
    ("UTF-16 LE (Notepad)", ("\r\n".join(LIST) + "\r\n").encode("utf-16")),
    ("UTF-16 BE", b"\xfe\xff" + ("\r\n".join(LIST)).encode("utf-16-be")),
])
def test_list_files_as_editors_write_them_are_read(tmp_path, name, data):
    from utils.data.list_format import parse_list
    path = tmp_path / "train.txt"
    path.write_bytes(data)
    paths, labels = parse_list(str(path), 3)
    assert paths == ["a.jpg", "b/c.jpg"], name
    np.testing.assert_array_equal(labels, [[0, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("data, fragment", [
    (("\n".join(LIST)).encode("utf-16-le"), "train.txt:1: NUL bytes: the file looks like UTF-16 "
                                            "without a byte-order mark"),
    ("a.jpg 0 1 0\nb/caf\u00e9.jpg 1 0 0\n".encode("cp1252"),
     "train.txt:2: byte 0xe9 is not UTF-8 (saved in a legacy code page?)"),
])
def test_list_files_in_other_encodings_are_refused_naming_the_cause(tmp_path, data, fragment):
    from utils.data.list_format import parse_list
    path = tmp_path / "train.txt"
    path.write_bytes(data)
    assert fragment in user_error(parse_list, str(path), 3)


# ---------------------------------------------------------------- infer.py's image size
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
