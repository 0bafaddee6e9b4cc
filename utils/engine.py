"""The one training and evaluation engine behind main_single_gpu.py and
main_multi_gpu.py. Multi-process specifics live in utils/distributed.py."""
import json
import math
import os
import random
import sys
import time

import numpy as np
import paddle
from tqdm import tqdm

from models.hashnet import HashNet, binary_codes, load_backbone
from utils import distributed as dist
from utils.checkpoint import (load_training_state, load_weights, newest_checkpoint,
                              save_checkpoint)
from utils.datasets import build_datasets, build_loader, set_epoch
from utils.errors import UserError
from utils.io import atomic_write_json
from utils.loss import HashNetLoss
from utils.lr_scheduler import base_lr, build_optimizer, continuation_beta, step_lr
from utils.tools import mean_average_precision, set_seed


def setup_runtime(args):
    # Paddle's CPU kernels use one thread unless told; all cores roughly
    # double training speed on a 2-core machine.
    paddle.base.core.set_num_threads(max(1, args.num_threads))
    set_seed(args.seed)


def seed_epoch(seed, epoch):
    """Reseed paddle (dropout) from (seed, epoch, rank): an epoch's random
    draws are then the same whether or not the run was resumed before it."""
    paddle.seed(int(np.random.SeedSequence([seed, epoch, dist.rank()]).generate_state(1)[0]))


def epoch_lr(args, epoch):
    return step_lr(epoch, base_lr(args.learning_rate, args.batch_size, dist.world_size()), args.de_step)


def train_step(model, criterion, optimizer, x, y, ind):
    """One optimisation step; returns the loss value. A non-finite loss is
    returned without stepping, so the parameters stay as they were."""
    z = model(x)                                        # [B, bit]
    loss = criterion(*dist.gather_batch(z, y, ind))    # against the whole bank
    value = float(loss)
    if math.isfinite(value):
        loss.backward()
        optimizer.step()
        optimizer.clear_grad(set_to_zero=False)  # zeroing 58M grads costs ~0.6 s a step on CPU
    return value


def train_one_epoch(model, criterion, optimizer, loader, epoch, args, log):
    """One pass over the training set; returns the mean step loss."""
    model.train()
    set_epoch(loader, epoch)
    seed_epoch(args.seed, epoch)
    criterion.beta = continuation_beta(epoch, args.step_continuation)
    optimizer.set_lr(epoch_lr(args, epoch))
    steps, total = len(loader), 0.0
    for step, (x, y, ind) in enumerate(loader, 1):
        value = train_step(model, criterion, optimizer, x, y, ind)
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss {value} at epoch {epoch}, step {step}: "
                                     "lower --learning_rate; the last checkpoint is intact")
        total += value
        if step % args.debug_steps == 0 or step == steps:
            log.info(f"Epoch[{epoch:03d}/{args.epoch:03d}], Step[{step:04d}/{steps:04d}], "
                     f"Loss: {value:.4f}")
    return total / steps


@paddle.no_grad()
def encode(model, loader, desc="encoding"):
    """Binary codes sign(z) (int8 ±1, [n, bit]) and labels [n, C] of a whole
    dataset, in dataset order."""
    model.eval()
    codes, labels, indices = [], [], []
    for x, y, ind in tqdm(loader, desc=desc, leave=False, disable=not sys.stderr.isatty()):
        codes.append(binary_codes(model(x)).numpy())
        labels.append(y.numpy())
        indices.append(ind.numpy())
    return dist.gather_in_order(np.concatenate(codes), np.concatenate(labels),
                                np.concatenate(indices), len(loader.dataset))


def evaluate(model, query_loader, db_loader, args):
    """Encode queries and database; return the retrieval metrics."""
    q_codes, q_labels = encode(model, query_loader, "encoding queries")
    db_codes, db_labels = encode(model, db_loader, "encoding database")
    mAP = mean_average_precision(q_codes, q_labels, db_codes, db_labels, args.topK,
                                 skip_no_relevant=args.skip_no_relevant)
    return {"map": mAP, "bit": args.bit, "dataset": args.dataset, "topK": args.topK,
            "num_queries": len(q_codes), "num_database": len(db_codes)}


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
    log_dir = os.path.join(args.log_path, f"{mode}-{args.bit}-{time.strftime('%Y%m%d-%H%M%S')}")
    log = dist.setup_logger(log_dir)
    if dist.is_main_process():
        atomic_write_json(vars(args), os.path.join(log_dir, "config.json"))
    log.info("config: " + json.dumps(vars(args), sort_keys=True))
    return log, log_dir


def rng_states():
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "paddle": paddle.get_rng_state()}


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
             f"(mAP@{args.topK} = {metrics['map']:.6f})")
    if dist.is_main_process():
        atomic_write_json(metrics, os.path.join(log_dir, "metrics.json"))
    return metrics


def run_train(args):
    log, log_dir = start_log(args, "train")
    loaders = make_loaders(args, ("train", "test", "database"))
    model = HashNet(args.bit)
    if args.pretrained:
        load_weights(model, args.pretrained)
    else:
        load_backbone(model, args.backbone)
    train_model = dist.wrap_model(model)
    criterion = HashNetLoss(len(loaders["train"].dataset), args.bit, args.num_class, args.alpha)
    optimizer = build_optimizer(args.optimizer, model.parameters(), epoch_lr(args, 1),
                                args.weight_decay, args.momentum)
    state = {"epoch": args.last_epoch, "best_map": 0.0, "best_epoch": 0, "history": []}
    if args.resume:
        prefix = newest_checkpoint(args.output_dir, args.bit) if args.resume == "auto" else args.resume
        load_weights(model, prefix)
        state.update(load_training_state(prefix, optimizer))
        if "bank" in state:
            criterion.set_state_dict(state["bank"])
        log.info(f"resumed from {prefix} after epoch {state['epoch']}")
    os.makedirs(args.output_dir, exist_ok=True)

    for epoch in range(state["epoch"] + 1, args.epoch + 1):
        start = time.time()
        loss = train_one_epoch(train_model, criterion, optimizer, loaders["train"], epoch, args, log)
        log.info(f"HashNet[{epoch:2d}/{args.epoch}] bit:{args.bit}, lr:{epoch_lr(args, epoch):.9f}, "
                 f"scale:{criterion.beta:.3f}, train loss:{loss:.3f} ({time.time() - start:.1f}s)")
        record = {"epoch": epoch, "loss": loss, "map": None}
        state.update(epoch=epoch, history=state["history"] + [record])
        if epoch % args.eval_epoch == 0 or epoch == args.epoch:
            metrics = evaluate(model, loaders["test"], loaders["database"], args)
            record["map"] = metrics["map"]
            if metrics["map"] > state["best_map"]:
                state.update(best_map=metrics["map"], best_epoch=epoch)
                save(args, "model_best", model, optimizer, criterion, state)
            log.info(f"HashNet epoch:{epoch}, bit:{args.bit}, dataset:{args.dataset}, "
                     f"MAP:{metrics['map']:.3f}, Best MAP(e{state['best_epoch']}): {state['best_map']:.3f}")
        save(args, "last", model, optimizer, criterion, state)
    return state


def save(args, name, model, optimizer, criterion, state):
    if dist.is_main_process():
        training = dict(state, bank=criterion.state_dict(), rng=rng_states(), config=vars(args))
        save_checkpoint(os.path.join(args.output_dir, f"{name}_{args.bit}"), model, optimizer, training)


def run(args):
    setup_runtime(args)
    return run_eval(args) if args.eval else run_train(args)
