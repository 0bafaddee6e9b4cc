"""The one argument parser of main_single_gpu.py and main_multi_gpu.py.

Flags and defaults are the reference recipe's (spec §3, §6); the reference's
spellings keep working (``-bs``/``--batch-size``, ``--data-path``, ``-ee`` …).
``--dataset`` fills ``--num_class`` and ``--topK`` from its preset unless
they are given. ``--recipe caffe`` selects the authors' Caffe recipe (spec
§8, utils/training/caffe.py); its flags are grouped below and its dataset
presets (class_num, base_lr) are CAFFE_PRESETS. The resolved config is saved
as JSON next to the log and inside every checkpoint.
"""
import argparse
import os

import models
from utils.base.errors import UserError
from utils.base.flags import (AT_LEAST_0, AT_LEAST_1, BATCH, MIN_CROP, NON_NEGATIVE_FLOAT,
                         NUM_CLASS, POSITIVE_FLOAT, SEED, SIDE, THREADS, WORKERS, Range, add,
                         check_ranges, check_resize)
from utils.data.caffe_pipeline import PIPELINES
from utils.data.images import DEFAULT_MAX_PIXELS
from utils.training.recipes import RECIPES

# dataset -> (num_class, topK); topK -1 ranks the whole database
DATASET_PRESETS = {
    "coco": (80, 5000), "coco_lite": (80, 5000),  # coco_lite: the reference's TIPC subset
    "nuswide_21": (21, 5000), "nuswide_21_m": (21, 5000), "nuswide_81_m": (81, 5000),
    "imagenet": (100, 1000),
    "cifar10": (10, -1), "cifar10-1": (10, -1), "cifar10-2": (10, -1),
    "mirflickr": (38, -1), "voc2012": (20, -1),
    "demo": (10, 100),  # the generated demo set (scripts/demo/data.py)
    "custom": (None, -1),  # your own lists (python -m scripts.lists make): --num_class needed
}
BITS = (16, 32, 48, 64)
DEFAULT_CROP = 224   # the reference's; an arch may declare its own default_crop
# --recipe caffe: dataset -> (class_num, base_lr) of the authors' prototxts
# (caffe/models/train/<dataset>/{train_val,solver}.prototxt); mAP@R uses the
# topK preset above, which is their R (5000, 5000, 1000). Other datasets:
# COCO's values. The demo is COCO-like (multi-label, ~37% similar pairs).
CAFFE_PRESETS = {"coco": (1.0, 5e-5), "nuswide_81_m": (5.0, 5e-5), "imagenet": (100.0, 2e-4)}
CAFFE_DEFAULT = CAFFE_PRESETS["coco"]
CAFFE_BATCH = 256  # images per stream (train_val.prototxt image_data_param batch_size)
# Seeds of the released COCO runs, per bit length: scripts/recipe.sh reads them
# from here; tests/test_tipc.py checks the TIPC configs against them.
RECIPE_SEEDS = {16: 0, 32: 2000, 48: 200, 64: 2000}
TOP_K = Range(low=1, high=10_000_000, also=(-1,), text="-1 (whole database) or >= 1")
MOMENTUM = Range(low=0.0, high=1.0, open_high=True, text="in [0, 1)")


