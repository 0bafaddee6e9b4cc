"""utils/base/io.py: durable writes (temp file, fsync, rename, fsync of the
folder) with normal permissions; a full disk or a file-size limit is one
line, the old file intact and no temp file left; a write over a link
replaces the link, not its target."""
import errno
import os
import stat

import paddle
import pytest

from support.errors import assert_cli_error, user_error
from support.file_size_limit import run_limited, temp_files
from support.victim import VICTIM_TEXT, victim
from utils.base import io as uio
from utils.base.io import atomic_write_json, open_own_file


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


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    def write(tmp):
        raise OSError(errno.EACCES, "Permission denied")
    with pytest.raises(PermissionError):
        uio.atomic_write(str(tmp_path / "x"), write)


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


# ---------------------------------------------------------------- links


def test_atomic_write_replaces_a_link_not_its_target(tmp_path):
    """An output path that is a symlink: the link is replaced by the new
    file, the file it pointed to is not written."""
    target = victim(tmp_path)
    os.symlink(target, tmp_path / "out.json")
    atomic_write_json({"a": 1}, str(tmp_path / "out.json"))
    assert not os.path.islink(tmp_path / "out.json")
    assert target.read_text() == VICTIM_TEXT


def test_open_own_file_creates_a_regular_file(tmp_path):
    fd = open_own_file(str(tmp_path / "new"), os.O_WRONLY | os.O_CREAT, "test file")
    os.close(fd)
    assert (tmp_path / "new").is_file()
