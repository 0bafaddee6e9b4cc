"""utils/base/download.py against the local fixture server on 127.0.0.1
(tests/download_fixtures.py; the ``mirror`` fixture of tests/conftest.py):
verified transfer, resume after a cut connection, checksum mismatch, 404, no
server, atomic unpacking, the download variables checked before any
download, a partial download that is a link refused, the ImageNet backbone;
the demo and CI never download."""
import json
import os
import time
import zipfile

import pytest

from download_fixtures import put, serve
from support.errors import user_error
from support.paths import REPO
from support.ports import closed_port
from support.victim import VICTIM_TEXT, victim
from utils.base import download
from utils.base.download import (DownloadFailed, Remote, check_mirror_settings, fetch,
                                 file_checksum, mirrored, run_downloads)
from utils.base.errors import UserError


def blob(server, name, data):
    """A file ``https://example.org/<name>`` on the server; its Remote."""
    url = f"https://example.org/{name}"
    checksums = {}
    put(server.root, url, data, checksums)
    return Remote(url, checksums[url]["checksum"], len(data))


# ---------------------------------------------------------------- fetch


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


def test_symlinked_partial_download_is_refused(mirror, tmp_path):  # noqa: F811
    target = victim(tmp_path)
    remote = blob(mirror, "p.bin", os.urandom(2000))
    os.symlink(target, tmp_path / "p.bin.part")
    with pytest.raises((UserError, DownloadFailed), match="symbolic link"):
        fetch(remote, str(tmp_path / "p.bin"))
    assert target.read_text() == VICTIM_TEXT


# ---------------------------------------------------------------- the mirror and checksum variables


def test_mirror_maps_host_and_path(monkeypatch, tmp_path):
    overrides = tmp_path / "sums.json"
    overrides.write_text(json.dumps({"https://127.0.0.1:2/x/y.txt": {
        "checksum": "md5:" + "ab" * 16, "size": 3}}))
    monkeypatch.setenv(download.BASE_ENV, "http://127.0.0.1:1/")
    monkeypatch.setenv(download.CHECKSUMS_ENV, str(overrides))
    assert download.mirrored(Remote("https://127.0.0.1:2/x/y.txt", "md5:cd", 9)) ==\
        Remote("http://127.0.0.1:1/127.0.0.1:2/x/y.txt", "md5:" + "ab" * 16, 3)
    assert download.mirrored(Remote("https://127.0.0.1:2/z", "md5:cd")).checksum == "md5:cd"


@pytest.mark.parametrize("content, fragment", [
    (None, "cannot read it"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"http://127.0.0.1/a.zip": {"checksum": "sha9:00"}}', "the entry for http://127.0.0.1/a.zip must be"),
    ('{"http://127.0.0.1/a.zip": {"checksum": "md5:00", "size": "big"}}', "the entry for"),
    ('{"http://127.0.0.1/a.zip": {"checksum": "md5:xyz"}}', "the entry for"),   # not 32 hex digits
    ("[" * 100_000, "is not valid JSON (JSON nested too deeply)"),
], ids=["missing", "not JSON", "a list", "unknown kind", "size a string", "not hex",
        "nested too deeply"])
def test_bad_checksums_variable_is_one_line(monkeypatch, tmp_path, content, fragment):
    path = tmp_path / "checksums.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(download.CHECKSUMS_ENV, str(path))
    message = user_error(check_mirror_settings)
    assert message.startswith("HASHNET_CHECKSUMS=") and fragment in message
    assert fragment in user_error(mirrored, Remote("http://127.0.0.1/a.zip", "md5:00"))


@pytest.mark.parametrize("base", ["ftp://host/", "127.0.0.1:8000", "http://"])
def test_bad_download_base_is_one_line(monkeypatch, base):
    monkeypatch.setenv(download.BASE_ENV, base)
    assert "HASHNET_DOWNLOAD_BASE" in user_error(check_mirror_settings)


def test_git_blob_checksum_is_gits(tmp_path):
    (tmp_path / "f").write_bytes(b"hello\n")  # `echo hello | git hash-object --stdin`
    assert file_checksum(str(tmp_path / "f"), "git-blob-sha1") ==\
        "git-blob-sha1:ce013625030ba8dba906f756967f9e9ca394464a"


# ---------------------------------------------------------------- unpack


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


# ---------------------------------------------------------------- ImageNet backbone


def test_backbone_defaults_to_imagenet():
    from utils.training.config import parse_args
    assert parse_args([]).backbone == "imagenet"


def test_backbone_imagenet_downloads_converts_once(mirror, monkeypatch, tmp_path):
    from paddle.utils import download as paddle_download
    from models.convert import convert, read_state
    from models.alexnet import AlexNetHash
    from models.imagenet_backbone import cached_paths, imagenet_backbone, paddle_vision_remote
    from support.weights import check_backbone_load
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


@pytest.mark.parametrize("planted", ["AlexNet_pretrained.pdparams", "AlexNet_pretrained.pdparams_tmp"])
def test_paddles_downloader_never_writes_through_a_planted_link(monkeypatch, tmp_path, planted):
    """Paddle's downloader opens its files with open(path, "wb"): a link
    planted at either is refused before it runs, the victim untouched."""
    from paddle.utils import download as paddle_download
    from models.alexnet import AlexNetHash
    target = victim(tmp_path)
    weights = tmp_path / "weights"
    weights.mkdir()
    os.symlink(target, weights / planted)
    monkeypatch.setattr(paddle_download, "WEIGHTS_HOME", str(weights))
    monkeypatch.setenv(download.BASE_ENV, "http://127.0.0.1:1/")   # never reached
    message = user_error(AlexNetHash(16).load_backbone, "imagenet")
    assert f"{weights / planted} is a symbolic link: refusing to write through it" in message
    assert target.read_text() == VICTIM_TEXT


CHECKSUMS_SEED = {"https://127.0.0.1:2/a.zip": {"checksum": "md5:" + "0f" * 16, "size": 12},
                  "https://127.0.0.1:2/b.txt": {"checksum": "git-blob-sha1:" + "a1" * 20}}


def test_fuzzed_checksums_variable_is_read_or_refused_in_one_line(tmp_path_factory):
    from hypothesis import given
    from support.fuzz import FUZZ, json_like, mutated, one_line_or_result
    path = tmp_path_factory.mktemp("fuzzed_checksums") / "sums.json"

    @FUZZ
    @given(data=json_like(CHECKSUMS_SEED) | mutated([json.dumps(CHECKSUMS_SEED).encode()]))
    def fuzz(data):
        path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
        old = os.environ.get(download.CHECKSUMS_ENV)
        os.environ[download.CHECKSUMS_ENV] = str(path)
        try:
            remote = one_line_or_result(mirrored,
                                        Remote("https://127.0.0.1:2/a.zip", "md5:" + "1" * 32))
        finally:
            os.environ.pop(download.CHECKSUMS_ENV)
            if old is not None:
                os.environ[download.CHECKSUMS_ENV] = old
        assert remote is None or download.is_checksum(remote.checksum)
    fuzz()


# ---------------------------------------------------------------- no download in the demo and CI


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
