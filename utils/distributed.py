"""Everything that differs between one process and several, in one place.

In a single process every function here is the identity (or rank 0), so the
engine has one code path. Multi-process behaviour (gloo on CPU, nccl on GPU)
is filled in by main_multi_gpu.py's launcher via paddle.distributed.
"""
import logging
import os
import sys

import paddle


def world_size():
    return paddle.distributed.get_world_size()


def rank():
    return paddle.distributed.get_rank()


def is_main_process():
    return rank() == 0


def wrap_model(model):
    """DataParallel in a multi-process run, the model itself otherwise."""
    return paddle.DataParallel(model) if world_size() > 1 else model


def unwrap_model(model):
    """The plain model, so checkpoint keys never carry a ``_layers.`` prefix."""
    return model._layers if isinstance(model, paddle.DataParallel) else model


def gather_batch(z, y, ind):
    """The global batch (z, y, ind) of all processes; identity in one process."""
    if world_size() == 1:
        return z, y, ind
    raise NotImplementedError("multi-process training: see main_multi_gpu.py")


def gather_in_order(codes, labels, indices, size):
    """Codes and labels of all processes, in dataset order, padding dropped."""
    if world_size() == 1:
        return codes, labels
    raise NotImplementedError("multi-process evaluation: see main_multi_gpu.py")


def setup_logger(log_dir):
    """Log to stdout and ``log_dir/log.txt`` on rank 0; other ranks write
    ``log_{rank}.txt`` only, so the console shows each line once."""
    logger = logging.getLogger("hashnet")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    os.makedirs(log_dir, exist_ok=True)
    name = "log.txt" if is_main_process() else f"log_{rank()}.txt"
    handlers = [logging.FileHandler(os.path.join(log_dir, name))]
    if is_main_process():
        handlers.append(logging.StreamHandler(sys.stdout))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger
