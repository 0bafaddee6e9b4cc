"""Generate the demo dataset: synthetic multi-label images, deterministic.

    python -m scripts.demo.data                  # datasets/demo + data/demo lists
    python -m scripts.demo.data --preset tiny    # the small set CI and TIPC use
    python -m scripts.demo.data --preset coco_lite --layout coco \
        --image-dir datasets/coco_lite --list-dir data/coco_lite   # the reference's TIPC layout

Each image shows 1-3 objects on a noisy, smoothly shaded background. There
are 10 classes, ten hues 36 degrees apart; each object is a disc, square or
triangle of its class's colour, with a random position, size and colour
jitter, and objects may overlap. Like COCO, the database is
every non-training image, the queries included; labels are multi-hot, and
relevance is "shares a label".
"""
import argparse
import colorsys
import os
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

from utils.base.errors import run_cli
from utils.base.flags import AT_LEAST_0, AT_LEAST_1, MAX_SIDE, SEED, Range, add, check_ranges
from utils.base.io import atomic_write
from utils.data.list_format import write_lists

SHAPES = ("disc", "square", "triangle")
# Ten hues 36 degrees apart: a class is a colour, so a model must tell close
# hues apart under jitter, at any size and position, among up to two others,
# whatever the shape (shapes are a nuisance, not a label).
CLASSES = [tuple(int(255 * v) for v in colorsys.hsv_to_rgb(h / 10, 0.85, 0.9)) for h in range(10)]
PRESETS = {  # name -> (train, test, extra database images, image size)
    "default": (1000, 200, 1000, 80),
    "tiny": (128, 32, 96, 72),
    "coco_lite": (20, 4, 12, 96),  # the reference's TIPC set is 9 train, 4 query, 13 database
}
# --layout coco: COCO 2014 file names (training images in train2014/, queries
# and database in val2014/) and 80 labels, of which the first 10 are the
# colour classes: what a config written for --dataset coco / coco_lite reads.
COCO_LABELS = 80


def draw_object(draw, shape, colour, box):
    x0, y0, x1, y1 = box
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def make_image(rng, size):
    """One image and its class ids."""
    # Background: a random low-saturation gradient plus pixel noise.
    corners = rng.uniform(60, 190, size=(2, 2, 3))
    t = np.linspace(0, 1, size)[:, None, None]
    s = np.linspace(0, 1, size)[None, :, None]
    bg = ((1 - t) * ((1 - s) * corners[0, 0] + s * corners[0, 1])
          + t * ((1 - s) * corners[1, 0] + s * corners[1, 1]))
    bg = bg.mean(axis=2, keepdims=True) * 0.6 + bg * 0.4  # wash out the colour
    bg += rng.normal(0, 12, size=(size, size, 3))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    classes = rng.choice(len(CLASSES), size=rng.integers(1, 4), replace=False)
    for c in classes:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        side = int(rng.integers(size // 5, size * 2 // 5 + 1))
        x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(int(v) for v in np.clip(np.array(CLASSES[c]) + jitter, 0, 255))
        draw_object(draw, shape, fill, (x0, y0, x0 + side, y0 + side))
    return img, sorted(int(c) for c in classes)




def image_name(i, training, layout):
    if layout == "coco":
        folder = "train2014" if training else "val2014"
        return f"{folder}/COCO_{folder}_{i:012d}.jpg"
    return f"images/{i:06d}.jpg"


def generate(image_dir, list_dir, n_train, n_test, n_extra, size, seed=0, layout="demo"):
    """Write images and train/test/database lists; returns the counts."""
    total = n_train + n_test + n_extra
    n_labels = COCO_LABELS if layout == "coco" else len(CLASSES)
    names, labels = [], []
    for i in range(total):
        img, classes = make_image(np.random.default_rng([seed, i]), size)
        name = image_name(i, i < n_train, layout)
        os.makedirs(os.path.dirname(os.path.join(image_dir, name)), exist_ok=True)
        atomic_write(os.path.join(image_dir, name), lambda tmp: img.save(tmp, "JPEG", quality=90))
        names.append(name)
        labels.append(np.bincount(classes, minlength=n_labels))
    train = slice(0, n_train)
    test = slice(n_train, n_train + n_test)
    database = slice(n_train, total)  # every non-training image, queries included
    # Lists last, so an interrupted run leaves no list pointing at missing images.
    write_lists(list_dir, {split: (names[part], labels[part]) for split, part in
                           (("train", train), ("test", test), ("database", database))})
    return {"train": n_train, "test": n_test, "database": total - n_train}


def main(argv):
    p = argparse.ArgumentParser(description="generate the synthetic demo dataset")

    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--preset", choices=sorted(PRESETS), default="default")
    a("--image-dir", default="datasets/demo", help="images go here (--data-path)")
    a("--list-dir", default="data/demo", help="train/test/database.txt go here")
    a("--train", type=int, valid=AT_LEAST_1, help="training images (default: preset)")
    a("--test", type=int, valid=AT_LEAST_1, help="query images (default: preset)")
    a("--extra", type=int, valid=AT_LEAST_0, help="database images besides the queries")
    a("--size", type=int, valid=Range(low=16, high=MAX_SIDE),
      help="image side in px (default: preset)")
    a("--seed", type=int, default=0, valid=SEED)
    a("--layout", choices=("demo", "coco"), default="demo",
      help="demo: images/NNNNNN.jpg, 10 labels; coco: train2014/ + val2014/ COCO names, 80 labels")
    a("--debug", action="store_true")
    args = check_ranges(p, p.parse_args(argv))
    n_train, n_test, n_extra, size = PRESETS[args.preset]
    n_train, n_test, n_extra, size = (v if v is not None else d for v, d in
                                      zip((args.train, args.test, args.extra, args.size),
                                          (n_train, n_test, n_extra, size)))
    start = time.time()
    counts = generate(args.image_dir, args.list_dir, n_train, n_test, n_extra, size, args.seed,
                      args.layout)
    print(f"demo data: {counts} images of {size}px in {args.image_dir}, lists in "
          f"{args.list_dir} ({time.time() - start:.1f}s)")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
