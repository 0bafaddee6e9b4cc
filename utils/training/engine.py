"""The one training and evaluation engine behind main_single_gpu.py and
main_multi_gpu.py. Multi-process specifics live in utils/distributed.py."""
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time

import numpy as np
import paddle

from models.hashnet import HashNet, load_backbone
from utils.training import caffe_recipe
from utils import distributed as dist
from utils.base.checkpoint import (load_training_state, load_weights, newest_checkpoint,
                              save_checkpoint)
from utils.datasets import build_datasets, build_loader, set_epoch
from utils.inference.encoder import encode_batches, fastest_forward
from utils.base.errors import UserError
from utils.base.flags import check_sizes
from utils.data.images import set_max_pixels
from utils.base.io import atomic_write_json, ensure_writable_dir
from utils.loss import HashNetLoss
from utils.lr_scheduler import base_lr, build_optimizer, continuation_beta, step_lr
from utils.training.plots import save_evaluation_plots, save_training_plot
from utils.base.run_lock import output_dir_lock
from utils.base.runtime import (new_run_dir, set_deterministic, set_num_threads, set_seed,
                           setup_logger, threads_per_process)
from utils.tools import retrieval_metrics

# With several processes, the check "did a stop signal reach any process?" is
# a collective (every process waits for all); it runs every STOP_CHECK_STEPS
# global steps, so a stop lands within that many steps (at a step boundary).
STOP_CHECK_STEPS = 10


def setup_runtime(args):
    """Threads (default: this machine's cores shared by its processes, so
    several do not oversubscribe them; the value goes into config.json),
    GPU determinism, seeds."""
    if args.num_threads is None:
        args.num_threads = threads_per_process(dist.local_process_count())
    set_num_threads(args.num_threads)
    if args.deterministic:
        set_deterministic()
    set_seed(args.seed)
    set_max_pixels(args.max_image_pixels)


def seed_epoch(seed, epoch):
    """Reseed paddle (dropout) from (seed, epoch, rank): an epoch's random
    draws are then the same whether or not the run was resumed before it."""
    paddle.seed(int(np.random.SeedSequence([seed, epoch, dist.rank()]).generate_state(1)[0]))


def epoch_lr(args, epoch):
    return step_lr(epoch, base_lr(args.learning_rate, args.batch_size, dist.world_size()), args.de_step)


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

    def __call__(self, signum, frame):
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        """Catch SIGINT/SIGTERM while training; the old handlers come back after."""
        self.signum = None
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


@dataclasses.dataclass
class EpochProgress:
    """How far an epoch got: steps done and their summed loss."""
    epoch: int
    step: int = 0
    loss_sum: float = 0.0


def train_one_epoch(model, criterion, optimizer, loader, args, log, epoch_progress):
    """Train one epoch from ``epoch_progress.step`` on (0, or where an interrupted
    run stopped); returns ``epoch_progress``, short of the last step if a stop
    signal came."""
    epoch = epoch_progress.epoch
    model.train()
    set_epoch(loader, epoch, skip=epoch_progress.step)
    if epoch_progress.step == 0:
        seed_epoch(args.seed, epoch)  # mid-epoch resumes restore the RNG instead
    criterion.beta = continuation_beta(epoch, args.step_continuation)
    optimizer.set_lr(epoch_lr(args, epoch))
    steps = len(loader)
    wanted = (loader.batch_sampler.global_batches() if args.skip_bad_images
              else itertools.repeat(None))
    for (x, y, ind), global_batch in zip(loader, wanted):
        value = train_step(model, criterion, optimizer, x, y, ind, global_batch)
        epoch_progress.step += 1
        if not math.isfinite(value):
            raise UserError(f"non-finite loss {value} at epoch {epoch}, step "
                            f"{epoch_progress.step}: lower --learning_rate; the last "
                            "checkpoint is intact")
        epoch_progress.loss_sum += value
        if epoch_progress.step % args.debug_steps == 0 or epoch_progress.step == steps:
            log.info(f"Epoch[{epoch:03d}/{args.epoch:03d}], "
                     f"Step[{epoch_progress.step:04d}/{steps:04d}], Loss: {value:.4f}")
        if stop_agreed((epoch - 1) * steps + epoch_progress.step):
            break
    return epoch_progress


def stop_agreed(global_step):
    """True when every process is to stop after this step: a stop signal
    reached one of them. One process checks every step; several, every
    STOP_CHECK_STEPS-th global step (a collective; see there)."""
    if dist.world_size() > 1 and global_step % STOP_CHECK_STEPS:
        return False
    if dist.any_process(STOP.signum is not None):
        STOP.signum = STOP.signum or signal.SIGTERM
        return True
    return False


