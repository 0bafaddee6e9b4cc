"""utils/data/image_cache.py, the decoded-image cache (--image_cache): the
same tensors as decoding every time, for training (random crop and flip,
several seeds and epochs) and evaluation, on JPEGs of several sizes and
orientations; stale, corrupt and too-big caches; a killed build's temp
file; bad images; DataLoader workers; two processes.

The two-process run starts its processes through
``python tests/data/test_image_cache.py OUT_DIR FLAGS...`` (see the bottom;
support.cli.run_test_script puts tests/ on its PYTHONPATH)."""
import copy
import functools
import logging
import os
import re
import shutil
import sys
import types

import numpy as np
import paddle
import pytest
from PIL import Image

from support.cli import TINY, run_test_script
from support.demo_set import demo_argv
from support.errors import user_error
from support.images import strip
from support.leftovers import leftover_name
from support.logs import log_lines
from utils.base import distributed as dist
from utils.data import image_cache
from utils.data.image_cache import CachedImageList
from utils.data.loaders import build_datasets, build_loader, set_epoch
from utils.data.transforms import crop_origin
from utils.training import engine
from utils.training.config import data_settings, parse_args


CROP, RESIZE = 64, 72


# (width, height): landscape, portrait, square, odd widths and heights, and
# one whose short side is already RESIZE
SIZES = [(97, 80), (80, 121), (75, 75), (133, 90), (91, 140), (72, 72), (201, 77), (77, 99)]


NUM_CLASS = 10  # the demo preset


