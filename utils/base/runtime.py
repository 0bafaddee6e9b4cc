"""The process's runtime: CPU threads, seeds, the run log and its folder stamp.

Every entry point (training, prediction, export, the demo) sets these up
through this module, so "how many threads" and "which seed" have one answer.
"""
import contextlib
import itertools
import logging
import os
import random
import sys
import time

import numpy as np


def available_cores():
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_process(processes=1):
    """The default thread count: this machine's cores shared by its
    ``processes``, so that several processes do not oversubscribe them."""
    return max(1, available_cores() // max(1, processes))


_num_threads = 1   # what set_num_threads last set (Paddle has no getter)


def set_num_threads(n):
    """Threads for Paddle's CPU kernels (it uses one unless told, and all
    cores roughly double training speed on a 2-core machine) and for the
    numba mAP kernel (numba would take every core in every process)."""
    import paddle
    global _num_threads
    _num_threads = max(1, n)
    paddle.base.core.set_num_threads(_num_threads)
    try:
        import numba
    except ImportError:  # optional: the numpy path has no threads
        return
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def num_threads():
    """The CPU thread count set by ``set_num_threads`` (1 before): a Paddle
    Inference predictor takes its own and should use the same."""
    return _num_threads


@contextlib.contextmanager
def restoring_num_threads():
    """Run a block, then set Paddle's math-library threads back to
    ``num_threads()``. A Paddle Inference predictor sets MKL's thread count,
    process-wide, to its own when it is created and to 1 after every run
    (Paddle 3.3, AnalysisPredictor::ZeroCopyRun). Dygraph's matmuls and
    convolutions run on MKL, whose float sums can depend on that count (on a
    2-core AMD EPYC: conv1's weight gradient; on an AVX-512 Xeon the forward
    too): without this, an evaluation changes the bits of the training after
    it (and leaves it one MKL thread)."""
    try:
        yield
    finally:
        import paddle
        paddle.base.core.set_num_threads(_num_threads)


# Paddle flags for deterministic GPU kernels: cuDNN picks deterministic
# convolution and pooling algorithms (FLAGS_cudnn_deterministic), and no
# algorithm is chosen by timing, which can pick another one in each run
# (exhaustive search, autotune). They exist in CUDA builds only.
DETERMINISTIC_GPU_FLAGS = {"FLAGS_cudnn_deterministic": True,
                           "FLAGS_cudnn_exhaustive_search": False,
                           "FLAGS_use_autotune": False}


def set_deterministic():
    """Make GPU kernels deterministic (``--deterministic``); returns the flags
    set ({} in a CPU build, whose kernels are deterministic already)."""
    import paddle
    if not paddle.is_compiled_with_cuda():
        return {}
    paddle.set_flags(DETERMINISTIC_GPU_FLAGS)
    return dict(DETERMINISTIC_GPU_FLAGS)


def set_seed(seed):
    """Seed python, numpy and paddle: a fixed seed gives the same numbers."""
    import paddle
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def new_run_dir(root, name):
    """A new folder ``root/<name>-YYYYmmdd-HHMMSS`` for this run's logs, made
    by rank 0 and broadcast, so that all processes log into one folder. Two
    runs started in the same second get ``…-HHMMSS`` and ``…-HHMMSS-2``:
    ``mkdir`` is atomic, so only one of them can create a given name."""
    from utils.base import distributed as dist
    path = None
    if dist.is_main_process():
        base = os.path.join(root, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        for n in itertools.count(1):
            path = base if n == 1 else f"{base}-{n}"
            try:
                os.makedirs(path)
                break
            except FileExistsError:
                continue
    return dist.broadcast_from_main(path)


class LogFile(logging.FileHandler):
    """A log file whose full disk stops the run with the one-line error
    (logging's default prints a traceback per line and carries on, losing
    the log silently)."""

    def _open(self):
        # never through a symlink placed where the log goes (utils/base/io.open_own_file)
        from utils.base.io import open_own_file
        fd = open_own_file(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, "log file")
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)

    def handleError(self, record):
        from utils.base.io import disk_full_code, disk_full_error
        err = sys.exc_info()[1]
        code = disk_full_code(err)
        if code is None:
            return super().handleError(record)
        raise disk_full_error(self.baseFilename, code) from err


def close_logger():
    """Detach the run's handlers when it ends: a later message of the same
    process (the next run, a library call) must not go into a finished run's
    log.txt, whose folder may be gone by then."""
    logger = logging.getLogger("hashnet")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def setup_logger(log_dir, main_process=True, rank=0):
    """Log to stdout and ``log_dir/log.txt`` in the main process; other
    ranks write ``log_{rank}.txt`` only, so the console shows each line once."""
    close_logger()
    logger = logging.getLogger("hashnet")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    os.makedirs(log_dir, exist_ok=True)
    name = "log.txt" if main_process else f"log_{rank}.txt"
    handlers = [LogFile(os.path.join(log_dir, name))]
    if main_process:
        handlers.append(logging.StreamHandler(sys.stdout))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger
