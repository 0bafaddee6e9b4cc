"""A Python process under a file-size limit (a full disk without filling
one), and the temp files a cut-short write could leave."""
import os

from support.cli import run_python
from support.paths import REPO

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