def photo(rng, w, h):
    """Smooth colour gradients, a few blobs and noise: JPEG-like content."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6, size=3)
    img = np.stack([128 + 90 * np.sin(xx / rng.uniform(8, 30) + p) * np.cos(yy / rng.uniform(8, 30) - p)
                    for p in phase], axis=-1)
    img += rng.normal(0, 12, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write_lists(list_dir, names, splits):
    os.makedirs(list_dir, exist_ok=True)
    rng = np.random.default_rng(1)
    for split, picks in splits.items():
        with open(os.path.join(list_dir, f"{split}.txt"), "w") as f:
            for i in picks:
                labels = (rng.random(NUM_CLASS) < 0.3).astype(int)
                labels[i % NUM_CLASS] = 1
                f.write(f"{names[i]} {' '.join(map(str, labels))}\n")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    image_dir, list_dir = str(root / "images"), str(root / "lists")
    os.makedirs(os.path.join(image_dir, "sub"))
    rng = np.random.default_rng(0)
    names = []
    for i, (w, h) in enumerate(SIZES * 2):
        names.append(f"sub/{i:03d}.jpg")
        photo(rng, w, h).save(os.path.join(image_dir, names[-1]), quality=90)
    n = len(names)
    write_lists(list_dir, names, {"train": range(n), "test": range(0, n, 3),
                                  "database": range(n)})
    return types.SimpleNamespace(image_dir=image_dir, list_dir=list_dir, names=names)


def make(photos, *extra, image_dir=None, list_dir=None):
    return parse_args(["--dataset", "demo", "--data-path", image_dir or photos.image_dir,
                       "--list-dir", list_dir or photos.list_dir, "--crop_size", str(CROP),
                       "--resize_size", str(RESIZE), *extra])


def both(photos, cache_dir, *extra, splits=("train", "test", "database"), **dirs):
    """({split: uncached dataset}, {split: cached dataset}) with the same flags."""
    plain = build_datasets(data_settings(make(photos, *extra, **dirs)), splits)
    cached = build_datasets(data_settings(make(photos, "--image_cache", str(cache_dir), *extra,
                                                    **dirs)), splits)
    return plain, cached


@pytest.fixture
def messages():
    """Lines the "hashnet" logger prints while the test runs."""
    logger = logging.getLogger("hashnet")
    lines, level = [], logger.level

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def assert_same_sample(got, want):
    """Exact: the cache stores the decoded pixels, and both paths run the
    same transform code on them in this process."""
    assert (got is None) == (want is None)
    if want is None:
        return
    x, y, ind = got
    assert x.dtype == want[0].dtype == np.float32 and x.shape == want[0].shape
    assert np.array_equal(x, want[0]) and np.array_equal(y, want[1]) and ind == want[2]


def assert_same_datasets(plain, cached):
    assert isinstance(cached, CachedImageList) and len(cached) == len(plain)
    for i in range(len(plain)):
        assert_same_sample(cached[i], plain[i])


def flips(ds):
    """Whether each sample of the current epoch is flipped (the draw after
    the crop origin in the sample's stream)."""
    out = []
    for i in range(len(ds)):
        rng = ds.augmentation_rng(i)
        h, w = ds.pixels[i].shape[:2]
        crop_origin(w, h, CROP, rng)
        out.append(rng.random() < 0.5)
    return out


# ---------------------------------------------------------------- same tensors


def test_train_tensors_bit_identical_over_seeds_and_epochs(photos, tmp_path):
    flipped, per_epoch = [], []
    for seed in (0, 7):
        plain, cached = both(photos, tmp_path / "cache", "--seed", str(seed), splits=("train",))
        plain, cached = plain["train"], cached["train"]
        for epoch in (1, 2, 3):
            plain.set_epoch(epoch)
            cached.set_epoch(epoch)
            assert_same_datasets(plain, cached)
            flipped += flips(cached)
            per_epoch.append(cached[1][0])
    assert any(flipped) and not all(flipped)  # both branches were compared
    assert not all(np.array_equal(per_epoch[0], x) for x in per_epoch[1:])  # crops do move
    stored = {cached.pixels[i].shape[:2] for i in range(len(cached))}
    assert min(min(s) for s in stored) == RESIZE and len(stored) > 4  # varied widths


def test_eval_tensors_bit_identical(photos, tmp_path):
    plain, cached = both(photos, tmp_path / "cache", splits=("test", "database"))
    for split in ("test", "database"):
        assert_same_datasets(plain[split], cached[split])
        assert cached[split][0][0].shape == (3, CROP, CROP)


def test_cache_is_reused_and_its_files_hold_uint8(photos, tmp_path, messages):
    both(photos, tmp_path / "cache", splits=("train", "test"))
    files = sorted(os.listdir(tmp_path / "cache"))
    assert [re.sub(r"-[0-9a-f]{12}\.u8$", "", f) for f in files] == ["test-crop", "train-resized"]
    built = {f: os.stat(tmp_path / "cache" / f).st_mtime_ns for f in files}
    assert sum("image cache: decoding" in m for m in messages) == 2
    messages.clear()
    plain, cached = both(photos, tmp_path / "cache", splits=("test",))
    assert [m for m in messages if "decoding" in m or "rebuilding" in m] == []
    assert any("decoded images from" in m for m in messages)
    assert {f: os.stat(tmp_path / "cache" / f).st_mtime_ns for f in files} == built
    assert os.path.getsize(tmp_path / "cache" / files[0]) > len(plain["test"]) * CROP * CROP * 3


# ---------------------------------------------------------------- stale, corrupt, disk


def copy_lists(photos, root, drop=None):
    shutil.copytree(photos.list_dir, root)
    if drop is not None:
        path = os.path.join(root, "train.txt")
        with open(path) as f:
            lines = f.readlines()
        with open(path, "w") as f:
            f.writelines(lines[:drop] + lines[drop + 1:])
    return str(root)


def test_stale_cache_list_changed_is_rebuilt(photos, tmp_path, messages):
    lists = copy_lists(photos, tmp_path / "lists")
    both(photos, tmp_path / "cache", splits=("train",), list_dir=lists)
    shutil.rmtree(lists)
    copy_lists(photos, lists, drop=2)
    messages.clear()
    plain, cached = both(photos, tmp_path / "cache", splits=("train",), list_dir=lists)
    assert any(re.search(r"train-resized-\w+\.u8 is stale \(the list changed\); rebuilding", m)
               for m in messages), messages
    assert len(os.listdir(tmp_path / "cache")) == 1  # replaced, not added
    assert_same_datasets(plain["train"], cached["train"])


@pytest.mark.parametrize("flag,value,split,change", [
    ("--resize_size", "80", "train", "--resize_size changed"),
    ("--crop_size", "56", "test", "--crop_size changed"),
    ("--resize_size", "80", "test", "--resize_size changed"),
])
def test_stale_cache_sizes_changed_is_rebuilt(photos, tmp_path, messages, flag, value, split,
                                              change):
    both(photos, tmp_path / "cache", splits=(split,))
    messages.clear()
    plain, cached = both(photos, tmp_path / "cache", flag, value, splits=(split,))
    assert any(f"is stale ({change}); rebuilding" in m for m in messages), messages
    assert_same_datasets(plain[split], cached[split])
    if split == "test":
        assert cached[split][0][0].shape[1] == cached[split].crop_size


@pytest.mark.parametrize("damage", ["truncate", "garbage", "index"])
def test_corrupt_cache_is_rebuilt(photos, tmp_path, messages, damage):
    both(photos, tmp_path / "cache", splits=("test",))
    (name,) = os.listdir(tmp_path / "cache")
    path = tmp_path / "cache" / name
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a cache")
    else:  # the index, between the pixels and the 16-byte trailer
        data[-100:-16] = b"\xff" * 84
    path.write_bytes(bytes(data))
    messages.clear()
    plain, cached = both(photos, tmp_path / "cache", splits=("test",))
    assert any(f"image cache {path} is unreadable or corrupt" in m and "rebuilding it" in m
               for m in messages), messages
    assert_same_datasets(plain["test"], cached["test"])


def replace_in_place(path, keep_inode):
    """Other pixels under the same path and size: rewritten in the same file
    (a new mtime), or a new file renamed over it with the old mtime kept (a
    new inode): what an editor or a copy tool does."""
    old = os.stat(path)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    if keep_inode:
        with open(path, "r+b") as f:
            f.write(data)
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))
    else:
        with open(path + ".new", "wb") as f:
            f.write(data)
        os.utime(path + ".new", ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(path + ".new", path)


@pytest.mark.parametrize("keep_inode", [True, False], ids=["rewritten", "renamed over"])
def test_an_image_replaced_in_place_is_noticed(photos, tmp_path, messages, keep_inode):
    images = tmp_path / "images"
    shutil.copytree(photos.image_dir, images)
    both(photos, tmp_path / "cache", splits=("test",), image_dir=str(images))
    replace_in_place(str(images / photos.names[3]), keep_inode)
    messages.clear()
    plain, cached = both(photos, tmp_path / "cache", splits=("test",), image_dir=str(images))
    assert any("is stale (1 of " in m and f"e.g. {photos.names[3]}" in m for m in messages), \
        messages
    assert_same_datasets(plain["test"], cached["test"])


def test_fuzzed_cache_file_is_read_or_rebuilt(photos, tmp_path_factory):
    """Any bytes in the cache's place: the cache is read, or rebuilt with a
    line saying why, never another exception or an allocation past the file."""
    from hypothesis import given
    from support.fuzz import FUZZ, mutated, one_line_or_result
    cache_dir = tmp_path_factory.mktemp("fuzzed_image_cache")
    settings = data_settings(make(photos, "--image_cache", str(cache_dir)))
    build_datasets(settings, ("test",))
    (name,) = os.listdir(cache_dir)
    path = cache_dir / name
    seed = path.read_bytes()
    step = image_cache.CentreCrop(RESIZE, CROP)
    fingerprint = image_cache.make_fingerprint(os.path.join(photos.list_dir, "test.txt"),
                                               photos.image_dir, step, len(range(0, 16, 3)))

    @FUZZ
    @given(data=mutated([seed, seed[-300:]]))
    def fuzz(data):
        path.write_bytes(data)
        cache = image_cache.DecodedImageCache(str(path), fingerprint, log=lambda line: None)
        try:
            read = one_line_or_result(cache.read)
        except image_cache.CacheError:   # unreadable or stale: get() rebuilds it
            return
        assert read is not None and len(read) == fingerprint["count"]
    fuzz()


def test_not_enough_disk_is_refused(photos, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=50_000))
    cache = tmp_path / "cache"
    message = user_error(build_datasets, data_settings(make(photos, "--image_cache", str(cache))),
                         ("database",))
    need = len(photos.names) * CROP * CROP * 3
    assert message.startswith(f"--image_cache {cache}: database-crop-") and "\n" not in message
    units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    found = re.search(r"needs about ([\d.]+) (\w+) but only ([\d.]+) (\w+) are free", message)
    assert found, message
    need_said, free_said = (float(found[i]) * units[found[i + 1]] for i in (1, 3))
    assert need_said >= need * 0.95 and abs(free_said - 50_000) <= 0.05 * 2**10, message
    assert os.listdir(cache) == []  # nothing decoded, nothing half-written