def encode(forward, loader, desc="encoding"):
    """Binary codes sign(forward(x)) (int8 ±1, [n, bit]) and labels [n, C] of
    a whole dataset, in dataset order (each process encodes its shard; see
    ``dist.gather_in_order``)."""
    codes, labels, indices = encode_batches(forward, loader, desc)
    return dist.gather_in_order(codes, labels, indices, len(loader.dataset),
                                complete=not loader.dataset.skip_bad_images)


def evaluate(model, query_loader, db_loader, args):
    """Encode queries and database (one export of the weights for both);
    return every retrieval metric (mAP@K, tie-aware mAP, P/R within Hamming
    radius 2, PR curve, precision@N). Rank 0 alone computes them, once, on
    the gathered codes; the others wait in the broadcast that hands every
    process the same result (best-model decisions and log lines then agree)."""
    start = time.time()
    forward = fastest_forward(model, len(query_loader.dataset) + len(db_loader.dataset))
    q_codes, q_labels = encode(forward, query_loader, "encoding queries")
    db_codes, db_labels = encode(forward, db_loader, "encoding database")
    encoded = time.time()
    metrics = None
    if dist.is_main_process():
        metrics = retrieval_metrics(q_codes, q_labels, db_codes, db_labels, args.topK,
                                    skip_no_relevant=args.skip_no_relevant,
                                    skip_no_relevant_in_database=args.skip_no_relevant_in_database,
                                    show_progress=sys.stderr.isatty())
        metrics["dataset"] = args.dataset
    metrics = dist.broadcast_from_main(metrics)
    logging.getLogger("hashnet").info(
        f"evaluated in {time.time() - start:.1f}s: encoding {encoded - start:.1f}s "
        f"({len(q_codes)} queries + {len(db_codes)} database images), "
        f"metrics {time.time() - encoded:.1f}s")
    return metrics


def write_evaluation(metrics, out_dir):
    """metrics.json and the PR / precision@N plots, written atomically (rank 0)."""
    if dist.is_main_process():
        atomic_write_json(metrics, os.path.join(out_dir, "metrics.json"))
        save_evaluation_plots(metrics, out_dir)


# ---------------------------------------------------------------- the run
def make_loaders(args, splits):
    datasets = build_datasets(args, splits)
    if "train" in datasets and len(datasets["train"]) < args.batch_size * dist.world_size():
        raise UserError(f"--batch-size {args.batch_size} x {dist.world_size()} process(es) is "
                        f"larger than the training set ({len(datasets['train'])} images)")
    return {s: build_loader(ds, args.batch_size, shuffle=(s == "train"),
                            num_workers=args.num_workers, seed=args.seed,
                            rank=dist.rank(), world_size=dist.world_size())
            for s, ds in datasets.items()}


def start_log(args, mode):
    ensure_writable_dir(args.log_path, "--log_path")
    log_dir = new_run_dir(args.log_path, f"{mode}-{args.bit}")
    log = setup_logger(log_dir, dist.is_main_process(), dist.rank())
    if dist.is_main_process():
        atomic_write_json(vars(args), os.path.join(log_dir, "config.json"))
    log.info("config: " + json.dumps(vars(args), sort_keys=True))
    return log, log_dir


def rng_states():
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "paddle": paddle.get_rng_state()}


def restore_rng(states):
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    paddle.set_rng_state(states["paddle"])


def run_eval(args):
    if not args.pretrained:
        raise UserError("--eval needs --pretrained PATH (a checkpoint without .pdparams)")
    log, log_dir = start_log(args, "eval")
    model = HashNet(args.bit)
    load_weights(model, args.pretrained)
    loaders = make_loaders(args, ("test", "database"))
    metrics = evaluate(model, loaders["test"], loaders["database"], args)
    metrics["checkpoint"] = args.pretrained
    log.info(f"HashNet eval bit:{args.bit}, dataset:{args.dataset}, MAP:{metrics['map']:.3f} "
             f"(mAP@{args.topK} = {metrics['map']:.6f}, tie-aware {metrics['map_tie_aware']:.6f}, "
             f"P@H<=2 {metrics['precision_radius']:.4f})")
    write_evaluation(metrics, log_dir)
    return metrics


def build_model(args):
    """HashNet with --pretrained weights, else the --backbone and a fresh hash layer."""
    model = HashNet(args.bit)
    if args.pretrained:
        load_weights(model, args.pretrained)
    else:
        load_backbone(model, args.backbone)
    return model


