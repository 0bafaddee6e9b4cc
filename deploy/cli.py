"""The command-line flags predict.py and deploy/inference_python/infer.py
share, and their validation (one place, before any work starts)."""
import argparse
import os

import models
from utils.base.errors import UserError
from utils.base.flags import (AT_LEAST_1, MIN_CROP, NUM_CLASS, SIDE, THREADS, Range, add,
                              check_ranges, check_sizes)
from utils.base.io import check_input_dir, ensure_writable_dir
from utils.base.runtime import available_cores
from utils.data.caffe_pipeline import PIPELINES, build_pipeline, resolve_pipeline
from utils.data.images import DEFAULT_MAX_PIXELS, set_max_pixels
from utils.data.presets import DATASET_PRESETS, need_num_class
from utils.retrieval.hamming import backend_variable
from utils.retrieval.index import DEFAULT_SPEC, index_help, is_saved_index, parse_spec

TOP_RESULTS = Range(low=1, high=1000)   # each one is a tile of the montage


def str2bool(value):
    """The reference's ``--use-gpu True|False`` / ``--benchmark True`` style."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "t", "1", "yes", "y"):
        return True
    if value.lower() in ("false", "f", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def add_retrieval_args(p, crop_default=224):
    """Flags common to predict.py and infer.py. Both spellings of each
    (``--data_path``/``--data-path`` …) work in both scripts. Numeric flags
    carry their range (utils/base/flags.py); parse_retrieval_args checks them."""
    add_database_args(p, crop_default)
    add_query_args(p)


def add_query_args(p):
    """The query of one run: its image, top-k, how to read it, the montage."""
    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--img", "--img-path", "--img_path", dest="img", required=True, help="the query image")
    a("--topk", type=int, default=10, valid=TOP_RESULTS, help="how many database images to return")
    a("--ignore-exif-orientation", "--ignore_exif_orientation", dest="ignore_exif_orientation",
      action="store_true", help="read the query's pixels as stored; by default a photo with an "
      "EXIF orientation is turned upright first (dataset images never are, as in the reference)")
    a("--show", nargs="?", const=True, default=False, type=str2bool,
      help="display the montage (needs a display; otherwise a note is printed)")


def add_database_args(p, crop_default=224):
    """The database and the model's input: the flags of predict.py, infer.py
    and the service (deploy/serve.py)."""
    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--bit", type=int, default=64, choices=models.BITS)
    a("--dataset", default="coco", choices=sorted(DATASET_PRESETS),
      help="a dataset with list files (CIFAR-10 splits have none)")
    a("--data_path", "--data-path", dest="data_path", default=None,
      help="root the list's image paths are relative to (default datasets/<dataset>)")
    a("--list-dir", "--list_dir", dest="list_dir", default=None,
      help="folder holding database.txt (default data/<dataset>)")
    a("--num_class", type=int, default=None, valid=NUM_CLASS,
      help="labels per list line (default: dataset preset)")
    a("--save_path", "--save-path", dest="save_path", default="./output",
      help="where the code cache, the nearest image, the montage and the JSON go")
    a("--crop_size", "--crop-size", dest="crop_size", type=int, default=crop_default, valid=SIDE,
      help=f"at least {MIN_CROP} for AlexNet")
    a("--resize_size", "--resize-size", dest="resize_size", type=int, default=None, valid=SIDE,
      help="at least --crop_size (default: crop x 256/224, i.e. 256 for 224)")
    a("--arch", default=None, choices=models.ARCHS,
      help="the checkpoint's backbone (default alexnet; infer.py: the exported model's)")
    a("--input_pipeline", "--input-pipeline", dest="input_pipeline", default="auto",
      choices=PIPELINES, help="the transforms the model was trained with (auto: caffe for "
                              "--arch caffenet, else reference)")
    a("--num_threads", "--num-threads", dest="num_threads", type=int, default=available_cores(),
      valid=THREADS, help="CPU math threads")
    a("--index", default=DEFAULT_SPEC, help=index_help())
    a("--rebuild_cache", "--rebuild-cache", dest="rebuild_cache", action="store_true",
      help="re-encode the database even if a matching cache exists")
    a("--max-image-pixels", "--max_image_pixels", dest="max_image_pixels", type=int,
      default=DEFAULT_MAX_PIXELS, valid=AT_LEAST_1,
      help="refuse images of more width x height pixels")
    a("--debug", action="store_true", help="show tracebacks for bad input")


def parse_retrieval_args(parser, argv):
    """Parse, check every range, fill the dataset's defaults; returns ``args``."""
    args = check_ranges(parser, parser.parse_args(argv))
    set_max_pixels(args.max_image_pixels)
    return resolve_retrieval_args(args)