def build_parser(batch_size=128):
    """``batch_size`` is the per-process default: 128 single-GPU, 64 per GPU.
    Every numeric flag has its range (utils/base/flags.py), checked by parse_args."""
    p = argparse.ArgumentParser(description="HashNet (ICCV 2017) training and evaluation")

    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--bit", type=int, default=64, choices=BITS)
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
      help=f"default 224 (--arch caffenet: 227, the prototxt's); at least {MIN_CROP} for AlexNet")
    a("--resize_size", type=int, default=256, valid=SIDE, help="at least --crop_size")
    a("-bs", "--batch-size", "--batch_size", dest="batch_size", type=int, default=None,
      valid=BATCH,
      help=f"per process (default {batch_size}; --recipe caffe: {CAFFE_BATCH} per stream)")
    a("--last_epoch", type=int, default=0, valid=AT_LEAST_0,
      help="epochs already done (with --resume)")
    a("-ee", "--eval_epoch", type=int, default=10, valid=AT_LEAST_1,
      help="evaluate every N epochs and at the last")
    a("--alpha", type=float, default=0.1, valid=POSITIVE_FLOAT, help="the sigmoid's slope α")
    a("--step_continuation", type=int, default=20, valid=AT_LEAST_1)
    a("-lr", "--learning_rate", type=float, default=1e-3, valid=POSITIVE_FLOAT,
      help="for a global batch of 64")
    a("--de_step", type=int, default=50, valid=AT_LEAST_1, help="halve lr every N epochs")
    a("-e", "--epoch", type=int, default=150, valid=AT_LEAST_1)
    a("-op", "--optimizer", default="sgd", choices=["sgd", "rmsprop", "adamw"], type=str.lower)
    a("-wd", "--weight_decay", type=float, default=5e-4, valid=NON_NEGATIVE_FLOAT)
    a("--momentum", type=float, default=0.9, valid=MOMENTUM)
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
           "(README: Image cache); off by default")
    a("--no_visualdl", "--no-visualdl", dest="no_visualdl", action="store_true",
      help="no VisualDL scalars in <log dir>/vdl (written when visualdl is installed); "
           "history.jsonl is written anyway")
    a("--debug", action="store_true", help="show tracebacks for bad input")
    a("--arch", default="alexnet", choices=models.ARCHS,
      help="the backbone (models/registry.py); the hash layer sits on its last feature")
    a("--input_pipeline", "--input-pipeline", dest="input_pipeline", default="auto",
      choices=PIPELINES,
      help="reference: short side to --resize_size, crop, flip, RGB/255 normalised; caffe: "
           "the authors' CaffeNet inputs (squash to --resize_size, crop, mirror, BGR 0-255 "
           "minus the ImageNet mean; README: Backbones); auto: caffe for --arch caffenet")
    a("--recipe", default="reference", choices=RECIPES,
      help="reference: the Paddle reproduction's (spec §1-3); caffe: the authors' Caffe "
           "recipe (two streams, their loss and gradient, iteration schedules; spec §8)")
    c = p.add_argument_group("--recipe caffe (iteration-based: -e, -ee, -lr, --de_step, "
                             "--step_continuation, --alpha do not apply; SGD only)")
    add(c, "--max_iter", type=int, default=10000, valid=AT_LEAST_1,
        help="iterations (default 10000)")
    add(c, "--eval_iter", type=int, default=None, valid=AT_LEAST_1,
        help="evaluate every N iterations and at the last (default: at the last)")
    add(c, "--snapshot_iter", type=int, default=1000, valid=AT_LEAST_1,
        help="save last_{bit} every N")
    add(c, "--base_lr", type=float, default=None, valid=POSITIVE_FLOAT,
        help="lr of iterations 0-1999, halved every 2000, not scaled by the batch "
             "(default: the dataset's CAFFE_PRESETS value, else 5e-5)")
    add(c, "--class_num", type=float, default=None, valid=POSITIVE_FLOAT,
        help="weight of similar pairs (default: CAFFE_PRESETS: COCO 1, NUS-WIDE 5, "
             "ImageNet 100, else 1)")
    add(c, "--sigmoid_param", type=float, default=None, valid=POSITIVE_FLOAT,
        help="α (default 10/bit)")
    return p


def parse_args(argv=None, batch_size=128):
    parser = build_parser(batch_size)
    args = check_ranges(parser, parser.parse_args(argv))   # None: chosen later (e.g. threads)
    if args.batch_size is None:
        args.batch_size = CAFFE_BATCH if args.recipe == "caffe" else batch_size
    if args.crop_size is None:
        args.crop_size = getattr(models.model_class(args.arch), "default_crop", DEFAULT_CROP)
    if args.recipe == "caffe":
        resolve_caffe(args)
    check_resize(args.crop_size, args.resize_size)  # the --arch minimum: engine.run
    num_class, topk = DATASET_PRESETS[args.dataset]
    if args.num_class is None:
        args.num_class = num_class or need_num_class(args.dataset)
    if args.topK is None:
        args.topK = topk
    if args.list_dir is None:
        args.list_dir = os.path.join("data", args.dataset)
    return args


def need_num_class(dataset):
    raise UserError(f"--dataset {dataset} has no class count: pass --num_class (the line count "
                    "of classes.txt beside your lists)")


def resolve_caffe(args):
    """Fill the --recipe caffe defaults from the dataset and --bit."""
    class_num, base_lr = CAFFE_PRESETS.get(args.dataset, CAFFE_DEFAULT)
    if args.class_num is None:
        args.class_num = class_num
    if args.base_lr is None:
        args.base_lr = base_lr
    if args.sigmoid_param is None:
        args.sigmoid_param = 10.0 / args.bit  # train_val.prototxt: "10 / the length of code"
    if args.eval_iter is None:
        args.eval_iter = args.max_iter
    if args.optimizer != "sgd":
        raise UserError(f"-op {args.optimizer}: --recipe caffe is the authors' momentum SGD only")
    if args.skip_bad_images:
        raise UserError("--skip-bad-images does not work with --recipe caffe: a skipped image "
                        "would leave the two streams of unequal size; fix or drop the image")
    for flag, value in (("--base_lr", args.base_lr), ("--class_num", args.class_num),
                        ("--sigmoid_param", args.sigmoid_param)):
        if not value > 0:
            raise UserError(f"{flag} must be > 0, got {value}")
