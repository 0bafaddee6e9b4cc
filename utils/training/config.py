"""The one argument parser of main_single_gpu.py and main_multi_gpu.py, and the
typed settings the layers below take from it.

Flags and defaults are the reference recipe's (spec §3, §6); the reference's
spellings keep working (``-bs``/``--batch-size``, ``--data-path``, ``-ee`` …).
``--dataset`` fills ``--num_class`` and ``--topK`` from its preset unless
they are given. ``--recipe`` (utils/training/recipes.py) and ``--method``
(utils/methods/) add their own flags, and fill their own defaults. The
resolved config is saved as JSON next to the log and inside every checkpoint.
"""
import argparse
import dataclasses
import os

import models
from utils import methods
from utils.base.errors import UserError
from utils.base.flags import (AT_LEAST_0, AT_LEAST_1, BATCH, NON_NEGATIVE_FLOAT,
                              NUM_CLASS, POSITIVE_FLOAT, SEED, SIDE, THREADS, WORKERS, Range, add,
                              check_ranges, check_resize)
from utils.data.caffe_pipeline import PIPELINES, resolve_pipeline
from utils.data.images import DEFAULT_MAX_PIXELS
from utils.data.loaders import DataSettings
from utils.data.presets import DATASET_PRESETS, need_num_class
from utils.training.recipes import RECIPES

# Seeds of the released COCO runs, per bit length: scripts/recipe.sh reads them
# from here; the TIPC tests check the TIPC configs against them.
RECIPE_SEEDS = {16: 0, 32: 2000, 48: 200, 64: 2000}
TOP_K = Range(low=1, high=10_000_000, also=(-1,), text="-1 (whole database) or >= 1")
MOMENTUM = Range(low=0.0, high=1.0, open_high=True, text="in [0, 1)")
LR_FACTOR = Range(low=0.0, high=1.0, open_low=True, text="in (0, 1]")
# The reference recipe's optimisation (spec §3): the default of each of these
# flags unless the --method names its own official value (Method.training).
TRAINING_DEFAULTS = {"learning_rate": 1e-3, "optimizer": "sgd", "weight_decay": 5e-4,
                     "momentum": 0.9, "epoch": 150, "de_step": 50, "de_gamma": 0.5}


def method_default(key):
    """The help's note on a flag whose default the method may set."""
    own = ", ".join(f"{name} {cls.training[key]:g}" if isinstance(cls.training[key], float)
                    else f"{name} {cls.training[key]}"
                    for name, cls in sorted(methods.METHODS.items())
                    if cls.training.get(key, TRAINING_DEFAULTS[key]) != TRAINING_DEFAULTS[key])
    return (f" (default {TRAINING_DEFAULTS[key]}" + (f"; --method {own}" if own else "") + ")")


