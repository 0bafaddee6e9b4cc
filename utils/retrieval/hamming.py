"""Packed binary codes and exact Hamming search: the one kernel shared by
evaluation (utils/retrieval/metrics.py), predict.py and Paddle Inference.

Codes are ±1 arrays [n, bit] (z == 0 already mapped to +1; here any value
>= 0 is a 1 bit). ``pack_codes`` stores them with ``np.packbits`` as uint8
[n, ceil(bit/8)]; the distance is popcount(q XOR d) on 64-bit words.

Ranking rule everywhere: by Hamming distance, ties by database index (a
stable order, exact and deterministic). It is produced without sorting the
database: distances take only the values 0..bit, so the distance ``t`` of the
k-th item is found by counting (a histogram, or a few vectorised counts of
``dist <= g``); the items with distance < t, plus the first ones in index
order at distance t, are then placed by a counting sort. O(n_db) per query,
in blocks of queries, so memory stays O(block * k + n_db).

Two interchangeable backends compute the same integers (indices, distances,
histograms, relevance flags), so every number derived from them is
identical whichever ran:
  * ``numpy`` — always available (``np.bitwise_count`` on numpy >= 2, a SWAR
    popcount otherwise);
  * ``numba`` — optional (``pip install numba``), a compiled, multi-threaded
    version of the same algorithm.
The default is numba when importable; the environment variable
``HASHNET_HAMMING_BACKEND=numpy|numba`` or a ``backend=`` argument chooses
(``resolve_backend``). The numba kernel lives in utils/retrieval/numba_kernels.py.

Layout: packing, backend choice, the index, distances, the scan (public
``hamming_scan`` and its numpy kernel), search (``hamming_topk``).
"""
import os
from collections import namedtuple

import numpy as np

from utils.base.errors import UserError
from utils.retrieval.threshold import threshold_walk

try:  # optional compiled path
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

_ENV = "HASHNET_HAMMING_BACKEND"

# One block of queries of a scan: top-`depth` indices [b, depth] (int64,
# ordered by distance then index) and their distances; with labels, whether
# each of them shares a label with the query ("relevant", bool [b, depth]);
# with histograms, the number of database items at each distance 0..max
# ("hist", int64 [b, max+1]) and how many of them are relevant ("rel_hist").
ScanResult = namedtuple("ScanResult", "indices distances relevant hist rel_hist")


