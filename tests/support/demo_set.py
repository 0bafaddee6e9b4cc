"""The tiny generated demo set every data-driven test shares (the ``demo``
fixture of tests/conftest.py), and the flags that point a run at it.

Sized for a 2-core CPU: 72 px images cropped to 64 px, a few dozen images,
``--backbone random``, the tests' Paddle threads (support/threads.py)."""
import os
import types

import numpy as np

from support.threads import THREADS

N_TRAIN, N_TEST, N_EXTRA, IMAGE_SIZE = 48, 24, 24, 72
CROP, RESIZE = 64, 72


def make_demo(root):
    """Generate the demo set under ``root``: images under ``image_dir``, lists
    under ``list_dir``; also returns the counts ``generate`` reported."""
    from scripts.demo.data import generate
    image_dir, list_dir = str(root / "images"), str(root / "lists")
    counts = generate(image_dir, list_dir, N_TRAIN, N_TEST, N_EXTRA, IMAGE_SIZE, seed=0)
    return types.SimpleNamespace(image_dir=image_dir, list_dir=list_dir, counts=counts)


def demo_argv(demo, out_dir, *extra, bit=16):
    """Command-line flags of a tiny run on the demo set, writing under out_dir."""
    return ["--dataset", "demo", "--data-path", demo.image_dir, "--list-dir", demo.list_dir,
            "--bit", str(bit), "--crop_size", str(CROP), "--resize_size", str(RESIZE),
            "--backbone", "random", "--num_threads", str(THREADS), "--seed", "0",
            "--output-dir", os.path.join(str(out_dir), "output"),
            "--log_path", os.path.join(str(out_dir), "logs"), *extra]


def predict_argv(demo, prefix, img, save, *extra, bit=16):
    """predict.py's flags: query ``img`` against the demo database with the
    weights at ``prefix``, results under ``save``."""
    return ["--bit", str(bit), "--dataset", "demo", "--data_path", demo.image_dir,
            "--list-dir", demo.list_dir, "--pretrained", prefix, "--crop_size", str(CROP),
            "--resize_size", str(RESIZE), "--img", img, "--save_path", str(save),
            "--num_threads", str(THREADS), *extra]


def database(demo):
    """The demo database as an evaluation ImageList."""
    from utils.data.loaders import ImageList
    return ImageList(os.path.join(demo.list_dir, "database.txt"), demo.image_dir, 10,
                     train=False, resize_size=RESIZE, crop_size=CROP)


def database_batch(demo):
    """Every database image, as one array [n, 3, CROP, CROP]."""
    db = database(demo)
    return np.stack([db[i][0] for i in range(len(db))])


def query_path(demo, index):
    """The file of database image ``index``."""
    return os.path.join(demo.image_dir, database(demo).paths[index])
