"""The decoded-image cache (``--image_cache DIR``): each list's JPEGs decoded
once, kept as uint8 pixels in a memory-mapped file, and read from there.

Why: a COCO run is bound by JPEG decoding, not by the model (about 90
images/s per core for decode + resize + crop), and it decodes the same
10,000 training and 112,218 database images again every epoch and every
evaluation. Both transforms (spec §4) start with a deterministic step, so
that step is cached and only the rest runs per sample:

  * training: the image resized to ``--resize_size`` on its short side
    (``ResizedShortSide``); the random crop and flip are drawn at load time
    from the same per-sample RNG, keyed by (seed, epoch, index), as without
    the cache;
  * query and database: the centre crop at ``--crop_size`` (``CentreCrop``).

The tensors are bit-identical to the uncached path: the pixels are the same
uint8 values PIL gives there, the crop origin comes from the same function
(``utils.data.transforms.crop_origin``) with the same draws, and the normalisation
table is made by ``to_normalized_array`` itself (see ``NORMALIZED``).

One file per list and step, ``<list>-<step>-<hash of the list's path>.u8``:

  [ pixels: image 0, image 1, … as flat uint8 H×W×3, back to back ]
  [ index: .npz bytes: offsets int64 [n], shapes int64 [n, 3],
    fingerprint (JSON), errors (JSON [[i, message], …]),
    image_stats int64 [n, 3] (size, mtime in ns, inode of each image) ]
  [ trailer: index length (uint64 little-endian), MAGIC ]

written atomically (``utils.base.io.atomic_write``), so a cache is either whole
or absent. It is used only while its fingerprint (sha256 of the list file,
the data root, the sizes, the step, the Pillow version) matches and its
images' stat identity is the one recorded (an image replaced in place under
the same path is noticed, unless a tool kept its size, mtime and inode); a
stale or unreadable one is rebuilt with a line saying why, as the database
code cache (``utils.retrieval.code_cache``) is.
"""
import collections
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL
from PIL import Image
from tqdm import tqdm

from utils.base import distributed as dist
from utils.base.array_files import load_npz
from utils.base.fingerprint import (CacheError, StaleCache, changed_files, check_fingerprint,
                                    file_stats, sha256_file)
from utils.data.hashing_dataset import HashingDataset
from utils.data.images import check_pixels
from utils.data.transforms import crop, crop_origin, load_rgb, resize_short, to_normalized_array
from utils.data.images import short_side_size
from utils.base.errors import UserError, one_line
from utils.base.text_files import parse_json
from utils.base.io import (DiskFullError, atomic_write, ensure_writable_dir, free_space,
                           human_bytes, remove_leftovers, temp_file_prefix)
from utils.base.runtime import available_cores

FORMAT = 1
MAGIC = b"HNIMG\x00\x00\x01"
TRAILER = struct.Struct("<Q8s")  # index length, MAGIC
# fingerprint key -> what a difference means, for the "rebuilding" line
CHANGES = {
    "format": "the cache format changed",
    "list_sha256": "the list changed",
    "count": "the list changed",
    "data_path": "--data-path changed",
    "step": "the cached step changed",
    "resize_size": "--resize_size changed",
    "crop_size": "--crop_size changed",
    "pillow": "the Pillow version changed",
}


# ---------------------------------------------------------------- the steps
@dataclasses.dataclass(frozen=True)
class ResizedShortSide:
    """Training's deterministic step: resize to ``resize_size`` on the short
    side. Its images have various widths and heights."""
    resize_size: int
    name = "resized"

    def __call__(self, img):
        return np.asarray(resize_short(img, self.resize_size))

    def nbytes(self, path):
        """Bytes of one cached image, from the file's header (no decoding);
        0 for a file that cannot be opened (it is skipped or refused later)."""
        try:
            with Image.open(path) as img:
                check_pixels(path, *img.size, self.resize_size)
                w, h = short_side_size(*img.size, self.resize_size)
        except (OSError, UserError):  # refused (or skipped) when it is decoded
            return 0
        return w * h * 3


@dataclasses.dataclass(frozen=True)
class CentreCrop:
    """Evaluation's whole transform short of normalising: resize, centre crop."""
    resize_size: int
    crop_size: int
    name = "crop"

    def __call__(self, img):
        return np.asarray(crop(resize_short(img, self.resize_size), self.crop_size))

    def nbytes(self, path):
        return self.crop_size * self.crop_size * 3