def test_disk_full_while_writing_is_one_error_and_leaves_nothing(photos, tmp_path, monkeypatch):
    def full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(image_cache.DecodedImageCache, "index_bytes", full)
    cache = tmp_path / "cache"
    message = user_error(build_datasets, data_settings(make(photos, "--image_cache", str(cache))),
                         ("test",))
    assert message.startswith("--image_cache: writing ") and "No space left on device" in message
    assert os.listdir(cache) == []


# ---------------------------------------------------------------- bad images


@pytest.fixture
def one_bad_image(photos, tmp_path):
    """A copy of the photos where image 3 is not a JPEG."""
    image_dir = tmp_path / "images"
    shutil.copytree(photos.image_dir, image_dir)
    bad = image_dir / photos.names[3]
    bad.write_bytes(b"this is not a JPEG")
    return str(image_dir), str(bad)


def test_bad_image_stops_the_build_naming_it(photos, tmp_path, one_bad_image):
    image_dir, bad = one_bad_image
    message = user_error(build_datasets, data_settings(make(photos, "--image_cache",
                                                            str(tmp_path / "cache"),
                                                            image_dir=image_dir)), ("train",))
    assert message.startswith(f"image {bad} is unreadable or corrupt")
    assert os.listdir(tmp_path / "cache") == []
    # as without the cache, where the loader stops at that image
    plain = build_datasets(data_settings(make(photos, image_dir=image_dir)), ("train",))["train"]
    assert user_error(plain.__getitem__, 3) == message


