"""Durable atomic writes, and one message for a full disk.

Every file the project writes (checkpoints, code caches, JSON, plots, the
exported model, logs) goes through here, so that:

* a crash mid-write never leaves a truncated file in place of a good one:
  the data goes to a temp file beside the target, which is fsync'ed, renamed
  over the target, and then the folder is fsync'ed, so that after a power
  cut the name points at the complete new file or the complete old one;
* the file gets the user's normal permissions (0666 minus the umask), not
  the 0600 that ``tempfile.mkstemp`` gives;
* a full disk, a quota or a file-size limit (ENOSPC, EDQUOT, EFBIG) is a
  one-line UserError naming the path and the free space (exit 2), with the
  previous file intact and no temp file left behind.
"""
import contextlib
import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile

from utils.base.errors import UserError

DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def free_space(path):
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return human_bytes(shutil.disk_usage(path).free)
    except OSError:
        return "unknown"


def disk_full_code(err):
    """The errno when ``err`` is a full disk / quota / file-size limit, else
    None; also for a library's wrapper around it (Paddle re-raises some
    OSErrors as other exceptions carrying the C message)."""
    if isinstance(err, UserError):
        return None
    if isinstance(err, OSError):
        return err.errno if err.errno in DISK_FULL else None
    return next((code for code in DISK_FULL if os.strerror(code) in str(err)), None)


class DiskFullError(UserError):
    """The one-line error of a full disk, quota or file-size limit; ``strerror``
    as an OSError has it, so a caller may reword it for its own flag."""

    def __init__(self, path, code):
        self.path, self.strerror = path, os.strerror(code)
        super().__init__(f"cannot write {path}: {self.strerror} ({free_space(path)} free "
                         "there): free some space, raise the quota or file-size limit, or "
                         "write elsewhere")


def disk_full_error(path, code):
    return DiskFullError(path, code)


@contextlib.contextmanager
def disk_full_is_user_error(path):
    """Inside: a full disk while writing ``path`` becomes the one-line UserError."""
    try:
        yield
    except Exception as err:
        code = disk_full_code(err)
        if code is None:
            raise
        raise disk_full_error(path, code) from err


