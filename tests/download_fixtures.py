"""A local stand-in for the internet: tiny fixture files in the layout
``HASHNET_DOWNLOAD_BASE`` maps URLs to (``<host>/<path>``), served on
127.0.0.1 by an HTTP server that honours Range and can cut a transfer.

    python -m tests.download_fixtures /tmp/fixtures     # make, serve, print the env to use

Used by the download tests (tests/conftest.py's ``server`` fixture,
tests/models/test_backbones.py, tests/entrypoints/test_tipc_reference.py) and
to run ``REPRODUCE_PRESET=tiny bash scripts/reproduce.sh [coco|imagenet|
nuswide_81] 16`` end to end without the network. ImageNet's and NUS-WIDE's
images are never downloaded (they are the user's copy): their fixtures
also write such a copy, under ``copies/<dataset>/`` of the served folder.
"""
import http.server
import io
import json
import os
import sys
import threading
import zipfile
from urllib.parse import urlsplit

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from utils.base.download import file_checksum  # noqa: E402

# A COCO-shaped tiny set: images in train2014/ and val2014/, 80 labels whose
# first 10 are the demo set's colour classes.
N_TRAIN, N_TEST, N_DATABASE, SIZE = 24, 8, 24, 72


class FixtureHandler(http.server.SimpleHTTPRequestHandler):
    """Serves ``server.root``; ``server.cut[path] = n`` sends only n bytes of
    that file's next response and drops the connection; every request's path
    and Range header go to ``server.seen``."""

    def log_message(self, *args):
        pass

    def translate_path(self, path):
        return os.path.join(self.server.root, urlsplit(path).path.lstrip("/"))

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Range")))
        file = self.translate_path(self.path)
        if not os.path.isfile(file):
            self.send_error(404)
            return
        with open(file, "rb") as f:
            body = f.read()
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.server.cut.pop(urlsplit(self.path).path, None)
        self.wfile.write(body[start:] if cut is None else body[start:start + cut])
        if cut is not None:
            self.close_connection = True


def serve(root):
    """Start a server for ``root`` on a free 127.0.0.1 port; returns it with
    ``.base`` (its URL), ``.cut`` and ``.seen``; stop it with ``.shutdown()``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FixtureHandler)
    server.root, server.cut, server.seen = str(root), {}, []
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def put(root, url, data, checksums, kind="md5"):
    """Place ``data`` where ``url`` is mirrored under ``root``; record its checksum."""
    parts = urlsplit(url)
    path = os.path.join(root, parts.netloc + parts.path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    checksums[url] = {"checksum": file_checksum(path, kind), "size": len(data)}
    return path


def coco_fixture(root, checksums, seed=0):
    """Tiny COCO: the authors' list format (their path prefix, 80 labels) and
    train2014.zip / val2014.zip of JPEGs, placed at the real URLs' mirror paths."""
    from scripts.get_data import DATASETS
    coco = DATASETS["coco"]
    zips = {folder: (io.BytesIO(), []) for _, folder in coco.archives}
    lines = []
    for i in range(N_TRAIN + N_TEST + N_DATABASE):
        folder = "train2014" if i % 3 else "val2014"
        name = f"{folder}/COCO_{folder}_{i:012d}.jpg"
        data, classes = jpeg(seed, i)
        zips[folder][1].append((name, data))
        lines.append(label_line(f"{coco.prefix}{name}", classes, 80))
    serve_lists(root, coco, {"train": lines[:N_TRAIN], "test": lines[N_TRAIN:N_TRAIN + N_TEST],
                             "database": lines[N_TRAIN:]}, checksums)
    for remote, folder in coco.archives:
        buffer, members = zips[folder]
        with zipfile.ZipFile(buffer, "w") as z:
            for name, data in members:
                z.writestr(name, data)
        put(root, remote.url, buffer.getvalue(), checksums)


def jpeg(seed, i):
    """A demo-set image as JPEG bytes, and its classes."""
    from scripts.demo.data import make_image
    image, classes = make_image(np.random.default_rng([seed, i]), SIZE)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), classes


def label_line(path, classes, num_class):
    labels = np.zeros(num_class, dtype=int)
    labels[list(classes)] = 1
    return f"{path} {' '.join(map(str, labels))}\n"


