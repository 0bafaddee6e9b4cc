"""utils/retrieval/metrics.py metrics against brute-force definitions written out here:
mAP@K (ties by database index), tie-aware mAP (exhaustive expectation and
Monte Carlo), precision/recall within a Hamming radius, PR curve, P@N; the
authors' rule for queries with no relevant item in the database."""
import io
import itertools
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from support.backends import backend_params
from support.paths import REPO
from utils.retrieval import hamming
from utils.retrieval.metrics import (mean_average_precision, mean_average_precision_reference,
                                     retrieval_metrics)

BACKENDS = backend_params()  # numba skipped, with the reason, when missing


INSTALLED = hamming.available_backends()


def bf_distances(q, d):
    return (q.shape[1] - q.astype(np.int64) @ d.astype(np.int64).T) // 2


def bf_relevance(ql, dl):
    return (np.asarray(ql, np.float64) @ np.asarray(dl, np.float64).T) > 0


def bf_ap(hits):
    hits = np.asarray(hits, bool)
    r = hits.sum()
    if r == 0:
        return 0.0
    return float(np.mean(np.arange(1, r + 1) / (np.flatnonzero(hits) + 1)))


def bf_map(q, ql, d, dl, k, skip=False):
    dist, rel = bf_distances(q, d), bf_relevance(ql, dl)
    k = len(d) if k < 0 else min(k, len(d))
    aps = []
    for i in range(len(q)):
        hits = rel[i][np.argsort(dist[i], kind="stable")][:k]
        if skip and not hits.any():
            continue
        aps.append(bf_ap(hits))
    return float(np.mean(aps)) if aps else 0.0


def bf_tie_expected_ap(dist, rel, k):
    """Mean AP@k over every order of the items inside each tie group."""
    groups = [np.flatnonzero(dist == v) for v in np.unique(dist)]
    values = [bf_ap(rel[np.concatenate(combo)][:k])
              for combo in itertools.product(*[itertools.permutations(g) for g in groups])]
    return float(np.mean(values))


def bf_radius(dist, rel, r):
    inside = dist <= r
    precision = rel[inside].mean() if inside.any() else 0.0
    recall = rel[inside].sum() / rel.sum() if rel.any() else 0.0
    return precision, recall


def random_data(seed, nq, n, bit, classes=6, density=0.15):
    rng = np.random.default_rng(seed)
    q = rng.choice(np.array([-1, 1], np.int8), size=(nq, bit))
    d = rng.choice(np.array([-1, 1], np.int8), size=(n, bit))
    ql = (rng.random((nq, classes)) < density).astype(np.float32)
    dl = (rng.random((n, classes)) < density).astype(np.float32)
    ql[:3] = 0                               # queries with no relevant item at all
    return q, ql, d, dl


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 7, 50, 299, 300, 1000, -1])
def test_map_equals_brute_force_with_ties(backend, k):
    q, ql, d, dl = random_data(0, 40, 300, 8)          # 8 bits: ~35 items per distance
    for skip in (False, True):
        expected = bf_map(q, ql, d, dl, k, skip)
        assert abs(mean_average_precision(q, ql, d, dl, k, skip, backend=backend)
                   - expected) <= 1e-12
        assert abs(mean_average_precision_reference(q, ql, d, dl, k, skip) - expected) <= 1e-12
        assert abs(retrieval_metrics(q, ql, d, dl, k, skip_no_relevant=skip, show_progress=False,
                                     backend=backend)["map"] - expected) <= 1e-12


def hand_case():
    """4-bit codes. Query 0 is all +1; database distances 1, 0, 1, 2; items 0
    and 3 share its label. Query 1 shares no label with anything."""
    q = np.array([[1, 1, 1, 1], [1, 1, 1, 1]], np.int8)
    d = np.array([[-1, 1, 1, 1], [1, 1, 1, 1], [1, -1, 1, 1], [-1, -1, 1, 1]], np.int8)
    ql = np.array([[1, 0, 0], [0, 0, 1]], np.float32)
    dl = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    return q, ql, d, dl


