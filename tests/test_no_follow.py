"""Issue 25, rule 2: never follow a link we did not make. Lock files, logs,
partial downloads and temp files in user folders are opened without
following a symlink; a link or a non-regular file there is one line."""
import logging
import os

import pytest

from conftest import assert_cli_error, demo_argv, run_python, user_error
from test_download import blob, mirror, server  # noqa: F401  (fixtures)
from utils.base import run_lock
from utils.base.download import DownloadFailed, fetch
from utils.base.errors import UserError
from utils.base.io import atomic_write_json, open_own_file
from utils.base.runtime import LogFile

VICTIM_TEXT = "precious: must survive\n"


def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


def test_symlinked_train_lock_leaves_the_victim_untouched(demo, tmp_path):
    """The issue's case: a .train.lock symlink in --output-dir; the run used
    to empty the file it points to and exit 0."""
    target = victim(tmp_path)
    out = tmp_path / "output"
    out.mkdir()
    os.symlink(target, out / run_lock.LOCK_NAME)
    result = run_python("main_single_gpu.py", *demo_argv(demo, tmp_path, "--epoch", "1"))
    line = assert_cli_error(result, ".train.lock is a symbolic link", "remove the link")
    assert line.startswith("error: --output-dir's lock file")
    assert target.read_text() == VICTIM_TEXT
    assert not list(out.glob("*.pdparams"))


def test_lock_refuses_a_dangling_link(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / run_lock.LOCK_NAME)
    assert "symbolic link" in user_error(run_lock.acquire, str(tmp_path))
    assert not (tmp_path / "nowhere").exists()


def test_lock_refuses_a_fifo_without_hanging(tmp_path):
    os.mkfifo(tmp_path / run_lock.LOCK_NAME)
    assert "not a regular file" in user_error(run_lock.acquire, str(tmp_path))


def test_lock_refuses_a_folder(tmp_path):
    (tmp_path / run_lock.LOCK_NAME).mkdir()
    assert "not a regular file" in user_error(run_lock.acquire, str(tmp_path))


def test_regular_lock_still_works(tmp_path):
    with run_lock.output_dir_lock(str(tmp_path)):
        assert "pid" in (tmp_path / run_lock.LOCK_NAME).read_text()


def test_symlinked_log_file_is_refused(tmp_path):
    target = victim(tmp_path)
    os.symlink(target, tmp_path / "log.txt")
    with pytest.raises(UserError, match="log file .*log.txt is a symbolic link"):
        LogFile(str(tmp_path / "log.txt"))
    assert target.read_text() == VICTIM_TEXT
    logging.shutdown()


def test_symlinked_partial_download_is_refused(mirror, tmp_path):  # noqa: F811
    target = victim(tmp_path)
    remote = blob(mirror, "p.bin", os.urandom(2000))
    os.symlink(target, tmp_path / "p.bin.part")
    with pytest.raises((UserError, DownloadFailed), match="symbolic link"):
        fetch(remote, str(tmp_path / "p.bin"))
    assert target.read_text() == VICTIM_TEXT


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
