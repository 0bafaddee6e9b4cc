"""Downloads against a local fixture server on 127.0.0.1 (tests/download_fixtures.py):
verified transfer, resume after a cut connection, checksum mismatch, 404, no
server, atomic unpacking, list rewriting, the ImageNet backbone, CIFAR-10,
reproduce.sh end to end and offline, and the guard that keeps every test on
the loopback interface."""
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest

from conftest import GUARD_DIR, REPO, assert_cli_error, user_error
from download_fixtures import make_fixtures, put, serve
from utils.base import download
from utils.base.download import DownloadFailed, Remote, fetch, file_checksum, run_downloads
import loopback_only  # tests/netguard/, put on sys.path by conftest


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The fixture server over a tree holding the tiny COCO and AlexNet fixtures."""
    root = tmp_path_factory.mktemp("mirror")
    checksums = make_fixtures(str(root))
    srv = serve(root)
    srv.checksums = checksums
    yield srv
    srv.shutdown()


@pytest.fixture
def mirror(server, monkeypatch):
    """Point every URL at the fixture server, with the fixtures' checksums."""
    monkeypatch.setenv(download.BASE_ENV, server.base)
    monkeypatch.setenv(download.CHECKSUMS_ENV, server.checksums)
    server.seen.clear()
    return server


def blob(server, name, data):
    """A file ``https://example.org/<name>`` on the server; its Remote."""
    url = f"https://example.org/{name}"
    checksums = {}
    put(server.root, url, data, checksums)
    return Remote(url, checksums[url]["checksum"], len(data))


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------- fetch
def test_fetch_verifies_then_reuses(mirror, tmp_path):
    remote = blob(mirror, "a.bin", os.urandom(5000))
    dest = str(tmp_path / "a.bin")
    fetch(remote, dest)
    assert file_checksum(dest, "md5") == remote.checksum
    assert mirror.seen == [("/example.org/a.bin", None)]
    fetch(remote, dest)  # verified copy there: no second request
    assert len(mirror.seen) == 1 and not os.path.exists(dest + ".part")


def test_resume_after_cut_connection(mirror, tmp_path):
    data = os.urandom(300_000)
    remote = blob(mirror, "cut.bin", data)
    mirror.cut["/example.org/cut.bin"] = 100_000
    dest = str(tmp_path / "cut.bin")
    fetch(remote, dest)
    assert open(dest, "rb").read() == data
    assert mirror.seen == [("/example.org/cut.bin", None),
                           ("/example.org/cut.bin", "bytes=100000-")]


def test_resume_part_left_by_an_earlier_run(mirror, tmp_path):
    data = os.urandom(50_000)
    remote = blob(mirror, "part.bin", data)
    dest = tmp_path / "part.bin"
    (tmp_path / "part.bin.part").write_bytes(data[:20_000])
    fetch(remote, str(dest))
    assert dest.read_bytes() == data and mirror.seen[-1][1] == "bytes=20000-"


def test_checksum_mismatch_deletes_the_download(mirror, tmp_path):
    remote = blob(mirror, "bad.bin", b"x" * 1000)
    wrong = Remote(remote.url, "md5:" + "0" * 32, remote.size)
    dest = str(tmp_path / "bad.bin")
    with pytest.raises(DownloadFailed, match="checksum md5:.*expected md5:0+: deleted it"):
        fetch(wrong, dest)
    assert os.listdir(tmp_path) == []


def test_truncated_file_in_place_is_detected_and_deleted(mirror, tmp_path):
    remote = blob(mirror, "t.bin", os.urandom(4000))
    dest = tmp_path / "t.bin"
    dest.write_bytes(b"short")
    with pytest.raises(DownloadFailed, match="5 bytes, expected 4000: deleted it"):
        fetch(remote, str(dest))
    assert not dest.exists()
    fetch(remote, str(dest))  # the next run downloads a good copy
    assert dest.stat().st_size == 4000


def test_404_is_one_line_naming_url_and_path(mirror, tmp_path):
    missing = Remote("https://example.org/nope.bin", "md5:" + "0" * 32, 10)
    dest = str(tmp_path / "nope.bin")
    message = user_error(run_downloads, [lambda: fetch(missing, dest)])
    assert f"{mirror.base}/example.org/nope.bin (HTTP 404" in message
    assert f"put it at {dest}" in message and "\n" not in message
    assert os.listdir(tmp_path) == []


def test_no_server_fails_fast_naming_every_file(monkeypatch, tmp_path):
    monkeypatch.setenv(download.BASE_ENV, f"http://127.0.0.1:{closed_port()}")
    remotes = [Remote(f"https://example.org/{n}", "md5:" + "0" * 32) for n in ("a", "b")]
    start = time.time()
    message = user_error(run_downloads, [lambda r=r: fetch(r, str(tmp_path / r.url[-1]))
                                         for r in remotes])
    assert time.time() - start < 5
    assert message.startswith("could not download 2 file(s)") and "refused" in message
    assert f"put it at {tmp_path / 'a'}" in message and f"put it at {tmp_path / 'b'}" in message
    assert os.listdir(tmp_path) == []


