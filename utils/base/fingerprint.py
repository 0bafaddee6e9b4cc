"""File digests and cache fingerprints: one place for hashing files.

A cache (the database code cache, the decoded-image cache) is reused only
while the fingerprint it was written with equals the current one, and while
its images' stat identity (``file_stats``) is the one it recorded; a
checkpoint's manifest and a download's checksum are digests of its files.
"""
import hashlib
import os

import numpy as np

CHUNK = 1 << 22


def file_digest(path, algorithm="sha256", header=b""):
    """Hex digest of a file's bytes (after ``header``: git's blob id hashes a
    ``blob <size>\\0`` header first), read in 4 MiB blocks."""
    digest = hashlib.new(algorithm, header)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_sha256(text):
    """A sha256 as this project writes it: 64 lower-case hex digits."""
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def sha256_file(path):
    return file_digest(path, "sha256")


def sha256_files(paths):
    """One digest over several files (e.g. an inference model's program and
    parameters); a single file gives its own sha256."""
    digests = [sha256_file(p) for p in paths]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def file_stats(paths):
    """int64 [n, 3]: (size, mtime in ns, inode) of each file, -1 where it
    cannot be stat'ed. A file replaced in place under the same name (an
    edited or re-exported image) changes at least one of them, unless a
    tool keeps all three; hashing every image instead would cost a read of
    the whole data set."""
    stats = np.full((len(paths), 3), -1, np.int64)
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue
        stats[i] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return stats


def changed_files(saved, current, paths):
    """Why ``saved`` stats (read from a cache, any array) do not describe
    the files now (``current``, of ``paths``): "N of M images changed on
    disk (size, mtime or inode), e.g. PATH", or None when they do."""
    saved = np.asarray(saved)
    if saved.shape != current.shape or saved.dtype.kind not in "iu":
        return "it records no size, mtime and inode of its images"
    changed = np.flatnonzero((saved != current).any(axis=1))
    if not len(changed):
        return None
    return (f"{len(changed):,} of {len(paths):,} images changed on disk since it was written "
            f"(size, mtime or inode), e.g. {paths[changed[0]]}")


class CacheError(Exception):
    """A cache file that exists but cannot be used as it is."""


class StaleCache(CacheError):
    """The cache was made from other inputs (weights, list, sizes...)."""


def check_fingerprint(saved, current, changes):
    """CacheError unless ``saved`` (read from a cache) is a fingerprint;
    StaleCache saying what differs from ``current`` (``changes``: key ->
    words, e.g. "the weights changed, --bit changed") unless it is equal."""
    if not isinstance(saved, dict):
        raise CacheError("fingerprint is not a JSON object")
    differ = [changes.get(k, f"{k} changed") for k in sorted(set(saved) | set(current))
              if saved.get(k) != current.get(k)]
    if differ:
        raise StaleCache(", ".join(dict.fromkeys(differ)))
