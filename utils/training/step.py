"""One training step and what happens around it, for every recipe: the step,
the stop signal, the RNG streams of an epoch. Below the engine and the
recipes, which both call it (the recipes never call back up into the engine).
"""
import contextlib
import math
import random
import signal
import threading

import numpy as np
import paddle

from utils.base import distributed as dist

# With several processes, the check "did a stop signal reach any process?" is
# a collective (every process waits for all); it runs every STOP_CHECK_STEPS
# global steps, so a stop lands within that many steps (at a step boundary).
STOP_CHECK_STEPS = 10


def seed_epoch(seed, epoch):
    """Reseed paddle (dropout) from (seed, epoch, rank): an epoch's random
    draws are then the same whether or not the run was resumed before it."""
    paddle.seed(int(np.random.SeedSequence([seed, epoch, dist.rank()]).generate_state(1)[0]))


def train_step(model, criterion, optimizer, x, y, ind, wanted=None):
    """One optimisation step; returns the loss value. A non-finite loss is
    returned without stepping, so the parameters stay as they were.
    ``wanted``: the global batch's indices when images may be skipped; those
    missing from the gathered batch leave the memory bank (every process
    drops the same ones at the same step, so the banks stay equal)."""
    z = model(x)                                        # [B, bit]
    z, y, ind = dist.gather_batch(z, y, ind)            # [W·B, ...]: the global batch
    if wanted is not None:
        criterion.exclude(np.setdiff1d(wanted, ind.numpy()))
    loss = criterion(z, y, ind)                         # against the whole bank
    value = float(loss)
    if math.isfinite(value):
        loss.backward()
        optimizer.step()
        optimizer.clear_grad(set_to_zero=False)  # zeroing 58M grads costs ~0.6 s a step on CPU
    return value


class StopFlag:
    """SIGINT/SIGTERM only raise this flag: the loop finishes its step, saves
    `last` and exits 128+signum, so an interrupted run resumes exactly."""

    def __init__(self):
        self.signum = None
        self.agreed = False   # set by stop_agreed: every process stops at this step

    def __call__(self, signum, frame):
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        """Catch SIGINT/SIGTERM while training; the old handlers come back after."""
        self.signum, self.agreed = None, False
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


STOP = StopFlag()


def stop_agreed(global_step):
    """True when every process is to stop after this step: a stop signal
    reached one of them. One process checks every step; several, every
    STOP_CHECK_STEPS-th global step (a collective; see there)."""
    if dist.world_size() > 1 and global_step % STOP_CHECK_STEPS:
        return False
    if dist.any_process(STOP.signum is not None):
        STOP.signum = STOP.signum or signal.SIGTERM
        STOP.agreed = True
        return True
    return False


def rng_states():
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "paddle": paddle.get_rng_state()}


def restore_rng(states):
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    paddle.set_rng_state(states["paddle"])
