"""File digests and cache fingerprints: one place for hashing files.

A cache (the database code cache, the decoded-image cache) is reused only
while the fingerprint it was written with equals the current one; a
checkpoint's manifest and a download's checksum are digests of its files.
"""
import hashlib

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
