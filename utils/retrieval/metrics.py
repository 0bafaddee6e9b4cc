"""Retrieval metrics (spec §5): mAP@K, tie-aware mAP, P/R within a Hamming
radius, the PR curve and precision@N.

Conventions (shared by every metric here):
  * codes are ±1 arrays [n, bit] (a value >= 0 counts as +1, so z == 0 -> +1);
    labels are multi-hot [n, C]; an item is relevant to a query when they
    share at least one label;
  * ranking: by Hamming distance, ties in database-index order (stable);
  * averages are over all queries; ``skip_no_relevant`` changes that for
    mAP only (see ``retrieval_metrics``).

The fast path packs the codes to bits and ranks each block of queries with
``utils.retrieval.hamming.hamming_scan`` (counting sort over the distances 0..bit, no
argsort, no dense float matrix). The kernel returns integers only (ranked
indices, relevance flags, per-distance histograms) and all the arithmetic on
them below is shared, so the numpy and numba backends give identical numbers.
``mean_average_precision_reference`` is the slow, literal definition (one
float dot product and one stable argsort per query), kept for tests and
benchmarks.
"""
import sys

import numpy as np

from utils.retrieval.hamming import HammingIndex, hamming_scan, pack_codes, packed_to_words, resolve_backend

DEFAULT_PRECISION_N = (1, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000,
                       1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000)


# ----------------------------------------------------------------- reference
def mean_average_precision_reference(query_codes, query_labels, db_codes, db_labels, topk=-1,
                                     skip_no_relevant=False):
    """mAP@K exactly as written in spec §5, one query at a time: distances
    (bit - q.d)/2 in float, a stable argsort (ties by database index), AP =
    (1/r) sum_i i/p_i over the r relevant items in the top K. Slow on purpose;
    the reference for ``mean_average_precision``."""
    qB = np.asarray(query_codes, dtype=np.float32)
    dB = np.asarray(db_codes, dtype=np.float32)
    qL = np.asarray(query_labels, dtype=np.float32)
    dL = np.asarray(db_labels, dtype=np.float32)
    bit, n_db = qB.shape[1], dB.shape[0]
    k = _effective_topk(topk, n_db)
    aps = []
    for i in range(len(qB)):
        ham = 0.5 * (bit - dB @ qB[i])
        order = np.argsort(ham, kind="stable")[:k]
        hits = (dL[order] @ qL[i]) > 0
        r = int(hits.sum())
        if r == 0:
            if not skip_no_relevant:
                aps.append(0.0)
            continue
        positions = np.flatnonzero(hits) + 1.0
        aps.append(float(np.mean(np.arange(1, r + 1) / positions)))
    return float(np.mean(aps)) if aps else 0.0


# ----------------------------------------------------------------- fast path
def mean_average_precision(query_codes, query_labels, db_codes, db_labels, topk=-1,
                           skip_no_relevant=False, block=None, backend=None, show_progress=False):
    """mAP@K over ±1 codes; relevant = shares a label; ties in database-index
    order; a query with no relevant item in the top K counts 0 unless
    ``skip_no_relevant``; topk -1 ranks the whole database. Same value as
    ``mean_average_precision_reference`` (to rounding, |diff| ~ 1e-16)."""
    res = _evaluate(query_codes, query_labels, db_codes, db_labels, topk, curves=False,
                    block=block, backend=backend, show_progress=show_progress)
    return _mean(res["ap"], res["has_relevant"] if skip_no_relevant else None)