def build_parser(batch_size=128):
    """``batch_size`` is the per-process default: 128 single-GPU, 64 per GPU.
    Every numeric flag has its range (utils/base/flags.py), checked by parse_args."""
    p = argparse.ArgumentParser(description="HashNet (ICCV 2017) training and evaluation")

    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--bit", type=int, default=64, choices=models.BITS)
    a("--seed", type=int, default=2000, valid=SEED)
    a("--split_seed", type=int, default=0, valid=SEED,
      help="CIFAR-10: seed of the query/train/database split, apart from --seed so that "
           "runs of every bit length share one split")
    a("--eval", action="store_true", help="evaluate --pretrained weights and exit")
    a("--pretrained", default=None, help="HashNet checkpoint path without .pdparams")
    a("--resume", default=None, nargs="?", const="auto",
      help="checkpoint path without .pdparams; alone: the newest in --output-dir")
    a("--debug_steps", type=int, default=50, valid=AT_LEAST_1, help="log a step line every N steps")
    a("--dataset", default="coco", choices=sorted(DATASET_PRESETS))
    a("--data-path", "--data_path", dest="data_path", default="datasets/coco",
      help="root that the list files' image paths are relative to")
    a("--list-dir", "--list_dir", dest="list_dir", default=None,
      help="folder of train/test/database.txt (default data/<dataset>)")
    a("--num_class", type=int, default=None, valid=NUM_CLASS, help="default: the dataset preset")
    a("--topK", type=int, default=None, valid=TOP_K,
      help="mAP@K; -1 = whole database (default: preset)")
    a("--crop_size", type=int, default=None, valid=SIDE,
      help="default: the arch's training crop (" + ", ".join(
          f"{name} {cls.default_crop}" for name, cls in sorted(models.ARCHS.items()))
      + "); at least the arch's smallest (" + ", ".join(
          f"{name} {cls.min_crop}" for name, cls in sorted(models.ARCHS.items())) + ")")
    a("--resize_size", type=int, default=256, valid=SIDE, help="at least --crop_size")
    a("-bs", "--batch-size", "--batch_size", dest="batch_size", type=int, default=None,
      valid=BATCH,
      help=f"per process (default {batch_size}" + "".join(
          f"; --recipe {n}: {r.default_batch} per stream" for n, r in sorted(RECIPES.items())
          if r.default_batch) + ")")
    a("--last_epoch", type=int, default=0, valid=AT_LEAST_0,
      help="epochs already done (with --resume)")
    a("-ee", "--eval_epoch", type=int, default=10, valid=AT_LEAST_1,
      help="evaluate every N epochs and at the last")
    a("-lr", "--learning_rate", type=float, default=None, valid=POSITIVE_FLOAT,
      help="for a global batch of 64" + method_default("learning_rate"))
    a("--de_step", type=int, default=None, valid=AT_LEAST_1,
      help="multiply lr by --de_gamma every N epochs" + method_default("de_step"))
    a("--de_gamma", type=float, default=None, valid=LR_FACTOR,
      help="the lr factor of every --de_step" + method_default("de_gamma"))
    a("-e", "--epoch", type=int, default=None, valid=AT_LEAST_1, help=method_default("epoch"))
    a("-op", "--optimizer", default=None, choices=["sgd", "rmsprop", "adamw"], type=str.lower,
      help="adamw with -wd 0 is Adam" + method_default("optimizer"))
    a("-wd", "--weight_decay", type=float, default=None, valid=NON_NEGATIVE_FLOAT,
      help=method_default("weight_decay"))
    a("--momentum", type=float, default=None, valid=MOMENTUM, help=method_default("momentum"))
    a("--log_path", default="logs")
    a("--output-dir", "--output_dir", dest="output_dir", default="output",
      help="one training run at a time (it holds a lock on the folder)")
    # Not in the reference: where the backbone comes from, and machine knobs.
    a("--backbone", default="imagenet",
      help="'imagenet' (paddle.vision's ImageNet AlexNet, downloaded and converted once), "
           "a converted .pdparams (see scripts/convert_alexnet.py), or 'random' (tests)")
    a("--num_workers", type=int, default=0, valid=WORKERS, help="DataLoader worker processes")
    a("--nprocs", type=int, default=None, valid=THREADS,
      help="main_multi_gpu.py: processes to spawn (default: one per GPU, 2 on a CPU machine)")
    a("--num_threads", type=int, default=None, valid=THREADS,
      help="CPU threads of Paddle's kernels and the numba mAP kernel, per process "
           "(default: this machine's cores / its processes; Paddle's own default is 1)")
    a("--deterministic", action="store_true",
      help="GPU: deterministic cuDNN kernels (slower), so that resuming is bit-exact there "
           "too (CPU runs are already, at a fixed --num_threads)")
    skip = p.add_mutually_exclusive_group()
    skip.add_argument("--skip_no_relevant", action="store_true",
                      help="mAP over the queries with a relevant item in their top K only")
    skip.add_argument("--skip_no_relevant_in_database", action="store_true",
                      help="mAP over the queries with a relevant item anywhere in the database "
                           "only (the authors' caffe/models/predict/*/predict_parallel.py)")
    a("--skip-bad-images", "--skip_bad_images", dest="skip_bad_images", action="store_true",
      help="log and skip missing, unreadable or oversized images instead of stopping")
    a("--max-image-pixels", "--max_image_pixels", dest="max_image_pixels", type=int,
      default=DEFAULT_MAX_PIXELS, valid=AT_LEAST_1,
      help="refuse (or with --skip-bad-images skip) images of more width x height pixels")
    a("--image_cache", default=None, metavar="DIR",
      help="decode each list's images once into DIR (uint8 after the deterministic resize / "
           "centre crop) and read them from there: the same tensors at ~10x the rate "
           "(docs/data.md: Image cache); off by default")
    a("--no_visualdl", "--no-visualdl", dest="no_visualdl", action="store_true",
      help="no VisualDL scalars in <log dir>/vdl (written when visualdl is installed); "
           "history.jsonl is written anyway")
    a("--debug", action="store_true", help="show tracebacks for bad input")
    a("--arch", default=models.DEFAULT_ARCH, choices=models.ARCHS,
      help="the backbone (models/registry.py); the hash layer sits on its last feature")
    a("--input_pipeline", "--input-pipeline", dest="input_pipeline", default="auto",
      choices=PIPELINES,
      help="reference: short side to --resize_size, crop, flip, RGB/255 normalised; caffe: "
           "the authors' CaffeNet inputs (squash to --resize_size, crop, mirror, BGR 0-255 "
           "minus the ImageNet mean; docs/training.md: Backbones); auto: caffe for --arch caffenet")
    a("--recipe", default="reference", choices=RECIPES,
      help="reference: the Paddle reproduction's (spec §1-3); caffe: the authors' Caffe "
           "recipe (two streams, their loss and gradient, iteration schedules; spec §8)")
    a("--method", default=None, choices=sorted(methods.METHODS),
      help="the hashing objective (utils/methods/); default: the recipe's own ("
           + ", ".join(f"--recipe {n}: {r.default_method}" for n, r in sorted(RECIPES.items()))
           + ")")
    for recipe in RECIPES.values():
        recipe.add_flags(p)
    methods.add_flags(p)
    return p