def default_resize(crop):
    """The recipe's 256/224 ratio (truncated like torchvision's Resize)."""
    return int(crop * 256 / 224)


def resolve_retrieval_args(args):
    """Fill the dataset's defaults into ``args`` and reject impossible values
    (UserError); returns ``args``. A None ``crop_size`` (infer.py: the
    exported model's input size) is checked when the model is open."""
    if args.dataset.startswith("cifar10"):
        raise UserError(f"--dataset {args.dataset}: retrieval needs list files "
                        "(data/<dataset>/database.txt); CIFAR-10 splits are built in memory")
    args.num_class = (args.num_class or DATASET_PRESETS[args.dataset][0]
                      or need_num_class(args.dataset))
    args.list_dir = args.list_dir or os.path.join("data", args.dataset)
    args.data_path = args.data_path or os.path.join("datasets", args.dataset)
    if args.crop_size is not None:
        if args.resize_size is None:
            args.resize_size = default_resize(args.crop_size)
        check_arch_sizes(args)
    if not is_saved_index(args.index):
        parse_spec(args.index)   # an unknown backend, kind or parameter fails now
    backend_variable()           # so does a bad $HASHNET_HAMMING_BACKEND
    if getattr(args, "img", None) is not None and not os.path.exists(args.img):
        # a directory or a bad file: the image reader says which
        raise UserError(f"query image {args.img} not found")
    check_input_dir(args.list_dir, "--list-dir")
    ensure_writable_dir(args.save_path, "--save_path")   # before the database is encoded
    return args


def fit_sizes_to_model(args, side, program):
    """infer.py: the crop is the size the model was exported at (``side``,
    None when the model does not record it); a different --crop_size is an
    error rather than a silent resize."""
    if side is None and args.crop_size is None:
        raise UserError(f"{program} does not record its input size: pass --crop_size "
                        "(the --img_size it was exported with)")
    if side is not None and args.crop_size not in (None, side):
        raise UserError(f"--crop_size {args.crop_size} differs from the {side} px the model "
                        f"{program} was exported at: drop --crop_size, or export again with "
                        f"--img_size {args.crop_size}")
    args.crop_size = args.crop_size or side
    args.resize_size = args.resize_size or default_resize(args.crop_size)
    check_arch_sizes(args)
    return args


def check_arch_sizes(args):
    arch = models.model_class(args.arch or models.DEFAULT_ARCH)
    check_sizes(args.crop_size, args.resize_size, "--crop_size", min_crop=arch.min_crop,
                label=arch.label)


def fit_arch_to_model(args, info, program):
    """infer.py: --arch and --input_pipeline are the exported model's (its
    export.json ``info``); a different --arch is an error."""
    recorded = info.get("arch", models.DEFAULT_ARCH)
    if args.arch not in (None, recorded):
        raise UserError(f"{program} is an --arch {recorded} model, not --arch {args.arch}: "
                        f"pass --arch {recorded} (or export a --arch {args.arch} checkpoint)")
    args.arch = recorded
    if args.input_pipeline == "auto":
        args.input_pipeline = info.get("input_pipeline", "auto")
    return args


def set_pipeline(args):
    """``args.pipeline``: the transforms of the query and database images,
    None (the reference's) or the Caffe pipeline (utils/data/caffe_pipeline.py),
    by --input_pipeline and --arch (known once the model is). Returns ``args``."""
    args.pipeline = build_pipeline(resolve_pipeline(args.input_pipeline,
                                                    args.arch or models.DEFAULT_ARCH))
    return args