def retrieval_metrics(query_codes, query_labels, db_codes, db_labels, topk, radius=2,
                      skip_no_relevant=False, show_progress=True, precision_n=None, block=None,
                      backend=None, skip_no_relevant_in_database=False):
    """All retrieval metrics from one pass over the Hamming distances per
    block of queries. Returns a JSON-serialisable dict:

    ``map``: mAP@K, ties by database index (spec §5).
    ``map_tie_aware``: the expected AP@K over uniformly random orders inside
        every group of equal distance (McSherry & Najork, ECIR 2008). When K
        cuts a tie group, the number X of relevant items among the part of the
        group inside the top K is hypergeometric; for each X the expected sum
        of precisions is exact and the AP denominator (relevant items in the
        top K) is fixed, so E[AP] = sum_x P(X=x) E[AP | X=x] is computed
        exactly (the tails of X with total probability < 1e-20 are dropped;
        harmonic numbers and log-factorials in extended precision; see
        ``_expected_precision_sum`` for the per-group formula). A query whose
        top K can hold no relevant item in any order has AP 0.
    ``precision_radius`` / ``recall_radius``: precision and recall of the
        items within Hamming distance <= ``radius``; a query that retrieves
        nothing within the radius has precision 0; a query with no relevant
        item in the database has recall 0.
    ``pr_curve``: the same per radius 0..bit, plus ``coverage``, the fraction
        of queries retrieving at least one item.
    ``precision_at_n``: precision of the first N ranked items (ties by
        index) for N in ``precision_n`` (default 1..5000, capped at the
        database size).
    ``skip_no_relevant``: mAP averages only queries with a relevant item in
        the top K; tie-aware mAP only queries that can have one in some tie
        order. Other metrics use all queries.
    ``skip_no_relevant_in_database``: mAP and tie-aware mAP average only
        queries with a relevant item anywhere in the database (the HashNet
        authors' caffe/models/predict/*/predict_parallel.py: such a query
        with none in its top K still counts 0).
    ``kernel``: the Hamming backend that ran ("numba" or "numpy").
    """
    db_size = np.asarray(db_codes).shape[0]
    grid = _precision_grid(precision_n, db_size)
    res = _evaluate(query_codes, query_labels, db_codes, db_labels, topk, curves=True,
                    depth_min=grid[-1], grid=grid, block=block,
                    backend=backend, show_progress=show_progress)
    bit = res["bit"]
    radius = int(min(max(radius, 0), bit))
    prec, rec = res["pr_precision"], res["pr_recall"]
    in_database = res["rel_hist_total"] > 0
    keep, keep_tie = ((res["has_relevant"], res["may_have_relevant"]) if skip_no_relevant else
                      (in_database, in_database) if skip_no_relevant_in_database else (None, None))
    return {
        "map": _mean(res["ap"], keep),
        "map_tie_aware": _mean(res["ap_tie"], keep_tie),
        "topk": res["topk"],
        "radius": radius,
        "precision_radius": float(prec[:, radius].mean()),
        "recall_radius": float(rec[:, radius].mean()),
        "pr_curve": {
            "radius": list(range(bit + 1)),
            "precision": [float(v) for v in prec.mean(axis=0)],
            "recall": [float(v) for v in rec.mean(axis=0)],
            "coverage": [float(v) for v in res["pr_coverage"].mean(axis=0)],
        },
        "precision_at_n": {
            "n": [int(n) for n in grid],
            "precision": [float(v) for v in res["p_at_n"].mean(axis=0)],
        },
        "bit": bit,
        "num_queries": int(len(res["ap"])),
        "num_database": int(db_size),
        "queries_without_relevant_in_topk": int((~res["has_relevant"]).sum()),
        "queries_without_relevant_in_database": int((~in_database).sum()),
        "skip_no_relevant": bool(skip_no_relevant),
        "skip_no_relevant_in_database": bool(skip_no_relevant_in_database),
        "kernel": res["kernel"],
    }


# ----------------------------------------------------------------- internals
def _effective_topk(topk, n_db):
    return n_db if topk is None or topk < 0 else min(int(topk), n_db)


def _mean(values, keep=None):
    values = values if keep is None else values[keep]
    return float(values.mean()) if len(values) else 0.0


def _precision_grid(precision_n, db_size):
    grid = DEFAULT_PRECISION_N if precision_n is None else precision_n
    grid = sorted({int(n) for n in grid if 1 <= int(n) <= db_size})
    cap = min(max(DEFAULT_PRECISION_N) if precision_n is None else max(precision_n), db_size)
    if not grid or grid[-1] < cap:
        grid.append(cap)
    return np.asarray(grid, dtype=np.int64)


def _check_inputs(query_codes, query_labels, db_codes, db_labels):
    q, d = np.asarray(query_codes), np.asarray(db_codes)
    ql, dl = np.asarray(query_labels), np.asarray(db_labels)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"codes must be [n, bit] with one bit count: {q.shape} vs {d.shape}")
    if ql.ndim != 2 or dl.ndim != 2 or ql.shape[1] != dl.shape[1]:
        raise ValueError(f"labels must be [n, C] with one class count: {ql.shape} vs {dl.shape}")
    if len(q) != len(ql) or len(d) != len(dl):
        raise ValueError("codes and labels disagree on the number of items: "
                         f"queries {len(q)}/{len(ql)}, database {len(d)}/{len(dl)}")
    if len(d) == 0 or len(q) == 0:
        raise ValueError("no queries or an empty database")
    return q, ql, d, dl