@pytest.mark.parametrize("backend", BACKENDS)
def test_map_hand_computed(backend):
    q, ql, d, dl = hand_case()
    # ranking (distance, index): 1(0) 0(1) 2(1) 3(2) -> hits 0 1 0 1
    cases = {-1: 0.5 * (1 / 2 + 2 / 4), 4: 0.5 * (1 / 2 + 2 / 4), 3: 1 / 2, 2: 1 / 2, 1: 0.0}
    for k, ap in cases.items():
        assert mean_average_precision(q, ql, d, dl, k, backend=backend) == pytest.approx(
            ap / 2, abs=1e-15)                          # query 1 counts 0
        assert mean_average_precision(q, ql, d, dl, k, skip_no_relevant=True,
                                      backend=backend) == pytest.approx(ap, abs=1e-15)
    # the tie order matters: with the relevant tie member second, AP = (1/3 + 2/4)/2
    swapped = d[[2, 1, 0, 3]], dl[[2, 1, 0, 3]]
    assert mean_average_precision(q[:1], ql[:1], *swapped, -1, backend=backend) == \
        pytest.approx((1 / 3 + 2 / 4) / 2, abs=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tie_aware_hand_computed(backend):
    q, ql, d, dl = hand_case()
    both = (0.5 * (1 / 2 + 2 / 4) + 0.5 * (1 / 3 + 2 / 4)) / 2   # tie {0, 2} in either order
    cases = {-1: both, 4: both, 3: (1 / 2 + 1 / 3) / 2,
             2: 0.5 * (1 / 2) + 0.5 * 0.0,              # K cuts the tie: 1 of its 2 items
             1: 0.0}
    for k, expected in cases.items():
        m = retrieval_metrics(q[:1], ql[:1], d, dl, k, show_progress=False, backend=backend)
        assert m["map_tie_aware"] == pytest.approx(expected, abs=1e-12), k
    # skip_no_relevant: query 1 never has a relevant item; at K=1 neither query can
    m = retrieval_metrics(q, ql, d, dl, 2, skip_no_relevant=True, show_progress=False,
                          backend=backend)
    assert m["map_tie_aware"] == pytest.approx(0.25, abs=1e-12)
    assert m["map"] == pytest.approx(0.5, abs=1e-12)
    m = retrieval_metrics(q, ql, d, dl, 1, skip_no_relevant=True, show_progress=False,
                          backend=backend)
    assert m["map_tie_aware"] == 0.0 and m["map"] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_radius_and_curves_hand_computed(backend):
    q, ql, d, dl = hand_case()
    m = retrieval_metrics(q, ql, d, dl, -1, radius=1, precision_n=[1, 2, 3, 4],
                          show_progress=False, backend=backend)
    # query 0 per radius 0..4: precision 0, 1/3, 1/2, 1/2, 1/2; recall 0, 1/2, 1, 1, 1
    # query 1 (nothing relevant): 0 everywhere
    assert m["pr_curve"]["radius"] == [0, 1, 2, 3, 4]
    assert m["pr_curve"]["precision"] == pytest.approx([0, 1 / 6, 1 / 4, 1 / 4, 1 / 4])
    assert m["pr_curve"]["recall"] == pytest.approx([0, 1 / 4, 1 / 2, 1 / 2, 1 / 2])
    assert m["pr_curve"]["coverage"] == pytest.approx([1, 1, 1, 1, 1])
    assert (m["precision_radius"], m["recall_radius"]) == pytest.approx((1 / 6, 1 / 4))
    assert m["precision_at_n"] == {"n": [1, 2, 3, 4],
                                   "precision": pytest.approx([0, 1 / 4, 1 / 6, 1 / 4])}


@pytest.mark.parametrize("backend", BACKENDS)
def test_tie_aware_equals_exact_without_ties(backend):
    """Every database item at its own distance from the (identical) queries."""
    rng = np.random.default_rng(5)
    bit = 16
    flips = rng.permutation(bit + 1)                   # item i at distance flips[i]
    d = np.ones((bit + 1, bit), np.int8)
    for i, f in enumerate(flips):
        d[i, rng.permutation(bit)[:f]] = -1
    q = np.ones((8, bit), np.int8)
    ql = (rng.random((8, 4)) < 0.4).astype(np.float32)
    dl = (rng.random((bit + 1, 4)) < 0.4).astype(np.float32)
    for k in (1, 5, 16, -1):
        m = retrieval_metrics(q, ql, d, dl, k, show_progress=False, backend=backend)
        assert m["map_tie_aware"] == pytest.approx(m["map"], abs=1e-12)
        assert m["map"] == pytest.approx(bf_map(q, ql, d, dl, k), abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 2, 4, 6, 9])