def test_mirror_maps_host_and_path(monkeypatch, tmp_path):
    overrides = tmp_path / "sums.json"
    overrides.write_text(json.dumps({"https://h.org/x/y.txt": {"checksum": "md5:ab", "size": 3}}))
    monkeypatch.setenv(download.BASE_ENV, "http://127.0.0.1:1/")
    monkeypatch.setenv(download.CHECKSUMS_ENV, str(overrides))
    assert download.mirrored(Remote("https://h.org/x/y.txt", "md5:cd", 9)) ==\
        Remote("http://127.0.0.1:1/h.org/x/y.txt", "md5:ab", 3)
    assert download.mirrored(Remote("https://h.org/z", "md5:cd")).checksum == "md5:cd"


def test_git_blob_checksum_is_gits(tmp_path):
    (tmp_path / "f").write_bytes(b"hello\n")  # `echo hello | git hash-object --stdin`
    assert file_checksum(str(tmp_path / "f"), "git-blob-sha1") ==\
        "git-blob-sha1:ce013625030ba8dba906f756967f9e9ca394464a"


# ------------------------------------------------------------- unpack, lists
def test_unpack_is_atomic(tmp_path):
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("train2014/a.jpg", b"a")
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("other/a.jpg", b"a")
    root = tmp_path / "root"
    root.mkdir()
    (root / ".train2014.unpack-stale").mkdir()  # left by a killed run
    assert "no top-level folder train2014/" in user_error(download.unpack_zip, str(bad),
                                                          str(root), "train2014")
    assert os.listdir(root) == []
    download.unpack_zip(str(good), str(root), "train2014")
    assert os.listdir(root) == ["train2014"] and (root / "train2014" / "a.jpg").read_bytes() == b"a"


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EFBIG"])
def test_unpack_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, errno_name):
    """A full disk (or a file-size limit) half-way through the COCO zip: the
    disk-full line naming the folder, and no partial folder left behind."""
    import errno
    archive = tmp_path / "coco.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(3):
            z.writestr(f"train2014/{i}.jpg", b"x" * 10)
    real_extract, calls = zipfile.ZipFile.extract, []

    def extract_until_full(self, member, path=None, pwd=None):
        calls.append(member)
        if len(calls) == 2:
            code = getattr(errno, errno_name)
            raise OSError(code, os.strerror(code))
        return real_extract(self, member, path, pwd)
    monkeypatch.setattr(zipfile.ZipFile, "extract", extract_until_full)
    root = tmp_path / "root"
    root.mkdir()
    message = user_error(download.unpack_zip, str(archive), str(root), "train2014")
    assert message.startswith(f"cannot write {root / 'train2014'}: ") and "\n" not in message
    assert os.listdir(root) == []


