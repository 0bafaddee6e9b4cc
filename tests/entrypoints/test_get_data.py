"""scripts/get_data.py against the local fixture server (the ``mirror``
fixture of tests/conftest.py): COCO images and lists, NUS-WIDE and
ImageNet lists on your copy of their images, CIFAR-10 through paddle.vision's download, the
authors' list prefix cut; the download variables and the destinations are
checked before anything is downloaded."""
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from download_fixtures import put
from support.cli import run_python
from support.errors import assert_cli_error, user_error
from support.paths import GUARD_DIR, REPO
from utils.base import download


def test_authors_entries_cut_the_authors_prefix(tmp_path):
    from scripts.get_data import authors_entries
    src = tmp_path / "raw.txt"
    src.write_text("/home/x/coco/train2014/a.jpg 0 1\n/home/x/coco/val2014/b.jpg 1 0\n")
    assert authors_entries(str(src), "/home/x/coco/", 2) == (["train2014/a.jpg", "val2014/b.jpg"],
                                                             [[0, 1], [1, 0]])
    src.write_text("/home/x/coco/a.jpg 0 1\n/elsewhere/b.jpg 1 0\n")
    assert f"{src}:2: path /elsewhere/b.jpg" in user_error(authors_entries, str(src),
                                                          "/home/x/coco/", 2)
    assert f"{src}:1: 2 labels, expected 3" in user_error(authors_entries, str(src),
                                                          "/home/x/coco/", 3)


def test_get_data_coco_from_the_fixture_server(mirror, tmp_path):
    from utils.data.list_format import parse_list
    from scripts.get_data import main
    root, lists = tmp_path / "coco", tmp_path / "lists"
    main(["coco", "--root", str(root), "--list-dir", str(lists)])
    assert sorted(os.listdir(root)) == ["hashnet_lists", "train2014", "val2014"]  # zips removed
    for split in ("train", "test", "database"):
        paths, labels = parse_list(str(lists / f"{split}.txt"), 80)
        assert all(os.path.isfile(root / p) for p in paths) and labels.shape[1] == 80
    requests = len(mirror.seen)
    main(["coco", "--root", str(root), "--list-dir", str(lists)])  # all verified and unpacked: no request
    assert len(mirror.seen) == requests


def test_get_data_nuswide_finds_every_listed_image_in_your_copy(mirror, monkeypatch, tmp_path,
                                                                capsys):
    """The images are your copy: each list line's image must be under
    --root; missing ones stop the step in one line (how many, the first,
    where to get them) before any list is written."""
    from scripts.get_data import DATASETS, main
    nus = DATASETS["nuswide_81_m"]
    checksums = {}
    label = " ".join(["1"] + ["0"] * 80)
    for split in ("train", "test", "database"):
        put(mirror.root, nus.list_remote(split).url,
            f"{nus.prefix}images/{split}_1.jpg {label}\n".encode(), checksums, "git-blob-sha1")
    sums = tmp_path / "sums.json"
    sums.write_text(json.dumps(checksums))
    monkeypatch.setenv(download.CHECKSUMS_ENV, str(sums))
    root, lists = tmp_path / "nus", tmp_path / "lists"
    (root / "images").mkdir(parents=True)
    (root / "images" / "train_1.jpg").write_bytes(b"jpeg")
    argv = ["nuswide_81_m", "--root", str(root), "--list-dir", str(lists)]
    message = user_error(main, argv)
    assert message.startswith(f"2 of the 3 images the lists name are not under {root} "
                              "(first: test.txt: images/test_1.jpg)")
    assert "drive.google.com" in message and not (lists / "test.txt").exists()
    for split in ("test", "database"):
        (root / "images" / f"{split}_1.jpg").write_bytes(b"jpeg")
    main(argv)
    assert (lists / "test.txt").read_text() == f"images/test_1.jpg {label}\n"
    assert "images: all 3 list entries found under" in capsys.readouterr().out
    assert sorted(os.listdir(root)) == ["images"]   # the authors' lists went to --list-dir


