"""Input pipeline: decoding JPEGs every time (today) against the decoded-image
cache (--image_cache), side by side in one run, in one process.

The benchmark writes COCO-sized, photo-like JPEGs (640 px on the long side,
landscape and portrait, smooth shading, shapes, texture; COCO-like file
sizes) into a temp dir, with a train and a database list, then times
``dataset[i]`` over every image, the way a loader worker produces samples:

  * training sample: decode, resize 256, random crop 224, flip, normalise
    (today) vs the cached resized image, random crop, flip, normalise;
  * evaluation sample: decode, resize 256, centre crop 224, normalise
    (today) vs the cached crop, normalised;

and checks that both give the same tensors. The cache build (decoding each
image once, in worker processes) is timed on its own. From the measured
rates it prints the disk the cache takes for COCO and the input time of a
COCO run (150 epochs of 10,000 images, 15 evaluations of 5,000 queries +
112,218 database images) with and without the cache. The final
``input speed-up`` is that input-time ratio: it weights the training and
evaluation rates as a COCO run does.

    python benchmarks/bench_input.py                  # 240 images
    python benchmarks/bench_input.py --images 60      # quick
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.data import image_cache  # noqa: E402
from utils.training.config import parse_args  # noqa: E402
from utils.data.loaders import build_datasets  # noqa: E402
from utils.base.runtime import available_cores  # noqa: E402

# COCO: 10,000 train, 5,000 queries, 112,218 database images; 150 epochs,
# an evaluation every 10 (spec §3, §4).
COCO_TRAIN, COCO_QUERIES, COCO_DATABASE, EPOCHS, EVALUATIONS = 10_000, 5_000, 112_218, 150, 15
# width x height of the generated photos: COCO's common shapes
SHAPES = [(640, 480), (480, 640), (640, 427), (427, 640), (640, 360), (500, 375)]


def photo(rng, w, h):
    """A photo-like RGB image: shaded background, overlapping shapes with
    soft edges, fine texture. Its JPEG decodes like a COCO photo's."""
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(6, 14)):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(20, w // 2), y0 + rng.integers(20, h // 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    texture = rng.normal(0, 11, size=(h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + texture, 0, 255).astype(np.uint8))


def write_photos(root, count, seed):
    """JPEGs under root/images and train/database lists under root/lists."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "lists"))
    lines, sizes = [], []
    for i in range(count):
        w, h = SHAPES[i % len(SHAPES)]
        name = f"images/{i:06d}.jpg"
        photo(rng, w, h).save(os.path.join(root, name), quality=95)
        sizes.append(os.path.getsize(os.path.join(root, name)))
        labels = np.zeros(80, dtype=int)
        labels[rng.choice(80, size=rng.integers(1, 4), replace=False)] = 1
        lines.append(f"{name} {' '.join(map(str, labels))}\n")
    for split in ("train", "database"):
        with open(os.path.join(root, "lists", f"{split}.txt"), "w") as f:
            f.writelines(lines)
    return np.mean(sizes)


def timed_pass(dataset, min_seconds=0.0):
    """Images/s of dataset[i] over every i, repeated (new epochs) for at
    least ``min_seconds``."""
    count, epoch, start = 0, 0, time.perf_counter()
    while True:
        epoch += 1
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            dataset[i]
        count += len(dataset)
        took = time.perf_counter() - start
        if took >= min_seconds:
            return count / took


def same_tensors(plain, cached, count):
    for epoch in (1, 2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in np.linspace(0, len(plain) - 1, count).astype(int):
            if not np.array_equal(plain[i][0], cached[i][0]):
                return False
    return True


def hours(seconds):
    return f"{seconds / 3600:.2f} h"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=240, help="generated JPEGs")
    p.add_argument("--workers", type=int, default=4,
                   help="loader workers assumed for the COCO estimate (NUM_WORKERS of scripts/recipe.sh)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="least time of a cached pass")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_input_") as root:
        start = time.perf_counter()
        jpeg_bytes = write_photos(root, args.images, args.seed)
        print(f"data: {args.images} generated photo-like JPEGs ({', '.join(f'{w}x{h}' for w, h in SHAPES)}), "
              f"{jpeg_bytes / 1e3:.0f} kB each on average, made in {time.perf_counter() - start:.1f} s")
        flags = ["--dataset", "coco", "--data-path", root, "--list-dir", os.path.join(root, "lists"),
                 "--crop_size", "224", "--resize_size", "256"]
        splits = ("train", "database")
        plain = build_datasets(parse_args(flags), splits)
        cache_dir = os.path.join(root, "cache")
        start = time.perf_counter()
        cached = build_datasets(parse_args(flags + ["--image_cache", cache_dir]), splits)
        build = 2 * args.images / (time.perf_counter() - start)
        print(f"cache build: {build:.1f} images/s with {image_cache.build_workers()} decoding "
              f"thread(s) on {available_cores()} core(s) (train + database lists, decoded once)")
        per_image = {s: os.path.getsize(cached[s].pixels.path) / args.images for s in splits}
        print(f"cache bytes per image: train {per_image['train']:,.0f} (resized to 256 on the short "
              f"side, uint8), database {per_image['database']:,.0f} (224x224x3 crop, uint8)")
        print("tensors identical with and without the cache: "
              f"{'yes' if all(same_tensors(plain[s], cached[s], 16) for s in splits) else 'NO'}")

        rate = {}
        for s in splits:
            rate["plain", s] = timed_pass(plain[s])
            rate["cached", s] = timed_pass(cached[s], args.min_seconds)
            print(f"{s + ' sample':>15}: decode + transform {rate['plain', s]:8.1f} images/s | "
                  f"cached {rate['cached', s]:8.1f} images/s | {rate['cached', s] / rate['plain', s]:.1f}x")

    train_images = EPOCHS * COCO_TRAIN
    eval_images = EVALUATIONS * (COCO_QUERIES + COCO_DATABASE)
    w = args.workers
    input_time = {how: train_images / (w * rate[how, "train"]) + eval_images / (w * rate[how, "database"])
                  for how in ("plain", "cached")}
    build_time = (COCO_TRAIN + COCO_QUERIES + COCO_DATABASE) / (w * rate["plain", "database"])
    disk = [(name, count, per_image[kind]) for name, count, kind in
            (("train", COCO_TRAIN, "train"), ("database", COCO_DATABASE, "database"),
             ("queries", COCO_QUERIES, "database"))]
    print("COCO cache on disk: " + "; ".join(f"{name} {count:,} x {size:,.0f} B = {count * size / 1e9:.2f} GB"
                                             for name, count, size in disk)
          + f"; total {sum(count * size for _, count, size in disk) / 1e9:.2f} GB")
    print(f"COCO run input time with {w} loader workers ({EPOCHS} epochs x {COCO_TRAIN:,} + "
          f"{EVALUATIONS} evaluations x {COCO_QUERIES + COCO_DATABASE:,} images, each worker at the "
          f"rates above): decoding {hours(input_time['plain'])}; cached {hours(input_time['cached'])} "
          f"+ one build of about {hours(build_time)}")
    print(f"input speed-up: {input_time['plain'] / input_time['cached']:.1f}x")


if __name__ == "__main__":
    main()