def test_rewrite_list_cuts_the_authors_prefix(tmp_path):
    from scripts.get_data import rewrite_list
    src, dst = tmp_path / "raw.txt", tmp_path / "out" / "train.txt"
    src.write_text("/home/x/coco/train2014/a.jpg 0 1\n/home/x/coco/val2014/b.jpg 1 0\n")
    assert rewrite_list(str(src), str(dst), "/home/x/coco/", 2) == 2
    assert dst.read_text() == "train2014/a.jpg 0 1\nval2014/b.jpg 1 0\n"
    src.write_text("/home/x/coco/a.jpg 0 1\n/elsewhere/b.jpg 1 0\n")
    assert f"{src}:2: path /elsewhere/b.jpg" in user_error(rewrite_list, str(src), str(dst),
                                                          "/home/x/coco/", 2)
    assert f"{src}:1: 2 labels, expected 3" in user_error(rewrite_list, str(src), str(dst),
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


def test_get_data_nuswide_lists_and_the_images_note(mirror, monkeypatch, tmp_path, capsys):
    """Lists only (the images are on the authors' Google Drive): paths made
    relative to --root, and a note saying where the images go."""
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
    main(["nuswide_81_m", "--root", str(tmp_path / "nus"), "--list-dir", str(tmp_path / "lists")])
    assert (tmp_path / "lists" / "test.txt").read_text() == f"images/test_1.jpg {label}\n"
    out = capsys.readouterr().out
    assert "drive.google.com" in out and f"{tmp_path / 'nus'}/images/<name>.jpg" in out


def test_backbone_defaults_to_imagenet():
    from utils.training.config import parse_args
    assert parse_args([]).backbone == "imagenet"


# ------------------------------------------------------------- ImageNet backbone, CIFAR-10
def test_backbone_imagenet_downloads_converts_once(mirror, monkeypatch, tmp_path):
    from paddle.utils import download as paddle_download
    from models.convert import convert, read_state
    from models.alexnet import AlexNetHash
    from models.imagenet_backbone import cached_paths, imagenet_backbone, paddle_vision_remote
    from conftest import check_backbone_load
    monkeypatch.setattr(paddle_download, "WEIGHTS_HOME", str(tmp_path))
    path = imagenet_backbone()
    cached, converted = cached_paths(paddle_vision_remote())
    assert path == converted and os.path.dirname(path) == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(map(os.path.basename, (cached, converted)))
    check_backbone_load(AlexNetHash(16), "imagenet", convert(read_state(cached)))
    assert len(mirror.seen) == 1  # the second use read the converted file
    os.remove(cached)
    AlexNetHash(16).load_backbone("imagenet")
    assert len(mirror.seen) == 1


def test_backbone_md5_mismatch_is_one_line_and_leaves_nothing(monkeypatch, tmp_path):
    from paddle.utils import download as paddle_download
    from models.alexnet import AlexNetHash
    from models.imagenet_backbone import paddle_vision_remote
    checksums = {}
    put(str(tmp_path / "mirror"), paddle_vision_remote().url, b"not the weights", checksums)
    corrupt = serve(tmp_path / "mirror")  # a tiny wrong file where the weights should be
    monkeypatch.setenv(download.BASE_ENV, corrupt.base)
    weights = tmp_path / "weights"
    monkeypatch.setattr(paddle_download, "WEIGHTS_HOME", str(weights))
    message = user_error(AlexNetHash(16).load_backbone, "imagenet")
    corrupt.shutdown()
    md5 = paddle_vision_remote().checksum.split(":")[1]
    assert f"md5 differs from {md5}: deleted it" in message
    assert f"put it at {weights / 'AlexNet_pretrained.pdparams'}" in message
    assert os.listdir(weights) == [] and len(corrupt.seen) == 3  # Paddle's three tries


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


# ------------------------------------------------------------- reproduce.sh
def reproduce(tmp_path, **env):
    env = dict(os.environ, HOME=str(tmp_path / "home"), COCO_PATH=str(tmp_path / "coco"),
               COCO_LISTS=str(tmp_path / "lists"), REPRODUCE_OUT=str(tmp_path / "out"),
               REPRODUCE_PRESET="tiny", **env)
    return subprocess.run(["bash", "scripts/reproduce.sh", "16"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_reproduce_end_to_end_on_the_fixture_server(mirror, tmp_path):
    proc = reproduce(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| bits | measured mAP | reference Paddle | paper |" in proc.stdout
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 16 |")]
    assert len(row) == 1 and row[0].endswith("| 0.619 | 0.6873 |")
    with open(next((tmp_path / "out" / "logs").glob("eval-16-*/metrics.json"))) as f:
        assert f"| 16 | {json.load(f)['map']:.4f} |" in row[0]


def test_reproduce_offline_stops_in_seconds_with_one_line(tmp_path):
    start = time.time()
    proc = reproduce(tmp_path, HASHNET_DOWNLOAD_BASE=f"http://127.0.0.1:{closed_port()}")
    assert time.time() - start < 60
    line = assert_cli_error(proc, "could not download 6 file(s)", "train2014.zip", "val2014.zip",
                            "AlexNet_pretrained.pdparams", "put it at")
    assert line.count("put it at") == 6
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    assert leftovers == []


# ------------------------------------------------------------- only loopback
def test_guard_refuses_other_addresses_in_process(monkeypatch, tmp_path):
    log = tmp_path / "refused.txt"
    monkeypatch.setenv(loopback_only.LOG_ENV, str(log))
    with pytest.raises(loopback_only.NetworkGuardError):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(loopback_only.NetworkGuardError):
        socket.getaddrinfo("images.cocodataset.org", 80)
    assert len(log.read_text().splitlines()) == 2


def test_guard_reaches_subprocesses(tmp_path):
    log = tmp_path / "refused.txt"
    env = dict(os.environ, **{loopback_only.LOG_ENV: str(log)})
    code = "import urllib.request; urllib.request.urlopen('http://example.org', timeout=2)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "NetworkGuardError" in proc.stderr
    assert "example.org" in log.read_text()
    assert GUARD_DIR in os.environ["PYTHONPATH"].split(os.pathsep)


def test_demo_and_ci_never_download():
    """The demo passes its own backbone; TIPC's lite mode (CI) trains from random init."""
    demo = open(os.path.join(REPO, "scripts", "demo.sh")).read()
    runs = [line for line in demo.splitlines() if "main_single_gpu.py" in line]
    trainings = [line for line in runs if "--eval" not in line]
    assert trainings and len(trainings) + 1 == len(runs), runs     # one --eval run
    assert all('--backbone "$BACKBONE"' in line for line in trainings), trainings
    for bit in (16, 32, 48, 64):
        config = open(os.path.join(REPO, f"test_tipc/configs/hashnet_{bit}/train_infer_python.txt"))
        assert "--backbone:lite_train_lite_infer=random|" in config.read()


def test_readme_states_the_tiny_preset():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = " ".join(f.read().split())
    assert "toy sizes (batch 8, 1 epoch, 64 px crops, mAP@10)" in readme
    script = open(os.path.join(REPO, "scripts", "reproduce.sh")).read()
    assert "SIZES=(-bs 8 -e 1 -ee 1 --crop_size 64 --resize_size 72 --num_workers 0 --topK 10" in script