def _progress_bar(iterable, enabled, total, desc):
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="block", leave=False)


def _evaluate(query_codes, query_labels, db_codes, db_labels, topk, curves, depth_min=1,
              grid=None, block=None, backend=None, show_progress=False):
    """Per-query arrays of every metric, block by block."""
    q, ql, d, dl = _check_inputs(query_codes, query_labels, db_codes, db_labels)
    backend = resolve_backend(backend)
    bit, n_db, nq = q.shape[1], len(d), len(q)
    k = _effective_topk(topk, n_db)
    depth = max(k, depth_min)
    index = HammingIndex(pack_codes(d), labels=dl)
    q_words = packed_to_words(pack_codes(q))
    q_labels = np.asarray(ql) > 0
    # Fixed block size (not backend dependent): ~8M ranked entries per block.
    block = block or max(1, min(1024, (1 << 23) // depth))

    out = {"ap": np.zeros(nq), "has_relevant": np.zeros(nq, bool), "bit": bit, "topk": k,
           "kernel": backend}
    if curves:
        tables = _TieTables(n_db)
        out.update(ap_tie=np.zeros(nq), may_have_relevant=np.zeros(nq, bool),
                   pr_precision=np.zeros((nq, bit + 1)), pr_recall=np.zeros((nq, bit + 1)),
                   pr_coverage=np.zeros((nq, bit + 1)), p_at_n=np.zeros((nq, len(grid))),
                   rel_hist_total=np.zeros(nq, np.int64))
    starts = range(0, nq, block)
    for s in _progress_bar(starts, show_progress, len(starts), "mAP" if not curves else "metrics"):
        e = min(s + block, nq)
        scan = hamming_scan(q_words[s:e], index, depth, q_labels[s:e],
                            histograms=curves, backend=backend)
        hits = scan.relevant
        out["ap"][s:e], r = _average_precision(hits[:, :k], backend)
        out["has_relevant"][s:e] = r > 0
        if curves:
            counts = np.cumsum(hits[:, :grid[-1]], axis=1, dtype=np.int64)[:, grid - 1]
            out["p_at_n"][s:e] = counts / grid
            hist, rel_hist = scan.hist[:, :bit + 1], scan.rel_hist[:, :bit + 1]
            out["rel_hist_total"][s:e] = rel_hist.sum(axis=1)  # relevant in the database
            (out["pr_precision"][s:e], out["pr_recall"][s:e],
             out["pr_coverage"][s:e]) = _radius_curves(hist, rel_hist)
            out["ap_tie"][s:e], out["may_have_relevant"][s:e] = _tie_aware_ap(
                hist, rel_hist, k, tables)
    return out


def _average_precision(hits, backend):
    """AP per row of ranked relevance flags [b, K]: (1/r) sum_i i/p_i (0 when
    r = 0), the sum taken in rank order. Both versions add the same terms in
    the same order (adding 0.0 for a miss changes nothing), so they agree
    bit for bit."""
    r = hits.sum(axis=1)
    if backend == "numba":
        from utils.retrieval.numba_kernels import precision_sums
        sums = precision_sums(hits)
    else:
        terms = np.cumsum(hits, axis=1, dtype=np.float64)
        terms /= np.arange(1, hits.shape[1] + 1, dtype=np.float64)
        terms *= hits
        sums = np.cumsum(terms, axis=1)[:, -1] if hits.shape[1] else np.zeros(len(hits))
    return np.where(r > 0, sums / np.maximum(r, 1), 0.0), r


def _radius_curves(hist, rel_hist):
    """Per query and radius 0..bit: precision, recall and "retrieved anything"."""
    retrieved = np.cumsum(hist, axis=1)
    rel_retrieved = np.cumsum(rel_hist, axis=1)
    relevant = rel_retrieved[:, -1:]
    precision = np.where(retrieved > 0, rel_retrieved / np.maximum(retrieved, 1), 0.0)
    recall = np.where(relevant > 0, rel_retrieved / np.maximum(relevant, 1), 0.0)
    return precision, recall, (retrieved > 0).astype(np.float64)


class _TieTables:
    """Harmonic numbers H(i) and log-factorials log(i!) for i = 0..n, in
    extended precision (np.longdouble; plain float64 where the platform has no
    wider type), for the tie-aware AP."""

    def __init__(self, n):
        i = np.arange(1, n + 1, dtype=np.longdouble)
        self.harmonic = np.concatenate([[0], np.cumsum(1 / i)]).astype(np.longdouble)
        self.log_factorial = np.concatenate([[0], np.cumsum(np.log(i))]).astype(np.longdouble)

    def harmonic_sums(self, a, n):
        """S0 = sum_{j=1..n} 1/(a+j) and S1 = sum_{j=1..n} (j-1)/(a+j)."""
        s0 = self.harmonic[a + n] - self.harmonic[a]
        s1 = np.where(n > 1, n - (a + 1) * s0, 0)
        return s0, s1

    def log_choose(self, n, k):
        lf = self.log_factorial
        return lf[n] - lf[k] - lf[n - k]


def _expected_precision_sum(tables, a, before, n, k):
    """E[sum of precision@p over the relevant items] of a tie group holding
    positions a+1..a+n, with k relevant items in uniformly random order and
    ``before`` relevant items ranked ahead of it. With P(rel at a+j) = k/n and
    E[#relevant in a+1..a+j | rel at a+j] = 1 + (j-1)(k-1)/(n-1):
        (k/n) * sum_j [before + 1 + (j-1)(k-1)/(n-1)] / (a+j)."""
    s0, s1 = tables.harmonic_sums(a, n)
    safe_n = np.maximum(n, 1)
    slope = np.where(n > 1, (k - 1) / np.maximum(n - 1, 1), 0)
    return np.where(k > 0, (k / safe_n) * ((before + 1) * s0 + slope * s1), 0)


def _tie_aware_ap(hist, rel_hist, k, tables):
    """Expected AP@k per query from the per-distance counts (see retrieval_metrics)."""
    b = len(hist)
    rows = np.arange(b)
    cum = np.cumsum(hist, axis=1)
    ahead = cum - hist                                    # items ranked before each group
    rel_ahead = np.cumsum(rel_hist, axis=1) - rel_hist
    cut = np.argmax(cum >= k, axis=1)                     # the group holding position k
    whole = np.arange(hist.shape[1])[None, :] < cut[:, None]
    group = _expected_precision_sum(tables, ahead, rel_ahead, hist, rel_hist)
    full_sum = np.where(whole, group, 0).sum(axis=1)      # groups entirely in the top k

    n, kr = hist[rows, cut], rel_hist[rows, cut]          # the cut group: n items, kr relevant
    a, before = ahead[rows, cut], rel_ahead[rows, cut]
    m = k - a                                             # of which the first m are in the top k
    lo = np.maximum(0, m - (n - kr))
    hi = np.minimum(kr, m)
    may_have_relevant = (before + hi) > 0
    # X ~ Hypergeometric(n, kr, m); P(|X - E X| >= s) <= 2 exp(-2 s^2 / m) < 1e-20 for s = 5 sqrt(m)
    spread = np.ceil(5 * np.sqrt(m)).astype(np.int64)
    centre = m * kr / np.maximum(n, 1)
    lo = np.maximum(lo, np.floor(centre).astype(np.int64) - spread)
    hi = np.minimum(hi, np.ceil(centre).astype(np.int64) + spread)
    sizes = hi - lo + 1
    owner = np.repeat(rows, sizes)
    x = lo[owner] + np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    no, ko, mo = n[owner], kr[owner], m[owner]
    log_p = (tables.log_choose(ko, x) + tables.log_choose(no - ko, mo - x)
             - tables.log_choose(no, mo))
    p = np.exp(log_p)
    partial = _expected_precision_sum(tables, a[owner], before[owner], mo, x)
    denom = before[owner] + x
    ap_x = np.where(denom > 0, (full_sum[owner] + partial) / np.maximum(denom, 1), 0)
    num = np.bincount(owner, weights=(p * ap_x).astype(np.float64), minlength=b)
    den = np.bincount(owner, weights=p.astype(np.float64), minlength=b)
    return num / den, may_have_relevant
