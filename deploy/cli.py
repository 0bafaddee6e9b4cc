"""The command-line flags predict.py and deploy/inference_python/infer.py
share, and their validation (one place, before any work starts)."""
import argparse
import os

from utils.config import BITS, DATASET_PRESETS
from utils.errors import UserError
from utils.runtime import available_cores

# AlexNet's five stride/pool stages leave nothing of a crop under 63 px
# (Paddle Inference then dies with SIGFPE instead of an error).
MIN_CROP = 63


def str2bool(value):
    """The reference's ``--use-gpu True|False`` / ``--benchmark True`` style."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "t", "1", "yes", "y"):
        return True
    if value.lower() in ("false", "f", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def add_retrieval_args(p):
    """Flags common to predict.py and infer.py. Both spellings of each
    (``--data_path``/``--data-path`` …) work in both scripts."""
    a = p.add_argument
    a("--bit", type=int, default=64, choices=BITS)
    a("--dataset", default="coco", choices=sorted(DATASET_PRESETS),
      help="a dataset with list files (CIFAR-10 splits have none)")
    a("--data_path", "--data-path", dest="data_path", default=None,
      help="root the list's image paths are relative to (default datasets/<dataset>)")
    a("--list-dir", "--list_dir", dest="list_dir", default=None,
      help="folder holding database.txt (default data/<dataset>)")
    a("--num_class", type=int, default=None, help="labels per list line (default: dataset preset)")
    a("--img", "--img-path", "--img_path", dest="img", required=True, help="the query image")
    a("--save_path", "--save-path", dest="save_path", default="./output",
      help="where the code cache, the nearest image, the montage and the JSON go")
    a("--crop_size", "--crop-size", dest="crop_size", type=int, default=224)
    a("--resize_size", "--resize-size", dest="resize_size", type=int, default=256)
    a("--topk", type=int, default=10, help="how many database images to return")
    a("--num_threads", "--num-threads", dest="num_threads", type=int, default=available_cores(),
      help="CPU math threads")
    a("--rebuild_cache", "--rebuild-cache", dest="rebuild_cache", action="store_true",
      help="re-encode the database even if a matching cache exists")
    a("--show", nargs="?", const=True, default=False, type=str2bool,
      help="display the montage (needs a display; otherwise a note is printed)")
    a("--debug", action="store_true", help="show tracebacks for bad input")


def resolve_retrieval_args(args):
    """Fill the dataset's defaults into ``args`` and reject impossible values
    (UserError); returns ``args``."""
    if args.dataset.startswith("cifar10"):
        raise UserError(f"--dataset {args.dataset}: retrieval needs list files "
                        "(data/<dataset>/database.txt); CIFAR-10 splits are built in memory")
    args.num_class = args.num_class or DATASET_PRESETS[args.dataset][0]
    args.list_dir = args.list_dir or os.path.join("data", args.dataset)
    args.data_path = args.data_path or os.path.join("datasets", args.dataset)
    check_sizes(args.crop_size, args.resize_size, "--crop_size")
    if args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")
    if not os.path.isfile(args.img):
        raise UserError(f"query image {args.img} not found")
    return args


def check_sizes(crop, resize=None, flag="--crop_size"):
    if crop < MIN_CROP:
        raise UserError(f"{flag} {crop} is too small: AlexNet needs at least {MIN_CROP} px")
    if resize is not None and resize < crop:
        raise UserError(f"--resize_size {resize} is smaller than --crop_size {crop}")
