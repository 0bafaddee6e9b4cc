"""One training run per --output-dir at a time.

Two runs on one output folder would overwrite each other's checkpoints and
``last_*`` state. The run holds an exclusive ``flock`` on
``<output-dir>/.train.lock`` for its whole length; the file says who holds
it (pid, start time, host), so a second run can name the holder. The kernel
drops a flock when its process dies, however it dies: a lock file left by a
killed run is taken over, with a message naming the dead holder. The lock
file is opened without following a symlink (utils/base/io.open_own_file):
a link placed there in a shared folder would make the run empty its target.
"""
import contextlib
import fcntl
import json
import os
import socket
import sys
import time

from utils.base.errors import UserError
from utils.base.io import ensure_writable_dir, open_own_file
from utils.base.text_files import parse_json

LOCK_NAME = ".train.lock"


def read_holder(fd):
    """The holder record in the lock file, {} if empty or unreadable."""
    try:
        data = os.pread(fd, 4096, 0)
        holder = parse_json(data.decode()) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder):
    if not holder:
        return "pid unknown"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, "
            f"started {holder.get('started')}")


def acquire(directory):
    """The fd holding ``directory``'s lock, or a UserError naming the holder."""
    path = os.path.join(directory, LOCK_NAME)
    fd = open_own_file(path, os.O_RDWR | os.O_CREAT, "--output-dir's lock file")
    for attempt in range(20):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = read_holder(fd)
            if holder or attempt == 19:   # empty: the holder is still writing its record
                os.close(fd)
                raise UserError(f"--output-dir {directory} is in use by another training run "
                                f"({describe(holder)}): wait for it to finish, or pass "
                                "another --output-dir")
            time.sleep(0.05)
    previous = read_holder(fd)
    if previous:
        print(f"warning: taking over the lock of --output-dir {directory} from a run that "
              f"is gone ({describe(previous)})", file=sys.stderr)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    os.fsync(fd)
    return fd


def release(fd):
    """Empty the record (a clean end leaves nothing to take over), then unlock.
    The file stays: deleting it would let a waiting run lock a stale inode."""
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def output_dir_lock(directory, main_process=True):
    """Hold ``directory``'s lock inside (in the main process; the other ranks
    of a data-parallel run share rank 0's folder and lock)."""
    if not main_process:
        yield
        return
    ensure_writable_dir(directory, "--output-dir")
    fd = acquire(directory)
    try:
        yield
    finally:
        release(fd)
