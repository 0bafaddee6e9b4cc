"""The database code cache of predict.py and deploy/inference_python/infer.py.

Encoding a retrieval database (112,218 COCO images) takes far longer than
answering a query, so its binary codes are cached on disk. The reference
reused any ``database_code_{bit}.npy`` it found, even after the weights or
the list had changed. Here a cache is an ``.npz`` file holding

  * ``packed``      uint8 [n, ceil(bit/8)]: the codes, ``utils.retrieval.hamming.pack_codes``
  * ``labels``      uint8 [n, C]: the multi-hot labels of the list
  * ``fingerprint`` a JSON string: what produced the codes (``make_fingerprint``:
                    sha256 of the weights / inference model files, sha256 of
                    the list file, data root, crop and resize sizes, bit, and
                    the Paddle version and device that encoded: kernels differ
                    between them, and a code whose z is near 0 can flip)

  * ``entries_sha256`` the digest of the list's entries (paths and labels,
                    ``entries_digest``), outside the fingerprint
  * ``image_stats`` int64 [n, 3]: each image's size, mtime (ns) and inode when
                    it was encoded (utils/base/fingerprint.py ``file_stats``)

and it is used only when its fingerprint equals the current one and its
images' stat identity is unchanged (an image replaced in place under the
same path counts as a change); otherwise the codes are rebuilt (a stale
cache is never reused) and a line says why.
One exception saves the re-encoding: when only the list changed and the new
list starts with the cached entries (images appended), only the new images
are encoded and appended (``extend``); the codes equal a rebuild's.
A cache that cannot be read is rebuilt with a warning. Files are written
atomically (``utils.base.io.atomic_write``) and read through
``utils.base.array_files`` (no pickles, no array larger than the file).

The reference's ``database_code_{bit}.npy`` (a ±1 float array [n, bit], no
labels, no fingerprint) is still read, but only when no fingerprinted cache
exists, and only if its shape fits the list; the output then says the codes
are unverified.
"""
import hashlib
import json
import os
import time

import numpy as np

from utils.retrieval.hamming import pack_codes
from utils.base.array_files import load_npy, load_npz
from utils.base.errors import one_line
from utils.base.fingerprint import (CacheError, StaleCache, changed_files,  # noqa: F401
                                    check_fingerprint, file_stats, sha256_file, sha256_files)
from utils.base.io import atomic_write
from utils.base.text_files import parse_json

FORMAT = 1
# fingerprint key -> what a difference means, for the "rebuilding" line
CHANGES = {
    "format": "the cache format changed",
    "model_sha256": "the weights changed",
    "list_sha256": "the database list changed",
    "data_path": "--data_path changed",
    "crop_size": "--crop_size changed",
    "resize_size": "--resize_size changed",
    "bit": "--bit changed",
    "paddle": "the Paddle version changed",
    "device": "the device changed (CPU/GPU)",
}


def entries_digest(paths, labels):
    """sha256 of list entries (relative paths and 0/1 labels): what a cache's
    codes are of, independent of the list file's encoding and line ends."""
    digest = hashlib.sha256()
    for path, label in zip(paths, np.asarray(labels) > 0):
        digest.update(path.encode("utf-8") + b"\0" + label.astype(np.uint8).tobytes())
    return digest.hexdigest()


def same_but_list(saved, current):
    """The fingerprints differ at most in the list file."""
    def strip(fp):
        return {k: v for k, v in fp.items() if k != "list_sha256"}
    return isinstance(saved, dict) and strip(saved) == strip(current)


def make_fingerprint(model_files, list_file, data_path, bit, crop_size, resize_size,
                     device=None):
    """What determines a database's codes. ``model_files``: the weights
    (``.pdparams``) or the inference model (program + ``.pdiparams``);
    ``device``: "cpu" or "gpu", what encodes (default: Paddle's current one)."""
    import paddle
    device = device or paddle.get_device().split(":")[0]  # "gpu:1" and "gpu:0" encode alike
    return {"format": FORMAT, "bit": int(bit), "crop_size": int(crop_size),
            "resize_size": int(resize_size), "model_sha256": sha256_files(model_files),
            "list_sha256": sha256_file(list_file),
            "data_path": os.path.realpath(data_path),
            "paddle": paddle.__version__, "device": device}


