"""The datasets and loaders of a run (spec §4): image lists, CIFAR-10 splits,
the sharded batch sampler, the loader; built from ``DataSettings``.

A list file has one image per line: ``<relative/path.jpg> <c_1> … <c_C>``
with c_i in {0, 1}; the labels are the last C fields, so a path may hold
spaces (utils/data/list_format.py). Each sample is (image [3, S, S] float32,
multi-hot label [C] float32, dataset index int64); the index addresses the
loss's memory bank.

Augmentation draws from an RNG seeded by (seed, epoch, index), so a sample's
crop and flip do not depend on worker count, process count or on whether the
run was resumed.
"""
import dataclasses
import logging
import math
import os
import tarfile

import numpy as np
import paddle
from PIL import Image

from utils.base.errors import UserError, one_line
from utils.base.io import check_input_dir
from utils.base.safe_pickle import RefusedPickle, restricted_load
from utils.data.caffe_pipeline import build_pipeline
from utils.data.hashing_dataset import HashingDataset
from utils.data.image_cache import cached_image_list
from utils.data.list_format import parse_list, unlabelled_rows
from utils.data.splits import PROTOCOLS, SPLITS, draw_split
from utils.data.transforms import load_rgb


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """What the datasets of a run are built from (the training config fills it
    from the flags of the same names)."""
    dataset: str                  # a preset name (utils/data/presets.py); cifar10* read CIFAR-10
    data_path: str                # the root of the lists' image paths, or the CIFAR-10 archive
    list_dir: str                 # the folder of train/test/database.txt
    num_class: int
    resize_size: int
    crop_size: int
    seed: int = 0                 # augmentation draws: (seed, epoch, index)
    split_seed: int = 0           # the CIFAR-10 split's own seed
    pipeline: str = "reference"   # "reference" or "caffe" (utils/data/caffe_pipeline.py)
    skip_bad_images: bool = False
    image_cache: str = None       # the decoded-image cache's folder, or None


# ---------------------------------------------------------------- list files
# parse_list and the line rule (a path may hold spaces): utils/data/list_format.py


def refuse_all_unlabelled(path, labels):
    """A training or evaluation list whose every row is all-zero has no
    similar pair: the loss and mAP would mean nothing."""
    if len(unlabelled_rows(labels)) == len(labels):
        raise UserError(f"{path}: every line's labels are all 0: no two images are similar, so "
                        "this split cannot be trained or measured (check the label columns and "
                        "--num_class)")


class ImageList(HashingDataset):
    """Images named by a list file, relative to ``root``."""

    def __init__(self, list_file, root, num_class, **kwargs):
        self.list_file, self.root = list_file, root
        self.paths, labels = parse_list(list_file, num_class)
        super().__init__(labels, **kwargs)

    def check_files(self):
        """Fail early, naming list file and line, if an image is missing
        (with --skip-bad-images: warn, and the loader skips it)."""
        if not os.path.isdir(self.root):
            raise UserError(f"data path {self.root} not found (set --data-path)")
        for lineno, rel in enumerate(self.paths, 1):
            if not os.path.exists(os.path.join(self.root, rel)):  # a directory: load_rgb says so
                message = (f"{self.list_file}:{lineno}: image {os.path.join(self.root, rel)} "
                           "not found")
                if not self.skip_bad_images:
                    raise UserError(message + " (check --data-path, or pass --skip-bad-images)")
                logging.getLogger("hashnet").warning(message + ": it will be skipped")

    def image(self, index):
        return load_rgb(os.path.join(self.root, self.paths[index]), self.resize_size)


class ArrayImages(HashingDataset):
    """Images held in memory as uint8 [n, H, W, 3] (CIFAR-10)."""

    def __init__(self, images, labels, **kwargs):
        self.images = images
        super().__init__(labels, **kwargs)

    def image(self, index):
        return Image.fromarray(self.images[index])


# ---------------------------------------------------------------- CIFAR-10
CIFAR_ROW = 3 * 32 * 32   # one image: 1024 R, 1024 G, 1024 B values
CIFAR_AGAIN = "download cifar-10-python.tar.gz again from its site"


def cifar_batch(file, shown):
    """(image rows uint8 [n, 3072], class ids int64 [n]) of one CIFAR-10
    python batch (a pickle: read without running code from it)."""
    try:
        batch = restricted_load(file, encoding="bytes")
    except RefusedPickle as refused:
        raise UserError(f"{shown} refused: {refused}: {CIFAR_AGAIN}") from None
    except Exception as err:  # truncated or not a pickle
        raise UserError(f"{shown} is unreadable ({one_line(err)}): {CIFAR_AGAIN}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == CIFAR_ROW):
        raise UserError(f"{shown} holds no uint8 [n, {CIFAR_ROW}] image rows: not a CIFAR-10 "
                        f"python batch; {CIFAR_AGAIN}")
    if not (isinstance(labels, list) and len(labels) == len(data)
            and all(type(v) is int and 0 <= v < 10 for v in labels)):
        raise UserError(f"{shown} holds no class id 0..9 per image row: not a CIFAR-10 python "
                        f"batch; {CIFAR_AGAIN}")
    return data, np.asarray(labels, np.int64)


def read_cifar10(path):
    """All 60,000 CIFAR-10 images (uint8 [n, 32, 32, 3]) and class ids, from a
    local ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py``."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = []
    if os.path.isdir(path):
        for name in names:
            file = os.path.join(path, name)
            if not os.path.isfile(file):
                raise UserError(f"{file} not found: --data-path must be cifar-10-batches-py "
                                "or cifar-10-python.tar.gz (CIFAR python version)")
            with open(file, "rb") as f:
                batches.append(cifar_batch(f, file))
    elif os.path.isfile(path) and tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers()}
            for name in names:
                if name not in members:
                    raise UserError(f"{path} has no {name}: not the CIFAR-10 python archive")
                batches.append(cifar_batch(tar.extractfile(members[name]), f"{path}:{name}"))
    else:
        raise UserError(f"CIFAR-10 not found at {path}: download cifar-10-python.tar.gz "
                        "yourself and pass it (or its extracted folder) as --data-path")
    images = np.concatenate([data for data, _ in batches]).reshape(-1, 3, 32, 32)
    classes = np.concatenate([labels for _, labels in batches])
    return images.transpose(0, 2, 3, 1).copy(), classes


def cifar10_split(classes, name, seed):
    """Indices of (train, test, database) per spec §4, drawn per class with a
    seeded permutation (the reference's split was unseeded): the ``name``
    protocol of utils/data/splits.py, as list files made with it get."""
    parts = draw_split(np.eye(10, dtype=np.int64)[classes], PROTOCOLS[name], seed)
    return parts["train"], parts["test"], parts["database"]


# ---------------------------------------------------------------- builders
def build_datasets(data, splits=SPLITS, augment=True):
    """{split: dataset} of ``data`` (DataSettings): its list files, or CIFAR-10.
    The training split is augmented (random crops, flips) unless ``augment``
    is False: then every split is read as the test split is (features)."""
    sizes = dict(resize_size=data.resize_size, crop_size=data.crop_size, seed=data.seed,
                 skip_bad_images=data.skip_bad_images, pipeline=build_pipeline(data.pipeline))
    if data.dataset.startswith("cifar10"):
        images, classes = read_cifar10(data.data_path)
        onehot = np.eye(10, dtype=np.float32)[classes]
        # its own seed: runs whose training seeds differ are evaluated on one split
        parts = dict(zip(SPLITS, cifar10_split(classes, data.dataset, data.split_seed)))
        return {s: ArrayImages(images[parts[s]], onehot[parts[s]], train=(s == "train" and augment),
                               **sizes)
                for s in splits}
    check_input_dir(data.list_dir, "--list-dir")
    out = {}
    for s in splits:
        ds = ImageList(os.path.join(data.list_dir, f"{s}.txt"), data.data_path, data.num_class,
                       train=(s == "train" and augment), **sizes)
        refuse_all_unlabelled(ds.list_file, ds.labels)
        ds.check_files()
        out[s] = ds
    if data.image_cache:
        if data.pipeline != "reference":
            raise UserError("--image_cache caches the reference transforms' pixels: drop it, "
                            "or pass --input_pipeline reference")
        out = {s: cached_image_list(ds, data.image_cache) for s, ds in out.items()}
    return out


class ShardedBatchSampler(paddle.io.Sampler):
    """Batches of one process's shard of a (seed, epoch)-shuffled order.

    The order is padded (repeating its head) to a multiple of ``world_size``
    and process r takes every world_size-th item from r, so step t of W
    processes with batch b covers exactly step t of one process with batch
    W·b. The last batch may be short (the reference kept it)."""

    def __init__(self, size, batch_size, shuffle, seed=0, rank=0, world_size=1):
        self.size, self.batch_size, self.shuffle = size, batch_size, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch, skip=0):
        """Order for `epoch`; the first `skip` batches are left out (resuming
        an interrupted epoch), while len() stays the full count."""
        self.epoch, self.skip = epoch, skip

    def padded_order(self):
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
                 if self.shuffle else np.arange(self.size))
        padded = -(-self.size // self.world_size) * self.world_size
        return np.resize(order, padded)  # repeats the head cyclically

    def shard(self):
        return self.padded_order()[self.rank::self.world_size]

    def global_batches(self):
        """Each step's dataset indices in all processes together (from
        ``skip`` on): what the gathered batch holds unless images were skipped.
        Every process knows them without asking the others."""
        order, step = self.padded_order(), self.batch_size * self.world_size
        for start in range(self.skip * step, len(order), step):
            yield order[start:start + step]

    def __iter__(self):
        shard = self.shard().tolist()
        for start in range(self.skip * self.batch_size, len(shard), self.batch_size):
            yield shard[start:start + self.batch_size]

    def __len__(self):
        per_process = math.ceil(self.size / self.world_size)
        return math.ceil(per_process / self.batch_size)


def collate_skipping(samples):
    """Default collation minus the samples a skipped (bad) image left as None."""
    samples = [s for s in samples if s is not None]
    if not samples:
        raise UserError("every image of a batch was unreadable (see the skipped: lines)")
    return paddle.io.dataloader.collate.default_collate_fn(samples)


class BatchLoader:
    """Batches of ``dataset`` in ``batch_sampler`` order, as paddle tensors.

    With no workers, samples are read in the calling thread: Paddle's own
    DataLoader reads in a helper thread even then, and (Paddle 3.3) hangs
    when a sample raises, so a bad image's one-line error would never come.
    With workers, Paddle's DataLoader does the work and a worker's failure
    becomes a one-line error."""

    def __init__(self, dataset, batch_sampler, num_workers=0):
        self.dataset, self.batch_sampler, self.num_workers = dataset, batch_sampler, num_workers

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        if self.num_workers == 0:
            for indices in self.batch_sampler:
                batch = collate_skipping([self.dataset[i] for i in indices])
                yield [paddle.to_tensor(field) for field in batch]
            return
        loader = paddle.io.DataLoader(self.dataset, batch_sampler=self.batch_sampler,
                                      num_workers=self.num_workers,
                                      collate_fn=collate_skipping, return_list=True)
        try:
            yield from loader
        except SystemError as err:
            raise UserError(f"a data loader worker failed ({err}); its traceback is above, "
                            "or rerun with --num_workers 0 for a one-line message")


def build_loader(dataset, batch_size, shuffle, num_workers=0, seed=0, rank=0, world_size=1):
    sampler = ShardedBatchSampler(len(dataset), batch_size, shuffle, seed, rank, world_size)
    return BatchLoader(dataset, sampler, num_workers)


def set_epoch(loader, epoch, skip=0):
    """Reshuffle and re-seed augmentation for `epoch` (call before iterating);
    `skip` batches already trained on are left out."""
    loader.batch_sampler.set_epoch(epoch, skip)
    loader.dataset.set_epoch(epoch)
