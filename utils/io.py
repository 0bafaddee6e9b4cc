"""Atomic writes: a crash mid-write never leaves a truncated file in place."""
import json
import os
import tempfile

from utils.errors import UserError


def atomic_write(path, write):
    """Call ``write(tmp_path)`` for a temp file beside ``path``, then rename it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path), suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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



def ensure_writable_dir(path, flag):
    """Create ``path`` if needed and prove it takes files, before any work is
    done; otherwise a UserError naming the flag that chose it."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"{flag} {path} is not writable ({err.strerror}): "
                        f"fix its permissions or pass another {flag}")