def parse_args(argv=None, batch_size=128):
    parser = build_parser(batch_size)
    args = check_ranges(parser, parser.parse_args(argv))   # None: chosen later (e.g. threads)
    recipe = RECIPES[args.recipe]
    if args.batch_size is None:
        args.batch_size = recipe.default_batch or batch_size
    if args.crop_size is None:
        args.crop_size = models.model_class(args.arch).default_crop
    resolve_method(args, recipe)
    recipe.resolve(args)
    check_resize(args.crop_size, args.resize_size)  # the --arch minimum: engine.run
    num_class, topk = DATASET_PRESETS[args.dataset]
    if args.num_class is None:
        args.num_class = num_class or need_num_class(args.dataset)
    if args.topK is None:
        args.topK = topk
    if args.list_dir is None:
        args.list_dir = os.path.join("data", args.dataset)
    return args


def resolve_method(args, recipe):
    """``--method`` (default: the recipe's), checked against the recipe, with
    its own flags' defaults filled in; another method's flag is refused
    rather than ignored."""
    args.method = args.method or recipe.default_method
    cls = methods.method_class(args.method)
    if args.recipe not in cls.recipes:
        raise UserError(f"--method {args.method} trains under --recipe "
                        f"{' or '.join(cls.recipes)}, not --recipe {args.recipe}")
    foreign = methods.registry.foreign_flag(cls, vars(args))
    if foreign:
        raise UserError(f"{foreign[0]} is a flag of --method {foreign[1]}, not of --method "
                        f"{args.method}: drop it")
    vars(args).update(dataclasses.asdict(method_settings(args)))
    for key, default in TRAINING_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, cls.training.get(key, default))


def method_settings(args):
    cls = methods.method_class(args.method)
    return cls.resolve(methods.registry.flag_values(cls, vars(args)), args.bit, args.dataset)


def build_method(args):
    """The ``--method`` with its settings, for ``--bit`` and ``--num_class``."""
    return methods.method_class(args.method)(method_settings(args), args.bit, args.num_class)


def data_settings(args):
    """The data layer's settings from the parsed flags."""
    return DataSettings(
        dataset=args.dataset, data_path=args.data_path, list_dir=args.list_dir,
        num_class=args.num_class, resize_size=args.resize_size, crop_size=args.crop_size,
        seed=args.seed, split_seed=args.split_seed,
        pipeline=resolve_pipeline(args.input_pipeline, args.arch),
        skip_bad_images=args.skip_bad_images, image_cache=args.image_cache)
