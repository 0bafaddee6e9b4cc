"""The run skeleton behind main_single_gpu.py and main_multi_gpu.py, written
once for every recipe and method: setup, evaluation and its record,
keep-best, checkpoints and resume.

A recipe (utils/training/recipes.py: the reference's epochs, the authors'
Caffe iterations) supplies only what differs: its optimizer, schedules, the
periods it trains in and its log lines; the method (utils/methods/) the
loss. One step, the stop signal and the RNG streams are utils/training/step.py.
The model comes from the model registry (``models.build(--arch, --bit)``).
Multi-process specifics live in utils/base/distributed.py."""
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time

import numpy as np

import models
from utils.base import distributed as dist
from utils.base.checkpoint import (load_training_state, load_weights, newest_checkpoint,
                                   save_checkpoint)
from utils.base.errors import UserError, one_line
from utils.base.fingerprint import sha256_file
from utils.base.flags import check_sizes
from utils.base.io import atomic_write_json, ensure_writable_dir
from utils.base.run_lock import output_dir_lock
from utils.base.runtime import (new_run_dir, set_deterministic, set_num_threads, set_seed,
                                close_logger, setup_logger, threads_per_process)
from utils.data.images import set_max_pixels
from utils.data.loaders import build_datasets, build_loader
from utils.data.splits import SPLITS
from utils.inference.encoder import encode_batches, fastest_forward
from utils.retrieval.codes import CODE_RULES
from utils.retrieval.hamming import backend_variable
from utils.retrieval.metrics import retrieval_metrics
from utils import methods
from utils.training import recipes
from utils.training.config import build_method, data_settings
from utils.training.plots import save_evaluation_plots, save_training_plot
from utils.training.run_log import RunLog
from utils.training.step import STOP, rng_states


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


def encode(forward, loader, desc, code_rule):
    """Binary codes ``code_rule(forward(x))`` (int8 ±1, [n, bit]) and labels
    [n, C] of a whole dataset, in dataset order (each process encodes its
    shard; see ``dist.gather_in_order``)."""
    codes, labels, indices = encode_batches(forward, loader, desc, code_rule)
    return dist.gather_in_order(codes, labels, indices, len(loader.dataset),
                                complete=not loader.dataset.skip_bad_images)


def encode_queries_and_database(model, query_loader, db_loader, method):
    """((codes, labels) of the queries, (codes, labels) of the database) by
    ``method``'s code rule, from one export of the weights for both."""
    forward = fastest_forward(model, len(query_loader.dataset) + len(db_loader.dataset))
    code_rule = CODE_RULES[methods.method_class(method).code_rule]
    return (encode(forward, query_loader, "encoding queries", code_rule),
            encode(forward, db_loader, "encoding database", code_rule))


def evaluate(model, query_loader, db_loader, args):
    """Encode queries and database (one export of the weights for both);
    return every retrieval metric (mAP@K, tie-aware mAP, P/R within Hamming
    radius 2, PR curve, precision@N). Rank 0 alone computes them, once, on
    the gathered codes; the others wait in the broadcast that hands every
    process the same result (best-model decisions and log lines then agree)."""
    start = time.time()
    (q_codes, q_labels), (db_codes, db_labels) = encode_queries_and_database(
        model, query_loader, db_loader, args.method)
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
    datasets = build_datasets(data_settings(args), splits)
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


def run_eval(args):
    if not args.pretrained:
        raise UserError("--eval needs --pretrained PATH (a checkpoint without .pdparams)")
    log, log_dir = start_log(args, "eval")
    try:
        model = models.build(args.arch, args.bit)
        load_weights(model, args.pretrained, models.arch_of_state)
        loaders = make_loaders(args, ("test", "database"))
        metrics = evaluate(model, loaders["test"], loaders["database"], args)
        metrics["checkpoint"] = args.pretrained
        log.info(f"HashNet eval bit:{args.bit}, dataset:{args.dataset}, MAP:{metrics['map']:.3f} "
                 f"(mAP@{args.topK} = {metrics['map']:.6f}, "
                 f"tie-aware {metrics['map_tie_aware']:.6f}, "
                 f"P@H<=2 {metrics['precision_radius']:.4f})")
        write_evaluation(metrics, log_dir)
        return metrics
    finally:
        close_logger()


def build_model(args):
    """The --arch model with --pretrained weights, else the --backbone and a fresh hash layer."""
    model = models.build(args.arch, args.bit)
    if args.pretrained:
        load_weights(model, args.pretrained, models.arch_of_state)
    else:
        model.load_backbone(args.backbone)
    return model