def serve_lists(root, dataset, splits, checksums):
    """The authors' lists of ``dataset`` (scripts/get_data.py DATASETS) at
    their URLs' mirror paths."""
    for split, lines in splits.items():
        put(root, dataset.list_remote(split).url, "".join(lines).encode(), checksums,
            kind="git-blob-sha1")


def write_copy(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def imagenet_fixture(root, checksums, seed=1):
    """Tiny ImageNet-100: the authors' lists (their prefix, image/ and
    val_image/ names, 100 labels, one per image) served, and a user's
    ILSVRC-2012 copy in ``copy_dir(root, "imagenet")``: train/<wnid>/ and
    val/, half of val sorted into class folders."""
    from scripts.get_data import DATASETS
    imagenet, copy = DATASETS["imagenet"], copy_dir(root, "imagenet")
    train, val = [], []
    for i in range(N_TRAIN + N_DATABASE):
        data, classes = jpeg(seed, i)
        wnid = f"n{classes[0]:08d}"
        write_copy(os.path.join(copy, "train", wnid, f"{wnid}_{i}.JPEG"), data)
        train.append(label_line(f"{imagenet.prefix}image/{wnid}_{i}.JPEG", classes[:1], 100))
    for i in range(N_TEST):
        data, classes = jpeg(seed + 1, i)
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        folder = os.path.join(copy, "val", *([f"n{classes[0]:08d}"] if i % 2 else []))
        write_copy(os.path.join(folder, name), data)
        val.append(label_line(f"{imagenet.prefix}val_image/{name}", classes[:1], 100))
    serve_lists(root, imagenet, {"train": train[:N_TRAIN], "test": val, "database": train},
                checksums)


def nuswide_fixture(root, checksums, seed=2):
    """Tiny NUS-WIDE-81: the authors' lists (their ./data/nuswide_81/ prefix,
    81 labels, some lines without any) served, and the authors' images in
    ``copy_dir(root, "nuswide_81")``/images/."""
    from scripts.get_data import DATASETS
    nuswide, copy = DATASETS["nuswide_81_m"], copy_dir(root, "nuswide_81")
    lines = []
    for i in range(N_TRAIN + N_TEST + N_DATABASE):
        data, classes = jpeg(seed, i)
        name = f"images/{i}_{1000 + i}_0a1b2c3d4e_m.jpg"
        write_copy(os.path.join(copy, name), data)
        lines.append(label_line(f"{nuswide.prefix}{name}", [] if i % 7 == 3 else classes, 81))
    serve_lists(root, nuswide, {"train": lines[:N_TRAIN],
                                "test": lines[N_TRAIN:N_TRAIN + N_TEST],
                                "database": lines[N_TRAIN:]}, checksums)


def copy_dir(root, dataset):
    """Where the fixtures keep a user's own copy of ``dataset``'s images
    (ImageNet, NUS-WIDE: not downloaded), beside the served files."""
    return os.path.join(str(root), "copies", dataset)


def alexnet_fixture(root, checksums, seed=0):
    """paddle.vision's AlexNet layout with random weights, at the URL of its
    ImageNet weights (full size: the backbone must load into HashNet)."""
    import paddle
    from models.imagenet_backbone import paddle_vision_remote
    paddle.seed(seed)
    buffer = io.BytesIO()
    paddle.save(paddle.vision.models.alexnet(pretrained=False).state_dict(), buffer)
    put(root, paddle_vision_remote().url, buffer.getvalue(), checksums)


def make_fixtures(root, weights=True):
    """All fixtures under ``root``; returns the path of their checksums.json."""
    checksums = {}
    coco_fixture(root, checksums)
    imagenet_fixture(root, checksums)
    nuswide_fixture(root, checksums)
    if weights:
        alexnet_fixture(root, checksums)
    path = os.path.join(root, "checksums.json")
    with open(path, "w") as f:
        json.dump(checksums, f, indent=1)
    return path


if __name__ == "__main__":
    directory = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
    checksums_file = make_fixtures(directory)
    server = serve(directory)
    print(f"export HASHNET_DOWNLOAD_BASE={server.base} HASHNET_CHECKSUMS={checksums_file}",
          flush=True)
    threading.Event().wait()
