"""The data step: fetch a dataset and the HashNet authors' split lists, verify
them, unpack atomically, and write the lists with paths relative to --root.

    python -m scripts.get_data coco --root datasets/coco --with-backbone   # lists, COCO 2014 images (19 GiB), weights
    python -m scripts.get_data nuswide_81_m --root datasets/nuswide_81_m  # lists; your images
    python -m scripts.get_data imagenet --root /data/ILSVRC2012   # lists; your ILSVRC-2012 copy
    python -m scripts.get_data cifar10          # paddle.vision's Cifar10 download

Afterwards train with ``--data-path ROOT --list-dir LIST_DIR`` (the defaults,
datasets/<dataset> and data/<dataset>, match those of main_single_gpu.py for
COCO). ImageNet-100 and NUS-WIDE-81 images are not fetched: they are your
copy (ILSVRC-2012's train/ and val/ folders; the authors' NUS-WIDE images),
each list line's image is found under --root and the lists point at it; a
line whose image is missing stops the step, naming how many and the first.
Nothing is fetched twice: verified files and unpacked folders are kept,
an interrupted download resumes. Offline, one error line names every URL and
the path to put that file at by hand. Where the recorded sizes and checksums
come from:

* lists: the authors' repository github.com/thuml/HashNet at commit
  AUTHORS_COMMIT, ``pytorch/data/<dataset>/{train,test,database}.txt``; the
  checksum is git's blob id from that commit's tree (``git ls-tree -l``), which
  also gives the sizes of train/test (database.txt sizes are not recorded);
* COCO 2014 zips: images.cocodataset.org; md5s as published alongside these
  URLs in dataset loaders (e.g. salesforce/LAVIS's COCO builders), sizes the
  Content-Length the server reports (13,510,573,713 and 6,645,013,297 bytes);
* CIFAR-10 and the AlexNet weights: the URL and md5 paddle.vision records
  (``paddle.vision.datasets.cifar``, ``paddle.vision.models.alexnet``).
"""
import argparse
import dataclasses
import functools
import os
import sys
import typing

from utils.data.presets import DATASET_PRESETS
from utils.base.download import (Remote, check_mirror_settings, fetch, run_downloads,
                                 through_paddle, unpack_zip)
from utils.base.errors import UserError, run_cli
from utils.base.io import ensure_writable_dir
from utils.data.list_format import numbered_lines, split_line, write_lists
from utils.data.splits import SPLITS

AUTHORS_COMMIT = "85387b814fcf95daff887bd325cbaa0e8def7323"
AUTHORS_DATA = f"https://raw.githubusercontent.com/thuml/HashNet/{AUTHORS_COMMIT}/pytorch/data"
COCO_ZIPS = "http://images.cocodataset.org/zips"


@dataclasses.dataclass(frozen=True)
class ListedDataset:
    """The authors' lists of one dataset and the archives of its images.

    ``prefix``: the authors' machine-specific start of every list path, cut
    so that the paths become relative to --root. ``lists``: split ->
    (git blob sha1, size or None). ``archives``: (Remote, top-level folder).
    ``by_hand``: how to get images that are not fetched (your copy);
    ``locate(path, root)``: where a list path (prefix cut) is in that copy,
    relative to ``root`` (None if nowhere)."""
    authors_folder: str
    prefix: str
    lists: dict
    archives: tuple = ()
    by_hand: str = ""
    locate: typing.Callable = None

    def list_remote(self, split):
        blob, size = self.lists[split]
        return Remote(f"{AUTHORS_DATA}/{self.authors_folder}/{split}.txt",
                      f"git-blob-sha1:{blob}", size)


AUTHORS_DRIVE = "https://drive.google.com/drive/folders/0B7IzDz-4yH_HOXdoaDU4dk40RFE"


def as_listed(path, root):
    """The image is where the list says, under ``root``."""
    return path if os.path.isfile(os.path.join(root, path)) else None


@functools.lru_cache(maxsize=4)
def files_under(folder):
    """{file name: its path relative to folder's parent} of every file below ``folder``."""
    found = {}
    for directory, _, files in os.walk(folder):
        for name in files:
            found.setdefault(name, os.path.relpath(os.path.join(directory, name),
                                                   os.path.dirname(folder)))
    return found


