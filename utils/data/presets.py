"""``--dataset`` presets: each data set's class count and mAP cutoff (spec §4)."""
from utils.base.errors import UserError

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


def need_num_class(dataset):
    raise UserError(f"--dataset {dataset} has no class count: pass --num_class (the line count "
                    "of classes.txt beside your lists)")
