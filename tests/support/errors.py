"""The one-line error contract: a ``UserError`` in process, and at the
command line exit 2 with one ``error: ...`` line and no traceback."""
import pytest

from utils.base.errors import UserError


def user_error(fn, *args, **kwargs):
    """Call fn, require a UserError, return its message."""
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def assert_cli_error(proc, *fragments):
    """A bad-input exit: code 2, one ``error: ...`` line, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