def run_train(args):
    ensure_writable_dir(args.output_dir, "--output-dir")
    log, log_dir = start_log(args, "train")
    loaders = make_loaders(args, ("train", "test", "database"))
    model = build_model(args)
    train_model = dist.wrap_model(model)
    criterion = HashNetLoss(len(loaders["train"].dataset), args.bit, args.num_class, args.alpha)
    optimizer = build_optimizer(args.optimizer, model.parameters(), epoch_lr(args, 1),
                                args.weight_decay, args.momentum)
    state = {"epoch": args.last_epoch, "best_map": 0.0, "best_epoch": 0, "history": []}
    if args.resume:
        resume(args, model, optimizer, criterion, state, log)
    steps = len(loaders["train"])
    for epoch in range(state["epoch"] + 1, args.epoch + 1):
        start = time.time()
        epoch_progress = state.pop("partial", None) or EpochProgress(epoch)
        train_one_epoch(train_model, criterion, optimizer, loaders["train"], args, log,
                        epoch_progress)
        if epoch_progress.step < steps:  # stopped by a signal
            state["partial"] = epoch_progress
            save(args, "last", model, optimizer, criterion, state)
            log.info(f"stopped by signal {STOP.signum} at epoch {epoch}, step "
                     f"{epoch_progress.step}: saved {args.output_dir}/last_{args.bit}; "
                     "continue with --resume")
            raise SystemExit(128 + STOP.signum)
        loss = epoch_progress.loss_sum / steps
        log.info(f"HashNet[{epoch:2d}/{args.epoch}] bit:{args.bit}, lr:{epoch_lr(args, epoch):.9f}, "
                 f"scale:{criterion.beta:.3f}, train loss:{loss:.3f}")
        record = {"epoch": epoch, "loss": loss, "map": None}
        state.update(epoch=epoch, history=state["history"] + [record])
        if epoch % args.eval_epoch == 0 or epoch == args.epoch:
            metrics = evaluate(model, loaders["test"], loaders["database"], args)
            record["map"] = metrics["map"]
            if metrics["map"] > state["best_map"]:
                state.update(best_map=metrics["map"], best_epoch=epoch)
                save(args, "model_best", model, optimizer, criterion, state)
            # These weights stay on disk only if they are the best so far.
            metrics.update(epoch=epoch, checkpoint=(f"{args.output_dir}/model_best_{args.bit}"
                                                    if state["best_epoch"] == epoch else None))
            write_evaluation(metrics, log_dir)
            log.info(f"HashNet epoch:{epoch}, bit:{args.bit}, dataset:{args.dataset}, "
                     f"MAP:{metrics['map']:.3f}, Best MAP(e{state['best_epoch']}): {state['best_map']:.3f}")
        save(args, "last", model, optimizer, criterion, state)
        if dist.is_main_process():
            save_training_plot(state["history"], os.path.join(log_dir, "training.png"),
                               f"HashNet {args.bit} bits on {args.dataset}: training")
        log.info(f"saved {args.output_dir}/last_{args.bit} (epoch {epoch}, {time.time() - start:.1f}s)")
    return state


def resume(args, model, optimizer, criterion, state, log):
    """Restore model, optimizer, memory bank and counters from a checkpoint
    (``--resume`` alone: the newest in --output-dir)."""
    prefix = newest_checkpoint(args.output_dir, args.bit) if args.resume == "auto" else args.resume
    load_weights(model, prefix)
    state.update(load_training_state(prefix, model, optimizer))
    if "iter" in state:
        raise UserError(f"{prefix} is a --recipe caffe checkpoint: resume it with --recipe caffe")
    if "bank" in state:
        load_bank(criterion, state.pop("bank"), prefix)
    if "partial" in state and state["config"]["batch_size"] != args.batch_size:
        raise UserError(f"{prefix} stopped mid-epoch at batch size {state['config']['batch_size']}: "
                        "resume it with the same -bs")
    if "partial" in state:
        # Mid-epoch: continue that epoch's RNG streams where they stopped.
        state["partial"] = EpochProgress(**state["partial"])
        restore_rng(state["rng"])
        where = f"epoch {state['partial'].epoch}, step {state['partial'].step}"
    else:
        where = f"the end of epoch {state['epoch']}"
    log.info(f"resumed from {prefix} at {where}")


def load_bank(criterion, bank, prefix):
    """Restore the memory bank, refusing one of another training set (Paddle
    would only warn and keep an empty bank)."""
    for key, value in bank.items():
        need = list(getattr(criterion, key).shape)
        if list(value.shape) != need:
            raise UserError(f"{prefix}: memory bank {key} is {list(value.shape)}, this run needs "
                            f"{need} (use the checkpoint's --dataset, lists and --num_class)")
    criterion.set_state_dict(bank)


def save(args, name, model, optimizer, criterion, state):
    if dist.is_main_process():
        training = dict(state, bank=criterion.state_dict(), rng=rng_states(), config=vars(args))
        if "partial" in state:
            training["partial"] = dataclasses.asdict(state["partial"])
        save_checkpoint(os.path.join(args.output_dir, f"{name}_{args.bit}"), model, optimizer, training)


def run(args):
    check_sizes(args.crop_size)   # AlexNet's minimum (utils/config.py checks the rest)
    setup_runtime(args)
    if args.eval:
        return run_eval(args)
    train = caffe_recipe.run_train if args.recipe == "caffe" else run_train
    with STOP.installed(), output_dir_lock(args.output_dir, dist.is_main_process()):
        return train(args)
