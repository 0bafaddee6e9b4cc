"""Everything that differs between one process and several, in one place.

In a single process every function here is the identity (or rank 0), so the
engine has one code path. With several processes (one per GPU with nccl, or
``--nprocs N`` CPU processes with gloo), started by :func:`launch` or by
``python -m paddle.distributed.launch``:

* the training set is sharded by ``utils.data.loaders.ShardedBatchSampler``;
* :func:`gather_batch` all-gathers each step's (z, y, ind), so every process
  computes the same loss on the global batch and keeps the same memory bank;
  its backward hands each process the gradient of its own rows, scaled so
  that ``paddle.DataParallel``'s averaging all-reduce yields exactly the
  single-process gradient of the global batch;
* :func:`gather_in_order` all-gathers evaluation codes into dataset order,
  so mAP is computed on the same data as in one process;
* rank 0 alone writes ``log.txt``, metrics and checkpoints (the engine asks
  :func:`is_main_process`); the others write ``log_{rank}.txt``
  (``utils.base.runtime.setup_logger``).
"""
import multiprocessing.connection
import os
import signal
import sys
import time

import numpy as np
import paddle
import paddle.distributed as pdist
from paddle.autograd import PyLayer

from utils.base.errors import UserError, run_cli


def world_size():
    return pdist.get_world_size()


def rank():
    return pdist.get_rank()


def is_main_process():
    return rank() == 0


def launcher_count(name, default, low):
    """The whole number ``paddle.distributed.launch`` put in ``$name``
    (``default`` when unset), checked to be >= ``low``."""
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.strip().isdigit() or int(value) < low:
        raise UserError(f"{name}={value[:40]!r} is not a whole number >= {low} (set by "
                        "paddle.distributed.launch): unset it, or start with the launcher")
    return int(value)


def local_rank():
    """This process's rank on its machine (``paddle.distributed.launch`` sets
    it; processes of ``spawn`` all run on one machine, so it is the rank)."""
    return launcher_count("PADDLE_RANK_IN_NODE", rank(), 0)


def local_process_count():
    """Processes of this run on this machine (they share its cores):
    ``paddle.distributed.launch`` says so per node; spawned ones are all here."""
    return launcher_count("PADDLE_LOCAL_SIZE", world_size(), 1)


def wrap_model(model):
    """DataParallel in a multi-process run, the model itself otherwise."""
    return paddle.DataParallel(model) if world_size() > 1 else model


# ---------------------------------------------------------------- collectives
def _all_gather_rows(x, sizes):
    """Every process's ``x`` ([sizes[r], ...]) concatenated in rank order.
    Rows are padded to the largest size for the collective (gloo and nccl
    need equal shapes) and the padding is cut off again."""
    top = max(sizes)
    if x.shape[0] < top:
        x = paddle.concat([x, paddle.zeros([top - x.shape[0], *x.shape[1:]], dtype=x.dtype)])
    parts = []
    pdist.all_gather(parts, x)
    return paddle.concat([part[:n] for part, n in zip(parts, sizes)])


def _row_counts(n):
    """The number of rows each process holds, in rank order."""
    counts = []
    pdist.all_gather(counts, paddle.to_tensor([n], dtype="int64"))
    return [int(c.item()) for c in counts]


class _GatherRows(PyLayer):
    """Differentiable all_gather + concat of a [n_r, ...] tensor.

    Every process computes the same loss L on the gathered batch, so the
    incoming gradient is the same everywhere and this process's slice of it
    is exactly ∂L/∂z_own. Its parameter gradient is then the part of ∂L/∂θ
    due to its own samples, and the SUM over processes is the single-process
    gradient. ``paddle.DataParallel`` all-reduces with a mean (it divides by
    nranks before summing, in nccl and gloo alike), so the slice is multiplied
    by the world size to turn that mean back into the sum."""

    @staticmethod
    def forward(ctx, x, sizes):
        ctx.start = sum(sizes[:rank()])
        ctx.stop = ctx.start + sizes[rank()]
        return _all_gather_rows(x, sizes)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.start:ctx.stop] * float(world_size())


def gather_batch(z, y, ind):
    """The global batch (z, y, ind) of all processes, in rank order; identity
    in one process. Gradient flows back to this process's z only (see
    :class:`_GatherRows`). Every process then writes the whole global batch
    into its memory bank, so the banks stay identical.

    The rows come in another order than in one process with the global
    batch (rank r holds every W-th item), which changes no loss term. No
    index occurs twice in a global batch: the sampler pads the order with
    copies of its first W-1 items at most, and as the engine requires
    N >= W x batch, they land in a later step than their originals (that
    step then trains those images a second time in the epoch; there is no
    padding when W divides N, e.g. COCO's 10,000 with 2, 4 or 8 processes).
    Were one duplicated, it would count as two query rows and the bank would
    hold one of its copies, like a single-process batch with a repeat."""
    if world_size() == 1:
        return z, y, ind
    sizes = _row_counts(z.shape[0])
    return _GatherRows.apply(z, sizes), _all_gather_rows(y, sizes), _all_gather_rows(ind, sizes)


def gather_in_order(codes, labels, indices, size, complete=True):
    """Codes and labels of all processes, in dataset order, padding dropped.

    Each process encoded its shard (numpy arrays with dataset ``indices``);
    after the all_gather every process holds the whole dataset, ordered by
    index, each index once (the sampler's padding repeats a few).
    ``complete=False`` (``--skip-bad-images``): indices of skipped images
    may be missing; the rest come in dataset order, as in one process."""
    if world_size() == 1:
        return codes, labels
    sizes = _row_counts(len(indices))
    codes, labels, indices = (_all_gather_rows(paddle.to_tensor(a), sizes).numpy()
                              for a in (codes, labels, indices))
    found, first = np.unique(indices, return_index=True)
    expected = np.arange(size)
    if not (np.array_equal(found, expected) if complete else np.isin(found, expected).all()):
        raise RuntimeError(f"gathered {len(found)} distinct indices, expected 0..{size - 1}")
    return codes[first], labels[first]


def broadcast_from_main(obj):
    """Rank 0's ``obj`` in every process (``obj`` itself in one process)."""
    box = [obj]
    if world_size() > 1:
        pdist.broadcast_object_list(box, src=0)
    return box[0]


def any_process(flag):
    """True if ``flag`` is true in any process (e.g. a stop signal that
    reached only some of them), so that all take the same branch; ``flag``
    itself in one process."""
    if world_size() == 1:
        return bool(flag)
    value = paddle.to_tensor([int(bool(flag))], dtype="int32")
    pdist.all_reduce(value, op=pdist.ReduceOp.MAX)
    return bool(value.item())


# ---------------------------------------------------------------- processes
def launched():
    """True inside a process started by ``paddle.distributed.launch`` or
    ``paddle.distributed.spawn`` (they set the trainer environment)."""
    return "PADDLE_TRAINER_ID" in os.environ and "PADDLE_TRAINERS_NUM" in os.environ


def gpu_count():
    return paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0


def launch(fn, args):
    """Run ``fn(args)`` data-parallel: one process per GPU (nccl), or
    ``args.nprocs`` CPU processes (gloo, default 2) on a machine without GPU.

    Under ``python -m paddle.distributed.launch`` (one or several nodes) the
    processes exist already: join them and run. Otherwise start them here
    with ``paddle.distributed.spawn`` and watch them (:func:`_supervise`)."""
    if launched():
        return _worker(fn, args)
    gpus = gpu_count()
    nprocs = args.nprocs or gpus or 2
    if gpus and nprocs > gpus:
        raise UserError(f"--nprocs {nprocs}: only {gpus} GPU(s) visible (CUDA_VISIBLE_DEVICES)")
    if nprocs == 1:
        return _worker(fn, args)
    messages = multiprocessing.get_context("spawn").SimpleQueue()  # bad-input errors
    context = pdist.spawn(_worker, (fn, args, messages), nprocs=nprocs, join=False,
                          backend="nccl" if gpus else "gloo")
    code = _supervise(context.processes, context.error_queues, messages)
    if code:
        sys.exit(code)


# Exit codes of a process that stopped cleanly on SIGINT/SIGTERM (the engine
# saves `last` and exits 128 + signum); the others follow at the same step.
STOPPED = {128 + signal.SIGINT, 128 + signal.SIGTERM}


def _supervise(processes, error_queues, messages, grace=10, stop_grace=300):
    """Wait for the spawned processes; return the run's exit code.

    When one fails (an exception, exit 2 after a bad-input error, or killed
    by a signal), the others are sent SIGTERM and, if they have not ended
    after ``grace`` seconds (e.g. blocked in a collective with the dead
    process), SIGKILL: the run ends within seconds instead of hanging. One
    that stopped cleanly on a signal gives the others ``stop_grace`` seconds
    to do the same (rank 0 is saving the checkpoint)."""
    pending = {p.sentinel: i for i, p in enumerate(processes)}
    deadline = None
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            ready = multiprocessing.connection.wait(list(pending), timeout)
        except KeyboardInterrupt:  # Ctrl-C reached the processes too: they stop on their own
            continue
        if not ready:  # past the deadline
            _stop_all(processes, grace)
            break
        for sentinel in ready:
            i = pending.pop(sentinel)
            processes[i].join()
            code = processes[i].exitcode
            if code in STOPPED and deadline is None:
                deadline = time.time() + stop_grace
            elif code and code not in STOPPED:
                _stop_all(processes, grace)
                return _report(i, code, error_queues[i], messages)
    return max(c if c >= 0 else 128 - c for c in (p.exitcode for p in processes))


def _stop_all(processes, grace, settle=2):
    """End the remaining processes: they get ``settle`` seconds to end by
    themselves (most fail right after a peer), then SIGTERM, then SIGKILL
    after ``grace`` seconds."""
    for timeout, stop in ((settle, "terminate"), (grace, "kill")):
        deadline = time.time() + timeout
        for p in processes:
            p.join(max(0.0, deadline - time.time()))
        for p in processes:
            if p.is_alive():
                getattr(p, stop)()
    for p in processes:
        p.join()


def _report(index, code, error_queue, messages):
    """Print, once, why process ``index`` failed; return the run's exit code."""
    if code == 2 and not messages.empty():  # bad input: its one-line message
        print(f"error: {messages.get()}", file=sys.stderr)
        return 2
    if code < 0:
        print(f"error: process {index} was killed by signal {signal.Signals(-code).name}; "
              "the other processes were stopped", file=sys.stderr)
    else:
        trace = "" if error_queue.empty() else ":\n" + error_queue.get()
        print(f"error: process {index} failed with exit code {code}; the other processes "
              f"were stopped{trace}", file=sys.stderr)
    return 1


def _worker(fn, args, messages=None):
    """One process: join the process group and run ``fn(args)``. A bad-input
    error ends it with exit code 2 and a one-line message, printed here
    (``run_cli``) or, in spawned processes, sent to the parent to print once."""
    if world_size() > 1:
        pdist.init_parallel_env()
    debug = ["--debug"] if getattr(args, "debug", False) else []
    if messages is None:
        return run_cli(lambda argv: fn(args), debug)
    try:
        fn(args)
    except UserError as err:
        if debug:
            raise
        messages.put(str(err))
        sys.exit(2)