def step_for(images):
    """The deterministic step of an ImageList's transform."""
    if images.train:
        return ResizedShortSide(images.resize_size)
    return CentreCrop(images.resize_size, images.crop_size)


def make_fingerprint(list_file, data_path, step, count):
    """What determines a cache's pixels."""
    return {"format": FORMAT, "list_sha256": sha256_file(list_file), "count": int(count),
            "data_path": os.path.realpath(data_path), "step": step.name,
            "pillow": PIL.__version__, **dataclasses.asdict(step)}


def cache_path(cache_dir, list_file, step):
    """Where a list's cache lives: named by the list's path (not by the
    fingerprint), so that a changed list or size finds, and replaces, its
    stale cache instead of piling up new ones."""
    where = hashlib.sha256(os.path.realpath(list_file).encode()).hexdigest()[:12]
    stem = os.path.splitext(os.path.basename(list_file))[0]
    return os.path.join(cache_dir, f"{stem}-{step.name}-{where}.u8")


# ---------------------------------------------------------------- reading
# to_normalized_array of every uint8 level in every channel, [3, 256]: the
# per-element arithmetic is the same, so a look-up gives the same float32
# bits, ~4x faster than computing (x / 255 - mean) / std per pixel.
NORMALIZED = to_normalized_array(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None],
                                           3, axis=2))[:, 0, :].copy()


def normalize_uint8(pixels):
    """uint8 [H, W, 3] -> float32 [3, H, W], equal to to_normalized_array."""
    out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    for c in range(3):
        np.take(NORMALIZED[c], pixels[..., c], out=out[c])
    return out


def random_crop_flip(pixels, size, rng):
    """Training's random part on the cached resized image: the crop origin,
    then the flip, drawn from ``rng`` in train_transform's order."""
    h, w = pixels.shape[:2]
    left, top = crop_origin(w, h, size, rng)
    x = pixels[top:top + size, left:left + size]
    if rng.random() < 0.5:
        x = x[:, ::-1]  # PIL's FLIP_LEFT_RIGHT
    return normalize_uint8(x)


class DecodedImages:
    """The read side of a cache: ``images[i]`` is image i, a uint8 [H, W, 3]
    view of the memory-mapped file, or a UserError for an image that could
    not be read when the cache was built (the message of that time)."""

    def __init__(self, path, pixel_bytes, offsets, shapes, errors):
        self.path, self.pixel_bytes = path, pixel_bytes
        self.offsets, self.shapes, self.errors = offsets, shapes, errors
        self._flat = None  # mapped on first use, in each (worker) process

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, i):
        if i in self.errors:
            raise UserError(self.errors[i])
        if self._flat is None:
            self._flat = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.pixel_bytes,))
        h, w, c = (int(s) for s in self.shapes[i])
        start = int(self.offsets[i])
        return self._flat[start:start + h * w * c].reshape(h, w, c)

    def __getstate__(self):
        # A DataLoader worker maps the file itself: a pickled memmap would
        # be a copy of all the pixels.
        return dict(self.__dict__, _flat=None)


class CachedImageList(HashingDataset):
    """An ImageList whose deterministic step is read from a cache: same
    samples, labels, indices, skipping and augmentation stream."""

    def __init__(self, images, pixels):
        super().__init__(images.labels, resize_size=images.resize_size,
                         crop_size=images.crop_size, train=images.train, seed=images.seed,
                         skip_bad_images=images.skip_bad_images)
        self.list_file, self.root, self.paths = images.list_file, images.root, images.paths
        self.pixels = pixels

    def image(self, index):
        return self.pixels[index]

    def transform(self, pixels, index):
        if self.train:
            return random_crop_flip(pixels, self.crop_size, self.augmentation_rng(index))
        return normalize_uint8(pixels)


# ---------------------------------------------------------------- building
def decode(step, path):
    """One image through ``step`` -> (uint8 [H, W, 3], None), or (None, the
    one-line message) if it is missing or unreadable. Other errors (e.g. an
    image smaller than the crop) are raised: they stop the run today too."""
    try:
        img = load_rgb(path, step.resize_size)
    except UserError as err:
        return None, str(err)
    return np.ascontiguousarray(step(img), dtype=np.uint8), None


def build_workers():
    return available_cores()


