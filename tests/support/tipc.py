"""Running the TIPC drivers (test_tipc/) and reading their status lines."""
import os
import re
import subprocess

from support.paths import REPO

LITE = "lite_train_lite_infer"
NO_GPU = "needs a GPU: none visible to Paddle"
STATUS = re.compile(r"^Run (successfully|failed|skipped) with command - (.*)$")


def bash(*args, env=None, timeout=900):
    return subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def statuses(stdout):
    """[(verdict, command)] of the driver's status lines; any other stdout
    line is a failure of the driver's contract."""
    found = []
    for line in stdout.splitlines():
        m = STATUS.match(line)
        assert m, f"unexpected stdout line: {line!r}"
        found.append(m.groups())
    return found
