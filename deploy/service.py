"""What the retrieval service does, without HTTP (deploy/serve.py puts it
behind FastAPI): a warm model and a live database (deploy/live_database.py);
searches by uploaded image or by database id, adds of uploads or of paths
under the database root, removals, the images and their thumbnails.

Ids are positions in the database list, as predict.py's ``index``: removing
an image moves the ones after it up by one, as deleting its line does.
"""
import contextlib
import hashlib
import os
import tempfile
import threading
import time

import numpy as np
from PIL import Image

from deploy.live_database import LiveDatabase, UnknownImage, drop_uploads
from deploy.search import search_database
from utils.base.errors import UserError
from utils.base.io import atomic_write
from utils.data.images import open_rgb
from utils.data.list_format import check_writable_path
from utils.data.transforms import load_query_image
from utils.retrieval.codes import sign_codes
from utils.retrieval.hamming import unpack_codes

UPLOADS = "uploads"        # the folder under the database root that added uploads go to
THUMBS = "thumbs"          # the folder under --save_path of the cached thumbnails
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif",
           "TIFF": ".tif"}


def locked(forward, lock):
    """``forward`` run by one thread at a time (a predictor is not re-entrant)."""
    def run(x):
        with lock:
            return forward(x)
    return run


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def bit_string(code):
    """A ±1 code as the text of its bits ("1" for +1)."""
    return "".join("1" if b > 0 else "0" for b in code)