def test_tie_aware_equals_exhaustive_expectation(backend, k):
    """Exact: the mean over every order inside every tie group (3-bit codes,
    9 items, so at most a few hundred orders)."""
    q, ql, d, dl = random_data(11, 12, 9, 3, classes=3, density=0.4)
    dist, rel = bf_distances(q, d), bf_relevance(ql, dl)
    expected = np.mean([bf_tie_expected_ap(dist[i], rel[i], k) for i in range(len(q))])
    m = retrieval_metrics(q, ql, d, dl, k, show_progress=False, backend=backend)
    assert m["map_tie_aware"] == pytest.approx(expected, abs=1e-12)


def test_tie_aware_matches_monte_carlo():
    """400 random tie orders on 8-bit codes (groups of ~10 items, K cutting
    groups): the Monte Carlo mean lies within 4 standard errors (+1e-12)."""
    q, ql, d, dl = random_data(2, 20, 400, 8)
    k, trials = 60, 400
    dist, rel = bf_distances(q, d), bf_relevance(ql, dl)
    rng = np.random.default_rng(0)
    maps = []
    for _ in range(trials):
        orders = [np.lexsort((rng.random(len(d)), dist[i])) for i in range(len(q))]
        maps.append(np.mean([bf_ap(rel[i][order][:k]) for i, order in enumerate(orders)]))
    tie = retrieval_metrics(q, ql, d, dl, k, show_progress=False)["map_tie_aware"]
    se = np.std(maps, ddof=1) / np.sqrt(trials)
    assert abs(tie - np.mean(maps)) <= 4 * se + 1e-12
    assert se > 0                                      # the ties did change AP


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bit,radius", [(8, 0), (8, 2), (16, 2), (16, 3)])
def test_radius_pr_curve_and_precision_at_n_equal_brute_force(backend, bit, radius):
    q, ql, d, dl = random_data(bit + radius, 30, 350, bit)
    grid = [1, 3, 10, 100, 350, 400]
    m = retrieval_metrics(q, ql, d, dl, 50, radius=radius, precision_n=grid, show_progress=False,
                          backend=backend)
    dist, rel = bf_distances(q, d), bf_relevance(ql, dl)
    curve = np.array([[bf_radius(dist[i], rel[i], r) for r in range(bit + 1)]
                      for i in range(len(q))])           # [query, radius, (P, R)]
    assert m["pr_curve"]["precision"] == pytest.approx(curve[:, :, 0].mean(axis=0), abs=1e-12)
    assert m["pr_curve"]["recall"] == pytest.approx(curve[:, :, 1].mean(axis=0), abs=1e-12)
    coverage = [(dist <= r).any(axis=1).mean() for r in range(bit + 1)]
    assert m["pr_curve"]["coverage"] == pytest.approx(coverage, abs=1e-12)
    assert m["precision_radius"] == pytest.approx(curve[:, radius, 0].mean(), abs=1e-12)
    assert m["recall_radius"] == pytest.approx(curve[:, radius, 1].mean(), abs=1e-12)
    if bit == 16 and radius == 2:
        assert 0 < coverage[radius] < 1                # some queries retrieve nothing
    ranked = np.array([rel[i][np.argsort(dist[i], kind="stable")] for i in range(len(q))])
    assert m["precision_at_n"]["n"] == [1, 3, 10, 100, 350]      # capped at the database
    assert m["precision_at_n"]["precision"] == pytest.approx(
        [ranked[:, :n].sum(axis=1).mean() / n for n in (1, 3, 10, 100, 350)], abs=1e-12)