class DatabaseCodeCache:
    """Packed database codes, reused only while the fingerprint matches.

    ``path``: the ``.npz`` cache; ``fingerprint``: ``make_fingerprint(...)``;
    ``legacy_path``: a reference-format ±1 ``.npy`` read when ``path`` does
    not exist; ``log``: prints one line per decision.
    """

    def __init__(self, path, fingerprint, legacy_path=None, log=print):
        self.path, self.fingerprint, self.legacy_path, self.log = path, fingerprint, legacy_path, log
        self.bit = fingerprint["bit"]
        self.nbytes = (self.bit + 7) // 8
        self.images = None   # (paths, stats) of the list's images, set by get()

    def stat_images(self, paths):
        """Take the stat identity of the list's images ``paths`` (under the
        fingerprint's data root) as they are now: what ``write`` saves and
        ``read`` checks the images against."""
        root = self.fingerprint["data_path"]
        self.images = (paths, file_stats([os.path.join(root, p) for p in paths]))

    # -------------------------------------------------------------- reading
    def read(self):
        """(packed, labels) from ``path``; CacheError if unreadable,
        StaleCache if made by something else."""
        packed, labels, saved, _, stats = self.read_unchecked()
        check_fingerprint(saved, self.fingerprint, CHANGES)
        self.check_images(stats, len(packed))
        return self.check_arrays(packed, labels)

    def read_unchecked(self):
        """(packed, labels, saved fingerprint, entries digest or None, image
        stats or None), nothing checked; CacheError if unreadable."""
        try:
            data = load_npz(self.path)
            packed, labels = data["packed"], data["labels"]
            saved = parse_json(str(data["fingerprint"][()]))
            entries = str(data["entries_sha256"][()]) if "entries_sha256" in data else None
        except (OSError, ValueError, KeyError) as err:
            raise CacheError(one_line(err))
        return packed, labels, saved, entries, data.get("image_stats")

    def check_images(self, stats, count):
        """StaleCache when the first ``count`` images of the list are not, on
        disk, the ones the cache encoded (``get`` sets the current stats)."""
        if self.images is not None:
            paths, current = self.images
            changed = changed_files(stats, current[:count], paths[:count])
            if changed:
                raise StaleCache(changed)

    def check_arrays(self, packed, labels):
        if (packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] != self.nbytes
                or labels.ndim != 2 or len(labels) != len(packed) or labels.dtype.kind not in "biuf"):
            raise CacheError(f"arrays of unexpected shape/type (packed {packed.dtype} "
                             f"{packed.shape}, labels {labels.dtype} {labels.shape})")
        return packed, labels.astype(np.float32)

    def read_legacy(self, count):
        """Packed codes from the reference's ±1 ``.npy``, or CacheError."""
        try:
            codes = load_npy(self.legacy_path)
        except (OSError, ValueError) as err:
            raise CacheError(one_line(err))
        if codes.ndim != 2 or codes.shape != (count, self.bit):
            raise CacheError(f"shape {codes.shape}, expected ({count}, {self.bit}) for this "
                             "list and --bit")
        if not np.issubdtype(codes.dtype, np.number) or not np.all(np.isin(codes, (-1, 0, 1))):
            raise CacheError("values other than -1/+1")
        return pack_codes(codes)   # sign() gave 0 for z == 0: counted as +1, like sign_codes

    # -------------------------------------------------------------- writing
    def write(self, packed, labels, entries=None):
        """``entries``: (paths, labels) of the list, for a later ``extend``."""
        extra = {} if entries is None else {"entries_sha256": np.array(entries_digest(*entries))}
        if self.images is not None:
            extra["image_stats"] = self.images[1][:len(packed)]

        def save(tmp):
            with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
                np.savez(f, packed=packed, labels=np.asarray(labels > 0, dtype=np.uint8),
                         fingerprint=np.array(json.dumps(self.fingerprint, sort_keys=True)),
                         **extra)
        atomic_write(self.path, save)

    def extend(self, build, count, entries):
        """The cached codes plus those of the images the list appended, or
        None when the cache is not a prefix of the list (weights, sizes... or
        its entries differ). ``build(start)`` encodes entries start..count-1."""
        try:
            packed, labels, saved, digest, stats = self.read_unchecked()
            packed, labels = self.check_arrays(packed, labels)
            self.check_images(stats, len(packed))
        except CacheError:
            return None
        old = len(packed)
        if (not same_but_list(saved, self.fingerprint) or digest is None or old >= count
                or digest != entries_digest(entries[0][:old], entries[1][:old])):
            return None
        self.log(f"database codes: the list adds {count - old:,} images to the {old:,} cached "
                 f"in {self.path} (same weights and sizes, first {old:,} entries unchanged): "
                 "encoding only those")
        codes, new_labels = build(old)
        packed = np.concatenate([packed, pack_codes(codes)])
        labels = np.concatenate([labels, np.asarray(new_labels, dtype=np.float32)])
        self.save_and_report(packed, labels, entries, f"appended {count - old:,} codes")
        return packed, labels

    # -------------------------------------------------------------- the policy
    def save_and_report(self, packed, labels, entries, what):
        try:
            self.write(packed, labels, entries)
            saved = f"saved to {self.path}"
        except OSError as err:
            saved = f"NOT saved ({err})"
        self.log(f"database codes: {what}; {saved}")

    def get(self, build, count, rebuild=False, entries=None):
        """Return (packed uint8 [n, nbytes], labels float32 [n, C] or None, source).

        ``build(start=0)`` -> (codes ±1, labels) of list entries start..count-1
        encodes the database; ``count``: the number of images in the list (a
        legacy cache must match); ``rebuild``: ignore any cache; ``entries``:
        the list's (paths, labels), which allow appending to a cache of a
        shorter list and whose images' stat identity the cache must match.
        ``source`` is "cache", "legacy" (labels None: take them from the
        list), "extended" or "built".
        """
        if entries is not None:
            self.stat_images(entries[0])
        if rebuild:
            self.log(f"database codes: --rebuild_cache: encoding {count:,} images")
        elif os.path.isfile(self.path):
            try:
                packed, labels = self.read()
                if len(packed) != count:
                    raise CacheError(f"{len(packed)} codes for a list of {count} images")
                self.log(f"database codes: loaded {len(packed):,} codes from cache {self.path} "
                         "(fingerprint matches: same weights, list and sizes)")
                return packed, labels, "cache"
            except StaleCache as err:
                extended = entries is not None and self.extend(build, count, entries)
                if extended:
                    return extended + ("extended",)
                self.log(f"database codes: cache {self.path} is stale ({err}); "
                         f"re-encoding {count:,} images")
            except CacheError as err:
                self.log(f"warning: database code cache {self.path} is unreadable or corrupt "
                         f"({err}); rebuilding it")
        elif self.legacy_path and os.path.isfile(self.legacy_path):
            try:
                packed = self.read_legacy(count)
                self.log(f"database codes: loaded {len(packed):,} codes from the LEGACY cache "
                         f"{self.legacy_path} (reference format, no fingerprint: UNVERIFIED against "
                         "these weights, list and sizes; delete it or pass --rebuild_cache to rebuild)")
                return packed, None, "legacy"
            except CacheError as err:
                self.log(f"warning: legacy database code cache {self.legacy_path} does not fit "
                         f"({err}); ignoring it and encoding {count:,} images")
        else:
            self.log(f"database codes: no cache at {self.path}; encoding {count:,} images")
        start = time.time()
        codes, labels = build()
        packed = pack_codes(codes)
        took = time.time() - start
        self.save_and_report(packed, labels, entries, f"encoded {len(packed):,} images in "
                             f"{took:.1f}s ({len(packed) / max(took, 1e-9):.1f} images/s)")
        return packed, np.asarray(labels, dtype=np.float32), "built"