def run_train(args):
    """Train with ``args.recipe``: period by period (see recipes.py), each
    followed by its history record, an evaluation when due (a new best is
    saved as model_best) and ``last`` when due. A stop signal saves ``last``
    where the run stands and exits 128+signum; --resume continues there."""
    recipe = recipes.build(args, build_method(args))
    ensure_writable_dir(args.output_dir, "--output-dir")
    log, log_dir = start_log(args, "train")
    recipe.run_log = RunLog(log_dir if dist.is_main_process() else None, not args.no_visualdl)
    log.info(recipe.run_log.note)
    try:
        return train_periods(args, recipe, log, log_dir)
    finally:
        recipe.run_log.close()
        close_logger()


def train_periods(args, recipe, log, log_dir):
    loaders = make_loaders(args, SPLITS)
    model = build_model(args)
    train_model = dist.wrap_model(model)
    criterion = recipe.criterion(len(loaders["train"].dataset))
    optimizer = recipe.optimizer(model)
    state = recipe.initial_state()
    if args.resume:
        resume(args, recipe, (model, optimizer, criterion), state, log)
    STOP.agreed = False   # only this run's stop checks count
    start = time.time()
    for period in recipe.periods(state):
        if not recipe.train_period(train_model, criterion, optimizer, loaders["train"], log,
                                   state, period):   # stopped by a signal mid-period
            save(args, "last", model, optimizer, criterion, state)
            exit_on_signal(args, recipe, state, log)
        record = recipe.close_period(state, period, criterion, loaders["train"], log)
        if recipe.evaluation_due(period):
            evaluate_and_keep_best(args, recipe, model, loaders, (optimizer, criterion), state,
                                   record, log_dir, log)
        if recipe.save_due(period) or STOP.agreed:
            save(args, "last", model, optimizer, criterion, state)
            if dist.is_main_process():
                save_training_plot(state["history"], os.path.join(log_dir, "training.png"),
                                   f"HashNet {args.bit} bits on {args.dataset}: training",
                                   unit=recipe.unit)
            log.info(f"saved {args.output_dir}/last_{args.bit} ({recipe.position(state)}, "
                     f"{time.time() - start:.1f}s)")
            start = time.time()
        if STOP.agreed:
            exit_on_signal(args, recipe, state, log)
    return state


def exit_on_signal(args, recipe, state, log):
    log.info(f"stopped by signal {STOP.signum} at {recipe.position(state)}: saved "
             f"{args.output_dir}/last_{args.bit}; continue with --resume")
    raise SystemExit(128 + STOP.signum)


def evaluate_and_keep_best(args, recipe, model, loaders, training, state, record, log_dir, log):
    """mAP now, into the period's history ``record``; a new best is saved as
    model_best (with ``training``: the optimizer and the loss's bank)."""
    done = state[recipe.unit]
    metrics = evaluate(model, loaders["test"], loaders["database"], args)
    record["map"] = metrics["map"]
    recipe.run_log.evaluation(recipe.global_step(done, loaders["train"]), metrics, recipe.unit, done)
    best = f"best_{recipe.unit}"
    if metrics["map"] > state["best_map"]:
        state.update({"best_map": metrics["map"], best: done})
        save(args, "model_best", model, *training, state)
    # These weights stay on disk only if they are the best so far.
    metrics.update({recipe.unit: done, "checkpoint": (f"{args.output_dir}/model_best_{args.bit}"
                                                      if state[best] == done else None)})
    write_evaluation(metrics, log_dir)
    log.info(f"HashNet {recipe.unit}:{done}, bit:{args.bit}, dataset:{args.dataset}, "
             f"MAP:{metrics['map']:.3f}, Best MAP({recipe.unit[0]}{state[best]}): "
             f"{state['best_map']:.3f}")


def resume(args, recipe, training, state, log):
    """Restore model, optimizer, the loss's bank and the recipe's counters
    (``training`` = (model, optimizer, criterion)) from a checkpoint
    (``--resume`` alone: the newest in --output-dir). A checkpoint of another
    recipe, method, optimizer or training list is refused before anything is
    restored; other changed settings are named (config.json records them)."""
    model, optimizer, criterion = training
    prefix = newest_checkpoint(args.output_dir, args.bit) if args.resume == "auto" else args.resume
    load_weights(model, prefix, models.arch_of_state)
    with reading_training_state(prefix):
        saved = load_training_state(prefix, model, optimizer,
                                    check=lambda training: check_resumable(args, training, prefix))
        if "bank" in saved:
            load_bank(criterion, saved.pop("bank"), prefix)
        fresh = dict(state)
        where = recipe.restore(saved, state, prefix)
        check_counter_types(state, fresh)
        changed = changed_settings(saved.get("config", {}), vars(args))
    log.info(f"resumed from {prefix} at {where}")
    for key, (was, now) in changed.items():
        log.warning(f"warning: --resume {prefix}: {flag_of(key)} was {was}, now {now}")
    if not list(recipe.periods(state)):
        log.info(f"{prefix} is a finished run ({recipe.position(state)}): nothing left to "
                 "train; raise -e / --max_iter to train further")