def test_backends_give_identical_numbers():
    """Correlated 64-bit codes (realistic ties): every number of every
    installed backend equals the numpy backend's bit for bit, and the numpy
    mAP equals the slow reference."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bench_map import synthetic_coco
    qB, qL, dB, dL = synthetic_coco(120, 4000, 64, 20, 1.0, 3)
    results = {}
    for backend in INSTALLED:
        m = retrieval_metrics(qB, qL, dB, dL, 1000, show_progress=False, backend=backend)
        assert m.pop("kernel") == backend
        results[backend] = m
        # exact: the same backend's kernel on the same codes, in this process
        assert mean_average_precision(qB, qL, dB, dL, 1000, backend=backend) == m["map"]
    for m in results.values():   # exact: integer counts, then one shared float code, same order
        assert m == results["numpy"]
    assert abs(results["numpy"]["map"]
               - mean_average_precision_reference(qB, qL, dB, dL, 1000)) <= 1e-12


def test_metrics_dict_is_json_and_complete():
    q, ql, d, dl = random_data(4, 10, 60, 8)
    m = retrieval_metrics(q, ql, d, dl, 20, show_progress=False)
    # exact: JSON writes a float's shortest repr, which reads back to the same double
    assert json.loads(json.dumps(m)) == m
    for key in ("map", "map_tie_aware", "precision_radius", "recall_radius", "radius", "topk",
                "pr_curve", "precision_at_n", "kernel", "bit", "num_queries", "num_database"):
        assert key in m
    assert m["kernel"] in INSTALLED and m["bit"] == 8 and m["topk"] == 20
    assert m["precision_at_n"]["n"][-1] == 60


def test_engine_call_signature_still_works():
    q, ql, d, dl = random_data(6, 10, 80, 8)
    expected = bf_map(q, ql, d, dl, 30)
    positional = mean_average_precision(q, ql, d, dl, 30, False, 256)   # (..., skip, block)
    assert positional == pytest.approx(expected, abs=1e-12)
    assert mean_average_precision(q.astype(np.float32), ql, d.astype(np.float32), dl,
                                  topk=30) == pytest.approx(expected, abs=1e-12)


def test_bad_shapes_raise():
    q, ql, d, dl = random_data(6, 10, 80, 8)
    with pytest.raises(ValueError, match="bit"):
        mean_average_precision(q[:, :4], ql, d, dl, 10)
    with pytest.raises(ValueError, match="labels"):
        mean_average_precision(q, ql[:, :2], d, dl, 10)
    with pytest.raises(ValueError, match="number of items"):
        mean_average_precision(q, ql[:5], d, dl, 10)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(monkeypatch):
    q, ql, d, dl = random_data(6, 10, 80, 8)
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    retrieval_metrics(q, ql, d, dl, 10, block=2)
    assert fake.getvalue() == ""
    fake = _Terminal()
    monkeypatch.setattr(sys, "stderr", fake)
    retrieval_metrics(q, ql, d, dl, 10, block=2)
    assert "metrics" in fake.getvalue()
    fake = _Terminal()
    monkeypatch.setattr(sys, "stderr", fake)
    retrieval_metrics(q, ql, d, dl, 10, block=2, show_progress=False)
    assert fake.getvalue() == ""


def test_bench_map_runs_small():
    out = subprocess.run([sys.executable, "benchmarks/bench_map.py", "--queries", "60",
                          "--database", "3000", "--ref-queries", "60", "--topk", "500"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    diff = float(re.search(r"\|difference\|: (\S+)", out.stdout).group(1))
    assert diff <= 1e-12
    assert "speed-up (mAP)" in out.stdout and "peak" in out.stdout


def test_skip_no_relevant_in_database_is_the_authors_rule():
    """Query 0 has a relevant item only beyond its top 1, query 1 none in the
    database: the authors average query 0 (AP 0) and drop query 1; the top-K
    rule drops both."""
    db = np.array([[1, 1], [-1, -1], [1, -1]], dtype=np.int8)
    db_labels = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=np.float32)
    queries = np.array([[1, 1], [1, 1], [-1, -1]], dtype=np.int8)
    q_labels = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32)
    topk = 1
    ap = [mean_average_precision_reference(queries[i:i + 1], q_labels[i:i + 1], db, db_labels,
                                           topk) for i in range(3)]
    assert ap == [0.0, 0.0, 1.0]
    m = retrieval_metrics(queries, q_labels, db, db_labels, topk, show_progress=False,
                          skip_no_relevant_in_database=True)
    assert m["map"] == pytest.approx((ap[0] + ap[2]) / 2)
    assert m["queries_without_relevant_in_database"] == 1
    assert retrieval_metrics(queries, q_labels, db, db_labels, topk, show_progress=False,
                             skip_no_relevant=True)["map"] == pytest.approx(1.0)