# ----------------------------------------------------------------- packing
def pack_codes(codes):
    """±1 codes [n, bit] -> packed bits uint8 [n, ceil(bit/8)] (value >= 0 is a 1 bit)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [n, bit], got shape {codes.shape}")
    return np.packbits(codes >= 0, axis=1)


def unpack_codes(packed, bit):
    """Inverse of ``pack_codes``: uint8 [n, ceil(bit/8)] -> ±1 int8 [n, bit]."""
    packed = _check_packed(packed)
    if packed.shape[1] != (bit + 7) // 8:
        raise ValueError(f"{packed.shape[1]} bytes per code cannot hold exactly {bit} bits")
    bits = np.unpackbits(packed, axis=1, count=bit)
    return (bits.astype(np.int8) * 2 - 1).astype(np.int8)


def packed_to_words(packed):
    """uint8 [n, nbytes] -> uint64 words [n, ceil(nbytes/8)], zero padded.
    Padding bits are 0 on both sides of a XOR, so distances are unchanged."""
    packed = _check_packed(packed)
    n, nbytes = packed.shape
    width = max(1, (nbytes + 7) // 8) * 8
    buf = np.zeros((n, width), dtype=np.uint8)
    buf[:, :nbytes] = packed
    return buf.view(np.uint64)


def _check_packed(packed):
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise ValueError("packed codes must be a uint8 array [n, nbytes] (see pack_codes); "
                         f"got {packed.dtype} {packed.shape}")
    return packed


def _check_width(packed_queries, index):
    packed = _check_packed(packed_queries)
    if packed.shape[1] != index.nbytes:
        raise ValueError(f"queries and database have different code lengths "
                         f"({packed.shape[1]} vs {index.nbytes} bytes per code)")
    return packed


def distance_dtype(max_distance):
    """Smallest unsigned dtype holding distances 0..max_distance."""
    return np.uint8 if max_distance <= 255 else np.uint16


# ----------------------------------------------------------------- backends
def available_backends():
    return ("numpy", "numba") if numba is not None else ("numpy",)


def resolve_backend(backend=None):
    """The backend to run: ``backend`` if given ("numpy", "numba"; None or
    "auto" for the default), else ``$HASHNET_HAMMING_BACKEND``, else numba
    when importable, else numpy. The one place that reads the environment."""
    if backend in (None, "auto"):
        backend = backend_variable()
    if backend == "auto":
        return "numba" if numba is not None else "numpy"
    if backend not in ("numpy", "numba"):
        raise ValueError(f"unknown Hamming backend {backend!r} (numpy, numba or auto)")
    if backend == "numba" and numba is None:
        raise ValueError("the numba backend was requested but numba is not installed "
                         "(pip install numba, or use backend='numpy')")
    return backend


BACKEND_CHOICES = ("auto", "numpy", "numba")


def backend_variable():
    """``$HASHNET_HAMMING_BACKEND`` (unset: auto), checked against its
    choices; the entry points call it before any work starts."""
    value = os.environ.get(_ENV) or "auto"
    if value not in BACKEND_CHOICES:
        raise UserError(f"{_ENV}={value[:40]!r} is not one of {', '.join(BACKEND_CHOICES)}: "
                        f"fix it or unset it")
    if value == "numba" and numba is None:
        raise UserError(f"{_ENV}=numba but numba is not installed: pip install numba, or "
                        "unset it")
    return value


def _scan_kernel(backend):
    if backend == "numba":
        from utils.retrieval import numba_kernels
        return numba_kernels.scan
    return _scan_numpy


# ----------------------------------------------------------------- index
class HammingIndex:
    """A packed database prepared for repeated searches.

    ``packed_db``: uint8 [n, nbytes] from ``pack_codes``. ``labels``: optional
    multi-hot [n, C]; an item is relevant to a query when they share at least
    one label. Codes are stored as transposed 64-bit words ([words, n], read
    contiguously by the scan); labels as one bitmap over the database per
    class ([C, ceil(n/64)] uint64, bit j = item j), so a query's relevant set
    is the OR of its classes' bitmaps: a few KiB, cache resident.
    """

    def __init__(self, packed_db, labels=None):
        packed = _check_packed(packed_db)
        self.size, self.nbytes = packed.shape
        self.max_distance = 8 * self.nbytes
        self.words_t = np.ascontiguousarray(packed_to_words(packed).T)
        self.label_bitmaps = None
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim != 2 or labels.shape[0] != self.size:
                raise ValueError(f"labels of shape {labels.shape} for {self.size} database codes")
            per_class = np.packbits(labels.T > 0, axis=1, bitorder="little")  # [C, ceil(n/8)]
            buf = np.zeros((labels.shape[1], 8 * ((self.size + 63) // 64)), np.uint8)
            buf[:, :per_class.shape[1]] = per_class
            self.label_bitmaps = buf.view("<u8").astype(np.uint64)

    @property
    def num_classes(self):
        return None if self.label_bitmaps is None else self.label_bitmaps.shape[0]

    def __len__(self):
        return self.size

    def topk(self, packed_queries, k, backend=None, block=None):
        return hamming_topk(packed_queries, self, k, backend=backend, block=block)


def _as_index(db):
    return db if isinstance(db, HammingIndex) else HammingIndex(db)


# ----------------------------------------------------------------- distances
def _popcount_swar(x):
    """Popcount of uint64 words without np.bitwise_count (numpy < 2)."""
    x = np.asarray(x, dtype=np.uint64)
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return ((x * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.uint8)


def _popcount(x, out=None):
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x, out=out)
    counts = _popcount_swar(x)
    if out is None:
        return counts
    out[...] = counts
    return out


def _row_distances(q_words, words_t, tmp, dist, part):
    """Distances of one query (words [W]) to the whole database into ``dist``."""
    for w in range(words_t.shape[0]):
        np.bitwise_xor(words_t[w], q_words[w], out=tmp)
        if w == 0:
            _popcount(tmp, out=dist)
        else:
            _popcount(tmp, out=part)
            dist += part


def hamming_distances(packed_queries, packed_db):
    """All distances: uint8 (uint16 beyond 255 bits) [nq, n_db]. Memory is
    nq * n_db of that dtype; for search use ``hamming_topk``."""
    index = _as_index(packed_db)
    q_words = packed_to_words(_check_width(packed_queries, index))
    n = index.size
    out = np.empty((len(q_words), n), dtype=distance_dtype(index.max_distance))
    tmp = np.empty(n, np.uint64)
    part = np.empty(n, np.uint8)
    for i in range(len(q_words)):
        _row_distances(q_words[i], index.words_t, tmp, out[i], part)
    return out


# ----------------------------------------------------------------- scan
def _threads(backend, nq):
    """Query chunks run in parallel (numba threads; the numpy path ignores it)."""
    return max(1, min(nq, numba.get_num_threads())) if backend == "numba" else 1


def hamming_scan(query_words, index, depth, query_labels=None, histograms=False, backend=None):
    """Rank the whole database for a block of queries; return a ScanResult.

    ``query_words``: uint64 [b, W] (``packed_to_words``). ``depth``: how many
    top items to return (1..len(index)). ``query_labels``: multi-hot [b, C]
    (the index must hold database labels): also return the relevance of the
    top items. ``histograms`` (needs labels): also return, per query, the
    number of items and of relevant items at every distance
    0..index.max_distance (the numbers behind PR curves and tie-aware AP).
    """
    backend = resolve_backend(backend)
    query_words = np.ascontiguousarray(query_words, dtype=np.uint64)
    nq, n = len(query_words), index.size
    if query_words.ndim != 2 or query_words.shape[1] != index.words_t.shape[0]:
        raise ValueError("queries and database have different code lengths")
    if not 1 <= depth <= n:
        raise ValueError(f"depth must be in 1..{n}, got {depth}")
    with_labels = query_labels is not None
    if with_labels:
        if index.label_bitmaps is None:
            raise ValueError("query labels given but the index has no database labels")
        q_labels = np.ascontiguousarray(np.asarray(query_labels) > 0, dtype=np.uint8)
        if q_labels.shape != (nq, index.num_classes):
            raise ValueError(f"query labels have shape {q_labels.shape}, "
                             f"expected {(nq, index.num_classes)}")
        bitmaps = index.label_bitmaps
    elif histograms:
        raise ValueError("histograms need query labels")
    else:
        q_labels = np.zeros((nq, 0), np.uint8)
        bitmaps = np.zeros((0, (n + 63) // 64), np.uint64)

    nbins = index.max_distance + 1
    indices = np.empty((nq, depth), np.int64)
    distances = np.empty((nq, depth), distance_dtype(index.max_distance))
    relevant = np.zeros((nq, depth if with_labels else 0), np.bool_)
    hist = np.zeros((nq, nbins if histograms else 0), np.int64)
    rel_hist = np.zeros((nq, nbins if histograms else 0), np.int64)
    if nq:
        _scan_kernel(backend)(query_words, index.words_t, depth, q_labels, bitmaps, histograms, nbins,
               _threads(backend, nq), indices, distances, relevant, hist, rel_hist)
    return ScanResult(indices, distances, relevant if with_labels else None,
                      hist if histograms else None, rel_hist if histograms else None)


# Both kernels run the same algorithm per query (see the module docstring):
# 1. distances to every database item;
# 2. the threshold t = smallest distance with #(dist <= t) >= depth: from the
#    full histogram when it is wanted, else by counting #(dist <= g) for g
#    walking from a guess read off a histogram of every (n/4096)-th item
#    (usually 2 vectorised counts);
# 3. candidates dist <= t in index order, placed by distance (counting sort;
#    the numpy kernel uses the equivalent stable sort), keeping the first
#    depth - #(dist < t) items at distance t;
# 4. relevance of the top items from the query's OR-ed class bitmaps.

_numpy_threshold = threshold_walk(lambda dist, g: np.count_nonzero(dist <= g))


def _relevance_mask(q_labels, bitmaps):
    classes = np.flatnonzero(q_labels)
    if len(classes) == 0:
        return np.zeros(bitmaps.shape[1], np.uint64)
    return np.bitwise_or.reduce(bitmaps[classes], axis=0)


def _mask_bits(mask, items):
    return ((mask[items >> 6] >> (items & 63).astype(np.uint64)) & np.uint64(1)).astype(np.bool_)


def _scan_numpy(q_words, words_t, depth, q_labels, bitmaps, histograms, nbins, nchunks,
                indices, distances, relevant, hist, rel_hist):
    n = words_t.shape[1]
    tmp = np.empty(n, np.uint64)
    part = np.empty(n, np.uint8)
    dist = np.empty(n, distances.dtype)
    for i in range(len(q_words)):
        _row_distances(q_words[i], words_t, tmp, dist, part)
        if q_labels.shape[1]:
            mask = _relevance_mask(q_labels[i], bitmaps)
        if histograms:
            rel = np.unpackbits(mask.astype("<u8").view(np.uint8), count=n, bitorder="little")
            joint = np.bincount(dist.astype(np.intp) * 2 + rel, minlength=2 * nbins)
            joint = joint.reshape(-1, 2)
            hist[i] = joint.sum(axis=1)
            rel_hist[i] = joint[:, 1]
            t = int(np.searchsorted(np.cumsum(hist[i]), depth))
        else:
            stride = max(1, n // 4096)
            sampled = np.cumsum(np.bincount(dist[::stride], minlength=nbins)) * stride
            guess = min(int(np.searchsorted(sampled, depth)), nbins - 1)
            t = _numpy_threshold(dist, depth, guess, nbins - 1)
        cand = np.flatnonzero(dist <= t)
        top = cand[np.argsort(dist[cand], kind="stable")[:depth]]
        indices[i] = top
        distances[i] = dist[top]
        if q_labels.shape[1]:
            relevant[i] = _mask_bits(mask, top)


# ----------------------------------------------------------------- search
def hamming_topk(packed_queries, packed_db, k, backend=None, block=None):
    """Exact top-k by Hamming distance, ties in database-index order.

    ``packed_queries``: uint8 [nq, nbytes]; ``packed_db``: uint8 [n, nbytes]
    or a ``HammingIndex`` (reuse it for repeated searches). ``k`` is capped at
    the database size. Returns (indices int64 [nq, k], distances [nq, k]).
    Queries are processed in blocks, so memory is O(block * k + n).
    """
    index = _as_index(packed_db)
    q_words = packed_to_words(_check_width(packed_queries, index))
    if index.size == 0:
        raise ValueError("the database is empty")
    k = min(int(k), index.size)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    block = block or max(1, min(1024, (1 << 22) // k))
    indices = np.empty((len(q_words), k), np.int64)
    distances = np.empty((len(q_words), k), distance_dtype(index.max_distance))
    backend = resolve_backend(backend)
    for start in range(0, len(q_words), block):
        res = hamming_scan(q_words[start:start + block], index, k, backend=backend)
        indices[start:start + block] = res.indices
        distances[start:start + block] = res.distances
    return indices, distances