class DecodedImageCache:
    """One list's images after the deterministic step, in one file, reused
    while its fingerprint matches.

    ``path``: the cache file; ``fingerprint``: ``make_fingerprint(...)``;
    ``log``: prints one line per decision (default: the run's log)."""

    def __init__(self, path, fingerprint, log=None, images=None):
        """``images``: (paths, file_stats of them) of the list, now."""
        self.path, self.fingerprint, self.images = path, fingerprint, images
        self.log = log or logging.getLogger("hashnet").info

    # -------------------------------------------------------------- reading
    def read(self):
        """The DecodedImages of ``path``; CacheError if missing or unreadable,
        StaleCache if made from another list, root or size."""
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                if size < TRAILER.size:
                    raise CacheError(f"{size} bytes, shorter than its trailer")
                f.seek(size - TRAILER.size)
                index_bytes, magic = TRAILER.unpack(f.read(TRAILER.size))
                if magic != MAGIC:
                    raise CacheError("no end marker (an incomplete or foreign file)")
                pixel_bytes = size - TRAILER.size - index_bytes
                if pixel_bytes < 0:
                    raise CacheError(f"index of {index_bytes} bytes in a file of {size}")
                f.seek(pixel_bytes)
                raw = f.read(index_bytes)
            index = load_npz(raw)
            offsets, shapes = index["offsets"], index["shapes"]
            saved = parse_json(str(index["fingerprint"][()]))
            errors = {int(i): str(m) for i, m in parse_json(str(index["errors"][()]))}
        except (OSError, ValueError, KeyError, TypeError, OverflowError) as err:
            raise CacheError(one_line(err))
        check_fingerprint(saved, self.fingerprint, CHANGES)
        self.check_index(offsets, shapes, pixel_bytes)
        if self.images is not None:
            changed = changed_files(index.get("image_stats"), self.images[1], self.images[0])
            if changed:
                raise StaleCache(changed)
        return DecodedImages(self.path, pixel_bytes, offsets, shapes, errors)

    def check_index(self, offsets, shapes, pixel_bytes):
        count = self.fingerprint["count"]
        if offsets.shape != (count,) or shapes.shape != (count, 3):
            raise CacheError(f"index of shape {offsets.shape}/{shapes.shape} for {count} images")
        if offsets.dtype != np.int64 or shapes.dtype != np.int64:
            raise CacheError(f"index of types {offsets.dtype}/{shapes.dtype}, not int64")
        ends = offsets + shapes.prod(axis=1)
        if count and (offsets.min() < 0 or shapes.min() < 0 or ends.max() > pixel_bytes):
            raise CacheError(f"index points past the {pixel_bytes} bytes of pixels")

    # -------------------------------------------------------------- writing
    def write(self, paths, step, skip_bad_images):
        """Decode ``paths`` through ``step`` in parallel threads and write
        the cache atomically. A missing or unreadable image is a UserError
        naming it, or (``skip_bad_images``) logged and recorded, so that the
        loader skips it as it does without the cache."""
        workers = min(build_workers(), max(1, len(paths)))

        def write_file(tmp):
            offsets, shapes, errors = [], [], []
            with open(tmp, "wb") as f, parallel_map(workers) as pmap:
                results = pmap(functools.partial(decode, step), paths)
                for i, (pixels, error) in enumerate(tqdm(
                        results, total=len(paths), desc=f"image cache {os.path.basename(self.path)}",
                        leave=False, disable=not sys.stderr.isatty())):
                    if error is not None:
                        if not skip_bad_images:
                            raise UserError(error)
                        self.log(f"warning: image cache: {error}: it will be skipped")
                        errors.append([i, error])
                        pixels = np.zeros((0, 0, 3), np.uint8)
                    offsets.append(f.tell())
                    shapes.append(pixels.shape)
                    f.write(pixels.tobytes())
                f.write(self.index_bytes(offsets, shapes, errors))
        atomic_write(self.path, write_file)

    def index_bytes(self, offsets, shapes, errors):
        buffer = io.BytesIO()
        stats = {} if self.images is None else {"image_stats": self.images[1]}
        np.savez(buffer, offsets=np.asarray(offsets, dtype=np.int64).reshape(-1),
                 shapes=np.asarray(shapes, dtype=np.int64).reshape(-1, 3),
                 fingerprint=np.array(json.dumps(self.fingerprint, sort_keys=True)),
                 errors=np.array(json.dumps(errors)), **stats)
        return buffer.getvalue() + TRAILER.pack(buffer.tell(), MAGIC)

    def remove_leftovers(self):
        """The temp file of a killed build (up to the whole cache's size) goes."""
        freed = remove_leftovers(os.path.dirname(os.path.abspath(self.path)),
                                 temp_file_prefix(self.path), ".tmp")
        if freed:
            self.log(f"image cache: removed {human_bytes(freed)} left by a killed build of "
                     f"{os.path.basename(self.path)}")

    def check_disk(self, need):
        """Refuse, before decoding anything, a build the disk cannot hold."""
        directory = os.path.dirname(os.path.abspath(self.path))
        free = shutil.disk_usage(directory).free
        if need > free:
            raise UserError(f"--image_cache {directory}: {os.path.basename(self.path)} needs "
                            f"about {human_bytes(need)} but only {human_bytes(free)} are free "
                            "there: free some space or pass another --image_cache")
        return free

    # -------------------------------------------------------------- the policy
    def get(self, paths, step, skip_bad_images=False):
        """DecodedImages of ``paths`` (absolute), from the cache if it is
        current, else built first (with a line saying why)."""
        count = len(paths)
        if os.path.isfile(self.path):
            try:
                images = self.read()
                self.log(f"image cache: {count:,} decoded images from {self.path}")
                return images
            except StaleCache as err:
                self.log(f"image cache: {self.path} is stale ({err}); rebuilding it")
            except CacheError as err:
                self.log(f"warning: image cache {self.path} is unreadable or corrupt ({err}); "
                         "rebuilding it")
        ensure_writable_dir(os.path.dirname(os.path.abspath(self.path)), "--image_cache")
        self.remove_leftovers()   # before the free-space check: they must not count
        need = sum(step.nbytes(p) for p in paths) + 64 * count + 4096  # pixels + index
        free = self.check_disk(need)
        self.log(f"image cache: decoding {count:,} images into {self.path}: about "
                 f"{human_bytes(need)} on disk ({human_bytes(free)} free), "
                 f"{min(build_workers(), max(1, count))} decoding thread(s)")
        start = time.time()
        try:
            self.write(paths, step, skip_bad_images)
        except (OSError, DiskFullError) as err:  # e.g. the disk filled up after all; nothing
            # is left behind (utils/base/io.py raises DiskFullError for a full disk)
            raise UserError(f"--image_cache: writing {self.path} failed ({err.strerror or err}; "
                            f"{free_space(self.path)} free there): free some space or pass "
                            "another --image_cache")
        took = time.time() - start
        self.log(f"image cache: built {self.path} in {took:.1f}s "
                 f"({count / max(took, 1e-9):.1f} images/s, {human_bytes(os.path.getsize(self.path))})")
        return self.read()

    def wait(self, poll=1.0):
        """DecodedImages once another process (local rank 0) has built the
        cache; no collective, so a build longer than the process group's
        timeout is fine, and if the builder fails the run stops us."""
        self.log(f"image cache: waiting for local rank 0 to build {self.path}")
        while True:
            try:
                return self.read()
            except CacheError:
                time.sleep(poll)


