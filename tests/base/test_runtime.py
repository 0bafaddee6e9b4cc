"""utils/base/runtime.py: a run's log (a full disk stops the run with the
one-line error; a log file that is a link is refused) and its log folders
(distinct for runs started in the same second)."""
import errno
import logging
import os
import time

import pytest

from support.errors import user_error
from support.victim import VICTIM_TEXT, victim
from utils.base.errors import UserError
from utils.base.runtime import LogFile


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


def test_symlinked_log_file_is_refused(tmp_path):
    target = victim(tmp_path)
    os.symlink(target, tmp_path / "log.txt")
    with pytest.raises(UserError, match="log file .*log.txt is a symbolic link"):
        LogFile(str(tmp_path / "log.txt"))
    assert target.read_text() == VICTIM_TEXT
    logging.shutdown()


def test_log_folders_of_runs_started_in_the_same_second_differ(tmp_path, monkeypatch):
    from utils.base.runtime import new_run_dir
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261201-101010")
    first, second, third = (new_run_dir(str(tmp_path), "train-16") for _ in range(3))
    assert [os.path.basename(p) for p in (first, second, third)] == [
        "train-16-20261201-101010", "train-16-20261201-101010-2", "train-16-20261201-101010-3"]
    assert all(os.path.isdir(p) for p in (first, second, third))