def test_bad_image_skipped_as_without_cache(photos, tmp_path, one_bad_image, messages):
    image_dir, bad = one_bad_image
    plain, cached = both(photos, tmp_path / "cache", "--skip-bad-images", splits=("train", "test"),
                         image_dir=image_dir)
    assert any(f"image {bad} is unreadable" in m and "it will be skipped" in m for m in messages)
    for split in ("train", "test"):
        assert_same_datasets(plain[split], cached[split])
    messages.clear()
    assert plain["train"][3] is None
    today = list(messages)
    messages.clear()
    assert cached["train"][3] is None
    assert messages == today and today[0].startswith(f"skipped: image {bad} is unreadable")


def test_image_cache_removes_a_killed_builds_temp_file_before_the_space_check(tmp_path,
                                                                             monkeypatch):
    from utils.data import image_cache
    from utils.data.image_cache import CentreCrop, DecodedImageCache
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (80, 80), (i, 2 * i, 3 * i)).save(paths[-1])
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    path = str(cache_dir / "database-crop.u8")
    leftover = cache_dir / leftover_name(".database-crop.u8.", ".tmp")
    leftover.write_bytes(os.urandom(200_000))
    seen_at_check = []
    real_check = image_cache.DecodedImageCache.check_disk

    def check_disk(self, need):
        seen_at_check.append(leftover.exists())
        return real_check(self, need)
    monkeypatch.setattr(image_cache.DecodedImageCache, "check_disk", check_disk)
    messages = []
    cache = DecodedImageCache(path, {"count": len(paths)}, messages.append)
    cache.get(paths, CentreCrop(72, 64))
    assert seen_at_check == [False] and not leftover.exists()
    assert any("removed" in m and "killed build" in m for m in messages), messages
    assert sorted(os.listdir(cache_dir)) == ["database-crop.u8"]


def test_image_cache_estimate_ignores_a_refused_strip(tmp_path, small_limit):
    from utils.data.image_cache import ResizedShortSide
    assert ResizedShortSide(72).nbytes(strip(tmp_path, 100)) == 0


# ---------------------------------------------------------------- workers, processes


def test_loader_with_two_workers_gives_the_uncached_batches(photos, tmp_path):
    plain, cached = both(photos, tmp_path / "cache", splits=("train",))
    loaders = [build_loader(plain["train"], 5, shuffle=True, num_workers=0, seed=3),
               build_loader(cached["train"], 5, shuffle=True, num_workers=2, seed=3)]
    for epoch in (1, 2):
        for loader in loaders:
            set_epoch(loader, epoch)
        batches = [list(loader) for loader in loaders]
        assert len(batches[0]) == len(batches[1]) == 4
        for want, got in zip(*batches):
            for a, b in zip(want, got):   # exact: the same pixels through the same code
                assert np.array_equal(a.numpy(), b.numpy())


def test_two_processes_build_once_and_train_identically(demo, tmp_path):
    """main_multi_gpu.py's launcher, 2 gloo processes, each training twice
    (with the cache, then without): same weights; rank 0 decoded each list
    once while rank 1 waited."""
    lists = tmp_path / "lists"
    os.makedirs(lists)
    for split, count in (("train", 16), ("test", 6), ("database", 16)):
        with open(os.path.join(demo.list_dir, f"{split}.txt")) as f, open(lists / f"{split}.txt", "w") as out:
            out.writelines(f.readlines()[:count])
    argv = demo_argv(demo, tmp_path, "--list-dir", str(lists), "-bs", "4", "-e", "1",
                     "--num_threads", "1", "--nprocs", "2", "--image_cache", str(tmp_path / "cache"),
                     *TINY)   # the cache's invariant, on the tiny test net
    proc = run_test_script(os.path.abspath(__file__), str(tmp_path), *argv, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    weights = [paddle.load(str(tmp_path / run / "output" / "last_16.pdparams"))
               for run in ("cached", "plain")]
    # exact: the same inputs, then the same kernels in the same order in one process
    for key, value in weights[1].items():
        assert np.array_equal(weights[0][key].numpy(), value.numpy()), key
    assert len(os.listdir(tmp_path / "cache")) == 3
    decoded = log_lines(tmp_path / "cached" / "logs", r"image cache: decoding ([\d,]+) images")
    assert sorted(int(m[1]) for m in decoded) == [6, 16, 16]
    (run,) = os.listdir(tmp_path / "cached" / "logs")
    with open(tmp_path / "cached" / "logs" / run / "log_1.txt") as f:
        rank1 = f.read()
    assert "decoding" not in rank1 and rank1.count("image cache: waiting for local rank 0") == 3


def train_with_and_without_cache(out, args):
    """Worker side of the two-process test: the same run twice."""
    for run, cache in (("cached", args.image_cache), ("plain", None)):
        again = copy.copy(args)
        again.image_cache = cache
        again.output_dir = os.path.join(out, run, "output")
        again.log_path = os.path.join(out, run, "logs")
        engine.run(again)


if __name__ == "__main__":  # python tests/data/test_image_cache.py OUT_DIR FLAGS... (tests/ on PYTHONPATH)
    out, argv = sys.argv[1], sys.argv[2:]
    dist.launch(functools.partial(train_with_and_without_cache, out),
                parse_args(argv, batch_size=64))