def check_not_cut_short(path, min_bytes, shown_path=None):
    """For writers that ignore a failed write (Paddle's C++ ``jit.save``
    leaves a file cut at the size limit and raises nothing): a file shorter
    than the ``min_bytes`` its payload needs is the disk-full UserError."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if size < min_bytes:
        shown = shown_path or path
        raise UserError(f"cannot write {shown}: only {human_bytes(size)} of at least "
                        f"{human_bytes(min_bytes)} were written (disk full, quota or file-size "
                        f"limit; {free_space(shown)} free there): free some space, raise the "
                        "quota or file-size limit, or write elsewhere")


def fsync_dir(directory):
    """Make a rename in ``directory`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_refused(path, what):
    return UserError(f"{what} {path} is a symbolic link: refusing to write through it (it could "
                     "make this run overwrite the file it points to); remove the link")


def not_regular(path, what):
    return UserError(f"{what} {path} is not a regular file: remove it")


def open_own_file(path, flags, what):
    """``os.open(path, flags)`` of a file this program writes in a user's
    folder (a lock, a log, a partial download), never through a link it did
    not make: a symlink placed at ``path`` (in a shared folder, say) would
    make the run write to, or empty, the file it points to. A symlink, a
    folder, a FIFO or a device at ``path`` is a one-line UserError naming
    ``what`` it is. (O_NONBLOCK: opening a FIFO must not hang.)"""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise link_refused(path, what) from None
        if err.errno in (errno.EISDIR, errno.ENXIO):
            raise not_regular(path, what) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise not_regular(path, what)
    return fd


def claim_file(path, what):
    """A file a library will open at ``path`` for us (an embedded database):
    created here first as a regular file, or checked if it exists, so that
    the library never writes through a link planted there."""
    os.close(open_own_file(path, os.O_RDWR | os.O_CREAT, what))


def refuse_link(path, what):
    """A path a library will write the ordinary way (Paddle's downloaders
    open it with ``open(path, "wb")``): a link or a non-regular file there
    is refused in one line before the path is handed over."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise link_refused(path, what)
    if not stat.S_ISREG(mode):
        raise not_regular(path, what)


# ------------------------------------------------ temp names and leftovers
# A temp file or folder is named ``<prefix><pid>@<host>.<8 hex><suffix>``, so
# that the next run can tell a leftover of a killed run (its process, on
# this host, is gone) from one another run is still writing, and remove it:
# a killed image-cache build or export leaves gigabytes otherwise.
HOST = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


def own_temp_name(prefix, suffix=""):
    return f"{prefix}{os.getpid()}@{HOST}.{os.urandom(4).hex()}{suffix}"


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        return True
    return True


def remove_leftovers(directory, prefix, suffix=""):
    """Remove the temp files and folders ``own_temp_name(prefix, suffix)``
    made in ``directory`` by processes of this host that are gone; returns
    the bytes freed. Links are removed, never followed."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)@" + re.escape(HOST) + r"\.[0-9a-f]{8}"
                         + re.escape(suffix) + "$")
    freed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        match = pattern.match(name)
        if not match or int(match[1]) == os.getpid() or process_alive(int(match[1])):
            continue
        path = os.path.join(directory, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                freed += sum(os.path.getsize(os.path.join(root, f))
                             for root, _, files in os.walk(path) for f in files)
                shutil.rmtree(path)
            else:
                freed += os.lstat(path).st_size
                os.remove(path)
        except OSError:   # gone meanwhile, or not ours to remove: leave it
            continue
    return freed


def make_temp_dir(directory, prefix):
    """A new private folder ``own_temp_name(prefix)`` in ``directory``."""
    for _ in range(100):
        path = os.path.join(directory, own_temp_name(prefix))
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp folder name {prefix}* in {directory}")


def temp_file_prefix(path):
    """The name prefix of ``atomic_write``'s temp files for ``path``."""
    return f".{os.path.basename(path)}."


def new_temp_file(directory, name):
    """A new empty file beside the target, created with mode 0666 so the
    umask applies (mkstemp would make it 0600)."""
    for _ in range(100):
        tmp = os.path.join(directory, own_temp_name(f".{name}.", ".tmp"))
        try:
            # O_EXCL: never an existing name, and (with O_NOFOLLOW) never through a link
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name beside {name} in {directory}")


def atomic_write(path, write):
    """Call ``write(tmp_path)`` for a temp file beside ``path``, then fsync it,
    rename it into place and fsync the folder (see the module docstring)."""
    atomic_write_all({path: write})


def atomic_write_all(writes):
    """``atomic_write`` of several files as one unit ({path: write}): every
    temp file is written and fsync'ed first, and only when all of them are
    complete are they renamed into place, one after the other; an error in
    any write leaves every old file as it was and no temp file behind."""
    temps = {}
    try:
        for path, write in writes.items():
            directory = os.path.dirname(os.path.abspath(path))
            with disk_full_is_user_error(path):
                os.makedirs(directory, exist_ok=True)
                temps[path] = new_temp_file(directory, os.path.basename(path))
                write(temps[path])
                fsync_file(temps[path])
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    for directory in {os.path.dirname(os.path.abspath(path)) for path in temps}:
        fsync_dir(directory)


def atomic_save(obj, path):
    """paddle.save to a temp file in the same directory, then rename."""
    import paddle
    atomic_write(path, lambda tmp: paddle.save(obj, tmp))


def atomic_write_json(obj, path):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
    atomic_write(path, write)


def check_input_dir(path, flag):
    """A folder the command reads from (``--list-dir``, ``--data-path``):
    a file or a missing path is a UserError naming the flag, at the start."""
    if os.path.isdir(path):
        return
    what = "is a file, not a folder" if os.path.exists(path) else "not found"
    raise UserError(f"{flag} {path} {what}: pass the folder (see docs/data.md)")


def ensure_writable_dir(path, flag):
    """Create ``path`` if needed and prove it takes files, before any work is
    done; otherwise a UserError naming the flag that chose it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} is a file, not a folder: pass a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        if disk_full_code(err):
            raise disk_full_error(path, err.errno)
        raise UserError(f"{flag} {path} is not writable ({err.strerror}): "
                        f"fix its permissions or pass another {flag}")
