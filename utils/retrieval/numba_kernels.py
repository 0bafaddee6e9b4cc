"""The compiled kernels (optional: ``pip install numba``), numba twins of
the numpy code in utils/retrieval/hamming.py (the Hamming scan) and utils/retrieval/metrics.py
(the AP sums). Each computes the same integers, or adds the same floats in
the same order, as its numpy twin, so the two backends agree bit for bit.
utils.retrieval.hamming imports this module only when numba is installed and chosen.
"""
import llvmlite.ir as _llvm_ir
import numba
import numpy as np
from numba.core import types as _nb_types
from numba.extending import intrinsic as _nb_intrinsic

from utils.retrieval.threshold import threshold_walk

# ----------------------------------------------------------------- Hamming scan
@_nb_intrinsic
def _ctpop(typingctx, x):
    """Population count of a uint64 (llvm.ctpop: POPCNT on x86-64)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return _nb_types.uint64(_nb_types.uint64), codegen


@_nb_intrinsic
def _cttz(typingctx, x):
    """Trailing zero count of a non-zero uint64 (llvm.cttz: TZCNT)."""
    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], _llvm_ir.Constant(_llvm_ir.IntType(1), 0))
    return _nb_types.uint64(_nb_types.uint64), codegen


_ONE = np.uint64(1)


@numba.njit(cache=True, inline="always")
def _nb_distances(q, words_t, dist):
    n_words, n = words_t.shape
    x = q[0]
    row = words_t[0]
    for j in range(n):
        dist[j] = _ctpop(x ^ row[j])
    for w in range(1, n_words):
        x = q[w]
        row = words_t[w]
        for j in range(n):
            dist[j] += _ctpop(x ^ row[j])


@numba.njit(cache=True)
def _nb_count_le(dist, g):
    s = 0
    for j in range(dist.shape[0]):
        s += dist[j] <= g
    return s


# The same threshold walk as the numpy kernel's, compiled with the loop count.
_nb_threshold = numba.njit(cache=True)(threshold_walk(_nb_count_le))


@numba.njit(cache=True)
def _nb_compact(dist, t, depth, cand):
    """cand[:m] = ascending indices j with dist[j] < t, and with dist[j] == t
    while fewer than depth - #(dist < t so far) of those were taken: a
    superset of the top-depth items, at most ~2 depth long. Returns m.
    Per 64 items: a bit mask from a vectorised compare, then its set bits."""
    n = dist.shape[0]
    n64 = n - n % 64
    m = 0
    below = 0
    ties = 0
    limit = t                              # t - 1 once no more ties are needed
    for j0 in range(0, n64, 64):
        if ties >= depth - below:
            limit = t - 1
        bits = np.uint64(0)
        for b in range(64):
            bits |= np.uint64(dist[j0 + b] <= limit) << np.uint64(b)
        while bits:
            j = j0 + np.int64(_cttz(bits))
            bits &= bits - _ONE
            d = dist[j]
            below += d < t
            keep = (d < t) or (ties < depth - below)
            ties += (d == t) and keep
            cand[m] = j
            m += keep
    for j in range(n64, n):
        d = dist[j]
        below += d < t
        keep = (d < t) or (d == t and ties < depth - below)
        ties += (d == t) and keep
        cand[m] = j
        m += keep
    return m


@numba.njit(cache=True)
def _nb_bit(mask, j):
    return (mask[j >> 6] >> np.uint64(j & 63)) & _ONE


@numba.njit(cache=True, nogil=True)
def _nb_scan_chunk(lo, hi, q_words, words_t, depth, q_labels, bitmaps, histograms, nbins,
                   indices, distances, relevant, hist, rel_hist):
    """Queries lo..hi-1, serially, with one set of scratch buffers."""
    n = words_t.shape[1]
    n_classes = q_labels.shape[1]
    dist = np.empty(n, distances.dtype)
    cand = np.empty(n, np.int64)
    mask = np.zeros(bitmaps.shape[1], np.uint64)
    counts = np.empty((4, 2 * nbins), np.int64)
    total = np.zeros(nbins, np.int64)
    pos = np.empty(nbins, np.int64)
    for i in range(lo, hi):
        _nb_distances(q_words[i], words_t, dist)
        if n_classes:
            mask[:] = 0
            for cls in range(n_classes):
                if q_labels[i, cls]:
                    row = bitmaps[cls]
                    for w in range(mask.shape[0]):
                        mask[w] |= row[w]
        if histograms:
            # (distance, relevant) histogram, 4 interleaved copies
            counts[:] = 0
            for j in range(n):
                counts[j & 3, 2 * np.int64(dist[j]) + np.int64(_nb_bit(mask, j))] += 1
            start = 0
            t = -1
            for d in range(nbins):
                r = counts[0, 2 * d + 1] + counts[1, 2 * d + 1] \
                    + counts[2, 2 * d + 1] + counts[3, 2 * d + 1]
                total[d] = counts[0, 2 * d] + counts[1, 2 * d] \
                    + counts[2, 2 * d] + counts[3, 2 * d] + r
                hist[i, d] = total[d]
                rel_hist[i, d] = r
                start += total[d]
                if t < 0 and start >= depth:
                    t = d
        else:
            # guess t from every stride-th item, then count exactly
            stride = max(1, n // 4096)
            total[:] = 0
            for j in range(0, n, stride):
                total[dist[j]] += 1
            t = 0
            start = total[0] * stride
            while start < depth and t < nbins - 1:
                t += 1
                start += total[t] * stride
            t = _nb_threshold(dist, depth, t, nbins - 1)
        m = _nb_compact(dist, t, depth, cand)
        total[:t + 1] = 0
        for p in range(m):
            total[dist[cand[p]]] += 1
        # counting sort: by distance, ties in index order; only the
        # first depth - #(dist < t) items at distance t fit
        start = 0
        for d in range(t + 1):
            pos[d] = start
            start += total[d]
        for p in range(m):
            j = cand[p]
            d = dist[j]
            o = pos[d]
            if o < depth:
                indices[i, o] = j
                distances[i, o] = d
                pos[d] = o + 1
        if n_classes:
            for p in range(depth):
                relevant[i, p] = _nb_bit(mask, indices[i, p]) != 0


@numba.njit(parallel=True, cache=True, nogil=True)
def _nb_scan_parallel(q_words, words_t, depth, q_labels, bitmaps, histograms, nbins,
                      nchunks, indices, distances, relevant, hist, rel_hist):
    """One contiguous chunk of queries per thread. The work is a call to the
    serial function: code compiled inside a prange body runs slower."""
    nq = q_words.shape[0]
    for c in numba.prange(nchunks):
        _nb_scan_chunk(c * nq // nchunks, (c + 1) * nq // nchunks, q_words, words_t,
                       depth, q_labels, bitmaps, histograms, nbins, indices, distances,
                       relevant, hist, rel_hist)


def scan(q_words, words_t, depth, q_labels, bitmaps, histograms, nbins, nchunks,
         indices, distances, relevant, hist, rel_hist):
    """The numba kernel of utils.retrieval.hamming.hamming_scan (same arguments as
    its numpy kernel)."""
    if nchunks > 1:
        _nb_scan_parallel(q_words, words_t, depth, q_labels, bitmaps, histograms, nbins,
                          nchunks, indices, distances, relevant, hist, rel_hist)
    else:  # a single chunk (e.g. one query): no thread pool to wake
        _nb_scan_chunk(0, len(q_words), q_words, words_t, depth, q_labels, bitmaps,
                       histograms, nbins, indices, distances, relevant, hist, rel_hist)


# ----------------------------------------------------------------- AP sums
@numba.njit(cache=True, nogil=True, parallel=True)
def precision_sums(hits):
    """Sum over ranks p of hit_p * (hits up to p) / p per row of ranked
    relevance flags (utils/retrieval/metrics.py's AP numerator), in rank order."""
    out = np.zeros(hits.shape[0])
    for i in numba.prange(hits.shape[0]):   # rows are independent: same sums
        count = 0
        total = 0.0
        for p in range(hits.shape[1]):       # branch-free: a miss adds 0.0
            hit = np.int64(hits[i, p])
            count += hit
            total += hit * (count / (p + 1.0))
        out[i] = total
    return out