def in_ilsvrc(path, root):
    """An authors' ImageNet path in an ILSVRC-2012 copy: ``image/<wnid>_<n>.JPEG``
    is ``train/<wnid>/<wnid>_<n>.JPEG``; ``val_image/<name>`` is ``val/<name>``,
    or ``val/<wnid>/<name>`` in the class folders many copies sort val into;
    the authors' own flat folders work too."""
    folder, name = path.split("/", 1)
    first = f"train/{name.split('_')[0]}/{name}" if folder == "image" else f"val/{name}"
    for candidate in (first, path):
        if os.path.isfile(os.path.join(root, candidate)):
            return candidate
    if folder == "val_image" and os.path.isdir(os.path.join(root, "val")):
        return files_under(os.path.join(root, "val")).get(name)
    return None
DATASETS = {
    "coco": ListedDataset(
        "coco", "/home/caozhangjie/run-czj/dataset/coco/",
        {"train": ("523489ab654d08dc306f93cc4e18bec036135349", 2397064),
         "test": ("f3c1b618677d27ad00c03a889d3eba5100eb2d57", 1198572),
         "database": ("6cbdb1eca6031560ce3cfa841ae6653cc5055954", None)},
        archives=(
            (Remote(f"{COCO_ZIPS}/train2014.zip", "md5:0da8c0bd3d6becc4dcb32757491aca88",
                    13510573713), "train2014"),
            (Remote(f"{COCO_ZIPS}/val2014.zip", "md5:a3d79f5ed8d289b7a7554ce06a5782b3",
                    6645013297), "val2014"))),
    "nuswide_81_m": ListedDataset(
        "nuswide_81", "./data/nuswide_81/",
        {"train": ("698ff02443c6df5d4b6e3ad6a4bb84d54fa7a4f0", 2209340),
         "test": ("f2020b82316771824fbc10e2f1b782bcfeff60bf", 1104604),
         "database": ("ffdbe7b9459b247f9081546aa73e1cf314b01e83", None)},
        by_hand=f"get nus_wide.tar.gz from the authors' {AUTHORS_DRIVE} and extract it so that "
                "{root}/images/<name>.jpg exist", locate=as_listed),
    "imagenet": ListedDataset(
        "imagenet", "/home/caozhangjie/run-czj/dataset/imagenet/",
        {"train": ("cd8975c4bd8aece5303e230db26e28904b268c13", 3500785),
         "test": ("8a1b80d81c2f3ffb0d9982fe6180a34a9965548e", 1410000),
         "database": ("49e9fae9d86fb853ceec4593661b13469362c572", None)},
        by_hand="pass your ILSVRC-2012 copy as --root ({root}/train/<wnid>/<wnid>_<n>.JPEG, "
                "{root}/val/[<wnid>/]ILSVRC2012_val_<n>.JPEG), or extract the authors' "
                f"imagenet.tar.gz from {AUTHORS_DRIVE} so that {{root}}/image/ and "
                "{root}/val_image/ exist", locate=in_ilsvrc),
}


def authors_entries(src, prefix, num_class):
    """(paths, labels) of the authors' list ``src`` with ``prefix`` cut from every path."""
    paths, labels = [], []
    for number, line in numbered_lines(src):
        path, row = split_line(line, num_class, f"{src}:{number}")
        if not path.startswith(prefix):
            raise UserError(f"{src}:{number}: path {path} does not start with {prefix}: "
                            "not the authors' list (delete it and run again)")
        paths.append(path[len(prefix):])
        labels.append(row)
    return paths, labels


def locate_images(dataset, entries, root):
    """``entries`` ({split: (paths, labels)}) with each path replaced by
    where ``dataset.locate`` finds its image under ``root``; a UserError
    naming the missing images (how many, the first, how to get them)
    unless every one is found. Nothing is written before."""
    found, missing, total = {}, [], 0
    for split, (paths, labels) in entries.items():
        where = [dataset.locate(path, root) for path in paths]
        missing += [f"{split}.txt: {p}" for p, w in zip(paths, where) if w is None]
        total += len(paths)
        found[split] = (where, labels)
    if missing:
        raise UserError(f"{len(missing):,} of the {total:,} images the lists name are not under "
                        f"{root} (first: {missing[0]}): {dataset.by_hand.format(root=root)}, "
                        "then run this again")
    return found