class Service:
    """The service's state: ``encoder`` (deploy/retrieve.py Encoder, its
    forwards made safe for threads here) and the database of ``args``."""

    def __init__(self, args, encoder, batch_size, thumb_size=160, log=print):
        self.args, self.thumb_size, self.log = args, thumb_size, log
        self.root = os.path.realpath(args.data_path)
        lock = threading.Lock()
        self.encoder = type(encoder)(query=locked(encoder.query, lock),
                                     database=lambda n: locked(encoder.database(n), lock),
                                     files=encoder.files, tag=encoder.tag, device=encoder.device)
        self.scratch = tempfile.mkdtemp(prefix="hashnet-serve-")
        self.live = LiveDatabase(args, self.encoder, batch_size, log)
        self.warm_up()

    def warm_up(self):
        """One query before the first request's: the predictor's first run
        and the scan kernel's compilation are not a user's wait."""
        x = np.zeros((1, 3, self.args.crop_size, self.args.crop_size), np.float32)
        with self.live.reading() as db:
            search_database(sign_codes(self.encoder.query(x)), db.packed, 1, None, db.index)

    # ------------------------------------------------------------ describing
    def health(self):
        with self.live.reading() as db:
            return {"ready": True, "arch": self.args.arch, "bit": self.args.bit,
                    "fingerprint": db.cache.fingerprint["model_sha256"],
                    "index": db.index.spec, "database_size": len(db.packed),
                    "num_class": self.args.num_class}

    # ------------------------------------------------------------ searching
    @contextlib.contextmanager
    def upload_file(self, data):
        """``data`` (uploaded bytes) as a file for the image reader; its
        errors name "the uploaded image", not the temporary file."""
        fd, path = tempfile.mkstemp(dir=self.scratch)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield path
        except UserError as err:
            raise UserError(str(err).replace(f"image {path}", "the uploaded image")
                            .replace(path, "the uploaded image")) from None
        finally:
            os.remove(path)

    def encode_upload(self, data, timings):
        """The ±1 code [1, bit] of an uploaded query image."""
        start = time.perf_counter()
        with self.upload_file(data) as path:
            x = load_query_image(path, self.args.resize_size, self.args.crop_size,
                                 upright=True, pipeline=self.args.pipeline)
        timings["decode_ms"] = 1000 * (time.perf_counter() - start)
        start = time.perf_counter()
        code = sign_codes(self.encoder.query(x))
        timings["encode_ms"] = 1000 * (time.perf_counter() - start)
        return code

    def search(self, topk, radius=None, image=None, ids=()):
        """Results of an uploaded image (bytes) or of database ids (their
        stored codes), or both: one entry per query."""
        start, timings = time.perf_counter(), {}
        queries = []
        if image is not None:
            queries.append(({"upload": True}, self.encode_upload(image, timings)[0], None))
        search_start = time.perf_counter()
        with self.live.reading() as db:
            for i in ids:
                self.check_id(db, i)
                queries.append(({"id": int(i), "path": db.images.paths[i]},
                                unpack_codes(db.packed[i:i + 1], self.args.bit)[0], int(i)))
            answers = [self.answer(db, query, code, own, topk, radius)
                       for query, code, own in queries]
            size = len(db.packed)
        timings["search_ms"] = 1000 * (time.perf_counter() - search_start)
        timings["total_ms"] = 1000 * (time.perf_counter() - start)
        return {"queries": answers, "database_size": size, "timings": timings}

    def answer(self, db, query, code, own, topk, radius):
        indices, distances = search_database(code[None], db.packed, topk, own, db.index)
        keep = slice(None) if radius is None else distances[0] <= radius
        return {"query": query, "code": bit_string(code),
                "results": [self.describe(db, int(i), int(d))
                            for i, d in zip(indices[0][keep], distances[0][keep])]}

    @staticmethod
    def describe(db, i, distance):
        return {"id": i, "path": db.images.paths[i], "distance": distance,
                "labels": np.flatnonzero(db.labels[i] > 0).tolist()}

    @staticmethod
    def check_id(db, i):
        if not 0 <= i < len(db.packed):
            raise UnknownImage(f"no image {i}: ids are 0..{len(db.packed) - 1}")

    # ------------------------------------------------------------ changing
    def labels_row(self, labels):
        """The list labels of added images from their class numbers."""
        row = np.zeros(self.args.num_class, np.float32)
        for c in labels:
            if not 0 <= c < self.args.num_class:
                raise UserError(f"label {c} is not a class of this database "
                                f"(0..{self.args.num_class - 1})")
            row[c] = 1
        return row

    def under_root(self, path):
        """``path`` (relative to the database root) checked: a file inside
        the root, links resolved, writable as a list line."""
        check_writable_path(path)
        full = os.path.realpath(os.path.join(self.root, path))
        if os.path.commonpath([full, self.root]) != self.root:
            raise UserError(f"{path} is outside the database root {self.root}: give a path "
                            "under it, or upload the file")
        if not os.path.isfile(full):
            raise UserError(f"{path} is not a file under the database root {self.root}")
        return os.path.relpath(full, self.root)

    def save_upload(self, data):
        """Store an uploaded image under <root>/uploads/, named by its
        content; returns its list path. A bad image is refused first."""
        with self.upload_file(data) as path:
            open_rgb(path)   # decodable, within the pixel limit
            with Image.open(path) as img:
                suffix = FORMATS.get(img.format, ".img")
        folder = os.path.join(self.root, UPLOADS)
        if os.path.islink(folder):
            raise UserError(f"{folder} is a symbolic link: refusing to write through it; "
                            "remove the link")
        relative = f"{UPLOADS}/{hashlib.sha256(data).hexdigest()[:20]}{suffix}"
        full = os.path.join(self.root, relative)
        if not os.path.isfile(full):
            atomic_write(full, lambda tmp: write_bytes(tmp, data))
        return relative

    def add(self, uploads=(), paths=(), labels=()):
        """Add uploaded images (bytes) and images under the root; returns
        their ids and paths."""
        listed = [self.under_root(p) for p in paths]
        saved = [self.save_upload(data) for data in uploads]
        new = saved + listed
        if not new:
            raise UserError("nothing to add: upload images or give paths under the database root")
        row = self.labels_row(labels)
        try:
            ids = self.live.add(new, np.repeat(row[None], len(new), axis=0), uploads=saved)
        except BaseException:
            with self.live.reading() as db:   # an upload the list does not hold is dropped
                drop_uploads(saved, db.images.paths, self.root)
            raise
        return {"added": [{"id": i, "path": p} for i, p in zip(ids, new)],
                "database_size": len(self.live)}

    def remove(self, ids):
        if not ids:
            raise UserError("nothing to remove: give the ids of database images")
        removed = self.live.remove(ids)
        return {"removed": [{"id": int(i), "path": p} for i, p in zip(sorted(set(ids)), removed)],
                "database_size": len(self.live)}

    # ------------------------------------------------------------ images
    def image_path(self, i):
        """The file of database image ``i`` (inside the root)."""
        with self.live.reading() as db:
            self.check_id(db, i)
            relative = db.images.paths[i]
        full = os.path.realpath(os.path.join(self.root, relative))
        if os.path.commonpath([full, self.root]) != self.root or not os.path.isfile(full):
            raise UnknownImage(f"image {i} ({relative}) is missing or outside the database root")
        return full

    def thumbnail(self, i):
        """A JPEG thumbnail of image ``i`` (longest side ``thumb_size``),
        cached under --save_path/thumbs by the file's path, size and time."""
        full = self.image_path(i)
        stat = os.stat(full)
        key = hashlib.sha256(f"{full}\0{stat.st_size}\0{stat.st_mtime_ns}\0{self.thumb_size}"
                             .encode()).hexdigest()[:32]
        thumb = os.path.join(self.args.save_path, THUMBS, key + ".jpg")
        if not os.path.isfile(thumb):
            img = open_rgb(full)
            img.thumbnail((self.thumb_size, self.thumb_size))
            atomic_write(thumb, lambda tmp: img.save(tmp, "JPEG", quality=85))
        return thumb
