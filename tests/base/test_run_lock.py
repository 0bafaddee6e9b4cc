"""utils/base/run_lock.py: one training run per --output-dir (a second run is
refused while the first holds the lock, a dead holder's lock is taken
over); a lock file that is a link, a FIFO or a folder is refused in one
line and the file a link points to is left untouched."""
import os
import subprocess
import sys

from support.cli import run_python
from support.demo_set import demo_argv
from support.errors import assert_cli_error, user_error
from support.paths import REPO
from support.victim import VICTIM_TEXT, victim
from utils.base import run_lock


def test_symlinked_train_lock_leaves_the_victim_untouched(demo, tmp_path):
    """A .train.lock symlink in --output-dir: the run refuses it in one line
    instead of emptying the file it points to and exiting 0."""
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


def test_a_lock_file_of_another_shape_is_read_as_no_holder(tmp_path):
    """The holder record is JSON we wrote; anything else (a list, a number)
    is an unknown holder, never an exception."""
    for text in ("[1, 2]", "7", '{"pid": 1', "[" * 10_000):
        path = tmp_path / "lock"
        path.write_text(text)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert run_lock.read_holder(fd) == {}
            assert run_lock.describe(run_lock.read_holder(fd)) == "pid unknown"
        finally:
            os.close(fd)