@contextlib.contextmanager
def parallel_map(workers):
    """An ordered ``map`` over ``workers`` threads (the builtin one for one).

    Threads, not processes: PIL releases the GIL while it decodes and
    resamples, so they decode in parallel; and forking a process that runs
    Paddle (its C signal handlers allocate, gloo and BLAS threads hold
    locks) can deadlock the child or the parent."""
    if workers == 1:
        yield map
        return
    with ThreadPoolExecutor(workers) as pool:
        yield functools.partial(_ordered_map, pool, window=4 * workers)
        pool.shutdown(cancel_futures=True)


def _ordered_map(pool, fn, items, window):
    """fn over items in order, at most ``window`` results held at a time."""
    pending = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def cached_image_list(images, cache_dir, log=None):
    """``images`` (an ImageList) reading its deterministic step from the
    cache under ``cache_dir``, which local rank 0 builds if needed while the
    other processes on its machine wait for it."""
    step = step_for(images)
    paths = [os.path.join(images.root, p) for p in images.paths]
    cache = DecodedImageCache(cache_path(cache_dir, images.list_file, step),
                              make_fingerprint(images.list_file, images.root, step,
                                               len(images.paths)), log,
                              images=(images.paths, file_stats(paths)))
    if dist.local_rank() == 0:
        pixels = cache.get(paths, step, images.skip_bad_images)
    else:
        pixels = cache.wait()
    return CachedImageList(images, pixels)