def test_ilsvrc_copies_in_either_layout(tmp_path):
    """An authors' ImageNet path found in ILSVRC-2012's train/<wnid>/, in
    val/ flat or sorted into class folders, or in the authors' flat folders."""
    from scripts.get_data import in_ilsvrc
    for path in ("train/n01/n01_5.JPEG", "val/ILSVRC2012_val_00000001.JPEG",
                 "val/n02/ILSVRC2012_val_00000002.JPEG", "val_image/ILSVRC2012_val_00000003.JPEG"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"jpeg")
    assert in_ilsvrc("image/n01_5.JPEG", str(tmp_path)) == "train/n01/n01_5.JPEG"
    assert in_ilsvrc("val_image/ILSVRC2012_val_00000001.JPEG", str(tmp_path)) == \
        "val/ILSVRC2012_val_00000001.JPEG"
    assert in_ilsvrc("val_image/ILSVRC2012_val_00000002.JPEG", str(tmp_path)) == \
        "val/n02/ILSVRC2012_val_00000002.JPEG"
    assert in_ilsvrc("val_image/ILSVRC2012_val_00000003.JPEG", str(tmp_path)) == \
        "val_image/ILSVRC2012_val_00000003.JPEG"
    assert in_ilsvrc("image/n01_6.JPEG", str(tmp_path)) is None


def test_imagenet_without_a_copy_says_where_to_point_root(tmp_path):
    from scripts.get_data import main
    message = user_error(main, ["imagenet", "--root", str(tmp_path / "none"),
                                "--list-dir", str(tmp_path / "lists")])
    assert message.startswith(f"--root {tmp_path / 'none'} is not a folder: pass your "
                              "ILSVRC-2012 copy as --root")


def cifar_archive():
    """A cifar-10-python.tar.gz of 6 batches of 2 images each."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
            batch = pickle.dumps({b"data": np.full((2, 3072), i, np.uint8), b"labels": [i, 9 - i]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(batch)
            tar.addfile(info, io.BytesIO(batch))
    return buffer.getvalue()


def test_cifar10_through_paddle_vision_download(mirror, monkeypatch, tmp_path, capsys):
    from paddle.dataset import common
    from paddle.vision.datasets import cifar
    from utils.data.loaders import read_cifar10
    from scripts.get_data import main
    checksums = {}
    put(mirror.root, cifar.CIFAR10_URL, cifar_archive(), checksums)
    sums = tmp_path / "sums.json"
    sums.write_text(json.dumps(checksums))
    monkeypatch.setenv(download.CHECKSUMS_ENV, str(sums))
    monkeypatch.setattr(common, "DATA_HOME", str(tmp_path / "paddle"))
    main(["cifar10"])
    path = str(tmp_path / "paddle" / "cifar" / "cifar-10-python.tar.gz")
    assert f"--data-path {path}" in capsys.readouterr().out
    images, classes = read_cifar10(path)
    assert images.shape == (12, 32, 32, 3) and list(classes[:2]) == [0, 9]


# ---------------------------------------------------------------- checked before downloading


@pytest.mark.parametrize("flag", ["--root", "--list-dir"])
def test_get_data_root_or_list_dir_that_is_a_file(tmp_path, a_file, flag):
    other = {"--root": str(tmp_path / "root"), "--list-dir": str(tmp_path / "lists")}
    other[flag] = a_file
    result = run_python("-m", "scripts.get_data", "coco", *[x for kv in other.items() for x in kv])
    assert_cli_error(result, f"{flag} {a_file} is a file, not a folder")


def test_get_data_checks_the_variables_before_downloading(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR]),
               HASHNET_CHECKSUMS=str(tmp_path / "missing.json"))
    result = subprocess.run([sys.executable, "-m", "scripts.get_data", "coco", "--root",
                             str(tmp_path / "root")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert_cli_error(result, "HASHNET_CHECKSUMS=", "cannot read it")
    assert not os.path.exists(tmp_path / "root") or not os.listdir(tmp_path / "root")