def get_listed(name, root, list_dir, extra_jobs):
    """Lists (and images, where they can be fetched) of one ListedDataset."""
    dataset = DATASETS[name]
    # beside the rewritten lists when the images are your copy (--root may be read-only)
    raw_dir = (os.path.join(list_dir, "authors") if dataset.locate
               else os.path.join(root, "hashnet_lists"))
    raw = {split: os.path.join(raw_dir, f"{split}.txt") for split in SPLITS}
    jobs = [functools.partial(fetch, dataset.list_remote(split), raw[split]) for split in SPLITS]
    pending = [(remote, folder) for remote, folder in dataset.archives
               if not os.path.isdir(os.path.join(root, folder))]
    zips = {folder: os.path.join(root, os.path.basename(remote.url)) for remote, folder in pending}
    jobs += [functools.partial(fetch, remote, zips[folder]) for remote, folder in pending]
    run_downloads(jobs + extra_jobs)
    for _, folder in pending:
        print(f"unpacking {zips[folder]} -> {os.path.join(root, folder)}")
        unpack_zip(zips[folder], root, folder)
        os.remove(zips[folder])  # verified and unpacked: the folder is the data now
    num_class = DATASET_PRESETS[name][0]
    lists = {split: authors_entries(raw[split], dataset.prefix, num_class) for split in SPLITS}
    if dataset.locate:
        lists = locate_images(dataset, lists, root)
        print(f"images: all {sum(len(p) for p, _ in lists.values()):,} list entries found "
              f"under {root}")
    elif dataset.by_hand:
        print(f"images: {dataset.by_hand.format(root=root)}")
    write_lists(list_dir, lists)   # all three or none
    for split in SPLITS:
        print(f"{os.path.join(list_dir, split + '.txt')}: {len(lists[split][0])} images")
    print(f"{name} ready: --data-path {root} --list-dir {list_dir}")


def cifar10_job():
    """paddle.vision's Cifar10 download (its URL and md5, Paddle's dataset cache)."""
    from paddle.dataset import common
    from paddle.vision.datasets import cifar
    remote = Remote(cifar.CIFAR10_URL, f"md5:{cifar.CIFAR10_MD5}")
    cached = os.path.join(common.DATA_HOME, "cifar", os.path.basename(remote.url))

    def job():
        path = through_paddle(lambda url, md5: common.download(url, "cifar", md5), remote, cached)
        print(f"cifar10 ready: --data-path {path}")
    return job


def backbone_job():
    from models.imagenet_backbone import imagenet_backbone

    def job():
        print(f"ImageNet AlexNet backbone ready: {imagenet_backbone()} (--backbone imagenet)")
    return job


def main(argv):
    p = argparse.ArgumentParser(prog="python -m scripts.get_data", description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=sorted(DATASETS) + ["cifar10", "backbone"],
                   help="backbone: only the ImageNet AlexNet weights (--backbone imagenet)")
    p.add_argument("--root", default=None,
                   help="where images go; list paths are relative to it (default datasets/<dataset>)")
    p.add_argument("--list-dir", "--list_dir", dest="list_dir", default=None,
                   help="where the rewritten lists go (default data/<dataset>)")
    p.add_argument("--with-backbone", action="store_true",
                   help="also fetch and convert the ImageNet AlexNet weights (--backbone imagenet)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    check_mirror_settings()   # every destination and setting before any download
    extra = [backbone_job()] if args.with_backbone else []
    if args.dataset == "backbone":
        run_downloads([backbone_job()])
        return 0
    if args.dataset == "cifar10":
        run_downloads([cifar10_job()] + extra)
        return 0
    root = args.root or os.path.join("datasets", args.dataset)
    list_dir = args.list_dir or os.path.join("data", args.dataset)
    if DATASETS[args.dataset].archives:
        ensure_writable_dir(root, "--root")
    elif not os.path.isdir(root):
        raise UserError(f"--root {root} is not a folder: "
                        + DATASETS[args.dataset].by_hand.format(root=root))
    ensure_writable_dir(list_dir, "--list-dir")
    get_listed(args.dataset, root, list_dir, extra)
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