@contextlib.contextmanager
def reading_training_state(prefix):
    """The training state a .pdopt unpickles to is input too: one without a
    key, or with a value of another type, than the recipe and method read
    (a damaged or foreign file that is still a pickle) is a one-line
    UserError, before or while it is restored, never a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as err:
        raise UserError(f"{prefix}.pdopt holds a training state of another shape ({one_line(err)})"
                        ": resume from another checkpoint, or start from its weights with "
                        "--pretrained") from None


COUNTER_TYPES = {int: (int, np.integer), float: (int, float, np.integer, np.floating),
                 list: (list,)}


def check_counter_types(state, fresh):
    """TypeError unless each counter a checkpoint restored into ``state`` is
    of the kind the recipe's fresh state (``fresh``) holds there."""
    for key, value in fresh.items():
        kinds = COUNTER_TYPES.get(type(value))
        if kinds and (not isinstance(state.get(key), kinds) or isinstance(state.get(key), bool)):
            raise TypeError(f"its {key} is a {type(state.get(key)).__name__}")


# Settings a resumed run may change, but should not do silently.
RESUME_SETTINGS = ("learning_rate", "momentum", "weight_decay", "de_step", "de_gamma", "seed",
                   "base_lr", "num_class", "dataset", "crop_size", "resize_size", "arch")


def flag_of(key):
    return {"learning_rate": "-lr", "weight_decay": "-wd"}.get(key, f"--{key}")


def changed_settings(saved_config, config):
    """{key: (saved, now)} of the settings above and the method's own flags
    that differ (None now: the flag is not this run's)."""
    keys = RESUME_SETTINGS + tuple(methods.registry.flag_values(
        methods.method_class(config["method"]), config))
    return {k: (saved_config[k], config.get(k)) for k in keys
            if k in saved_config and config.get(k) is not None and saved_config[k] != config.get(k)}


def train_list_digest(args):
    """sha256 of the training list file (None for CIFAR-10, which has none)."""
    path = os.path.join(args.list_dir, "train.txt")
    return sha256_file(path) if os.path.isfile(path) else None


def check_resumable(args, training, prefix):
    """Refuse a checkpoint whose recipe, method, optimizer or training list
    differs from this run's: its counters, optimizer state or bank would not fit."""
    written_by = recipes.checkpoint_recipe(training)
    if written_by != args.recipe:
        raise UserError(f"{prefix} is a --recipe {written_by} checkpoint (not a --recipe "
                        f"{args.recipe} checkpoint): resume it with --recipe {written_by}")
    trained = recipes.checkpoint_method(training)
    if trained != args.method:
        raise UserError(f"{prefix} trained --method {trained}, not --method {args.method}: "
                        f"resume it with --method {trained} (or start from its weights with "
                        "--pretrained)")
    optimizer = training.get("config", {}).get("optimizer", args.optimizer)
    if optimizer != args.optimizer:
        raise UserError(f"{prefix} was trained with -op {optimizer}, not -op {args.optimizer}: "
                        f"resume it with -op {optimizer} (or start from it with --pretrained)")
    recorded = training.get("train_list_sha256")
    if recorded and recorded != train_list_digest(args):
        raise UserError(f"{prefix} was trained on another {args.list_dir}/train.txt (its sha256 "
                        "differs): resume with the checkpoint's list, or start from it with "
                        "--pretrained")


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
    """``<output-dir>/<name>_<bit>``: the weights, and the optimizer with the
    recipe's counters (progress objects as dicts), the loss's buffers (the
    memory bank), the RNG states and the config."""
    if dist.is_main_process():
        training = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                    for k, v in state.items()}
        training.update(recipe=args.recipe, method=args.method, bank=criterion.state_dict(),
                        rng=rng_states(),
                        config=vars(args), train_list_sha256=train_list_digest(args))
        save_checkpoint(os.path.join(args.output_dir, f"{name}_{args.bit}"), model, optimizer, training)


def run(args):
    arch = models.model_class(args.arch)
    check_sizes(args.crop_size, min_crop=arch.min_crop, label=arch.label)  # config checks the rest
    backend_variable()   # the environment's $HASHNET_HAMMING_BACKEND, before any work
    setup_runtime(args)
    if args.eval:
        return run_eval(args)
    with STOP.installed(), output_dir_lock(args.output_dir, dist.is_main_process()):
        return run_train(args)
