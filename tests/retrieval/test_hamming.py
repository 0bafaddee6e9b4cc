"""utils/retrieval/hamming.py: packing, distances and top-k search against brute force,
every available backend (numpy always; numba when installed), ties included."""
import subprocess
import sys

import numpy as np
import pytest

from support.backends import backend_params
from support.paths import REPO
from utils.retrieval import hamming

BACKENDS = backend_params()  # numba skipped, with the reason, when missing
INSTALLED = hamming.available_backends()


def random_codes(rng, n, bit):
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, bit))


def brute_distances(q, d):
    return (q.shape[1] - q.astype(np.int64) @ d.astype(np.int64).T) // 2


def brute_topk(q, d, k):
    dist = brute_distances(q, d)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]    # ties by database index
    return order, np.take_along_axis(dist, order, axis=1)


@pytest.mark.parametrize("bit", [1, 8, 13, 16, 64, 70, 300])
def test_pack_unpack_round_trip(bit):
    codes = random_codes(np.random.default_rng(bit), 37, bit)
    packed = hamming.pack_codes(codes)
    assert packed.dtype == np.uint8 and packed.shape == (37, (bit + 7) // 8)
    assert np.array_equal(hamming.unpack_codes(packed, bit), codes)


def test_zero_packs_as_plus_one():
    codes = np.array([[0.0, -0.5, 2.0, -1.0]])
    assert np.array_equal(hamming.unpack_codes(hamming.pack_codes(codes), 4), [[1, -1, 1, -1]])


def test_popcount_fallback_matches():
    x = np.random.default_rng(0).integers(0, 2**63, size=1000, dtype=np.uint64)
    x[:3] = [0, np.uint64(2**64 - 1), 1]
    expected = np.array([bin(int(v)).count("1") for v in x])
    assert np.array_equal(hamming._popcount_swar(x), expected)
    assert np.array_equal(hamming._popcount(x), expected)


def test_numpy_path_without_bitwise_count(monkeypatch):
    """numpy < 2 has no np.bitwise_count: the SWAR popcount gives the same results."""
    rng = np.random.default_rng(4)
    q, d = random_codes(rng, 6, 70), random_codes(rng, 300, 70)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    idx, dist = hamming.hamming_topk(hamming.pack_codes(q), hamming.pack_codes(d), 40,
                                     backend="numpy")
    ref_idx, ref_dist = brute_topk(q, d, 40)
    assert np.array_equal(idx, ref_idx) and np.array_equal(dist, ref_dist)


@pytest.mark.parametrize("bit", [8, 16, 48, 64, 70, 300])
def test_distances_equal_brute_force(bit):
    rng = np.random.default_rng(bit)
    q, d = random_codes(rng, 9, bit), random_codes(rng, 51, bit)
    dist = hamming.hamming_distances(hamming.pack_codes(q), hamming.pack_codes(d))
    assert dist.dtype == (np.uint8 if bit <= 255 else np.uint16)
    assert np.array_equal(dist, brute_distances(q, d))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bit,n,k", [(8, 300, 1), (8, 300, 37), (8, 300, 300), (4, 50, 20),
                                     (16, 999, 100), (64, 2000, 500), (70, 500, 64),
                                     (300, 200, 17)])
def test_topk_equals_stable_argsort(backend, bit, n, k):
    rng = np.random.default_rng(n + bit)
    q, d = random_codes(rng, 23, bit), random_codes(rng, n, bit)
    d[5] = d[7] = q[0]                                 # exact duplicates: ties at distance 0
    idx, dist = hamming.hamming_topk(hamming.pack_codes(q), hamming.pack_codes(d), k,
                                     backend=backend, block=4)
    ref_idx, ref_dist = brute_topk(q, d, k)
    assert idx.dtype == np.int64 and idx.shape == (23, k)
    assert np.array_equal(idx, ref_idx)
    assert np.array_equal(dist, ref_dist)
    if bit > 8 and k >= 2:                             # no chance duplicates at 16+ bits
        assert list(idx[0, :2]) == [5, 7]


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_caps_k_and_reuses_index(backend):
    rng = np.random.default_rng(1)
    q, d = random_codes(rng, 3, 8), random_codes(rng, 10, 8)
    index = hamming.HammingIndex(hamming.pack_codes(d))
    idx, _ = index.topk(hamming.pack_codes(q), 50, backend=backend)
    assert np.array_equal(idx, brute_topk(q, d, 10)[0])
    one, _ = index.topk(hamming.pack_codes(q[:1]), 3, backend=backend)   # a single query
    assert np.array_equal(one, brute_topk(q[:1], d, 3)[0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("histograms", [False, True])
def test_scan_relevance_and_histograms(backend, histograms):
    rng = np.random.default_rng(7)
    bit, n, classes, depth = 8, 400, 70, 150           # 70 classes: two bitmap words
    q, d = random_codes(rng, 30, bit), random_codes(rng, n, bit)
    ql = (rng.random((30, classes)) < 0.05).astype(np.float32)
    dl = (rng.random((n, classes)) < 0.05).astype(np.float32)
    ql[0] = 0                                          # a query without labels
    index = hamming.HammingIndex(hamming.pack_codes(d), labels=dl)
    res = hamming.hamming_scan(hamming.packed_to_words(hamming.pack_codes(q)), index, depth,
                               query_labels=ql, histograms=histograms, backend=backend)
    dist = brute_distances(q, d)
    relevant = (ql @ dl.T) > 0
    order, _ = brute_topk(q, d, depth)
    assert np.array_equal(res.indices, order)
    assert np.array_equal(res.relevant, np.take_along_axis(relevant, order, axis=1))
    assert not res.relevant[0].any()
    if histograms:
        for i in range(30):
            assert np.array_equal(res.hist[i], np.bincount(dist[i], minlength=bit + 1))
            assert np.array_equal(res.rel_hist[i],
                                  np.bincount(dist[i], weights=relevant[i], minlength=bit + 1))
    else:
        assert res.hist is None and res.rel_hist is None


def test_backends_agree_exactly_on_correlated_codes():
    """Whichever backends are installed give the same integers as brute force
    (with numba missing this still checks the numpy path)."""
    rng = np.random.default_rng(3)
    centres = random_codes(rng, 5, 32)
    d = centres[rng.integers(0, 5, 3000)] * np.where(rng.random((3000, 32)) < 0.1, -1, 1)
    q = centres[rng.integers(0, 5, 40)] * np.where(rng.random((40, 32)) < 0.1, -1, 1)
    ref = brute_topk(q, d, 700)
    for backend in INSTALLED:
        idx, dist = hamming.hamming_topk(hamming.pack_codes(q), hamming.pack_codes(d), 700,
                                         backend=backend)
        assert np.array_equal(idx, ref[0]) and np.array_equal(dist, ref[1]), backend


def test_backend_selection(monkeypatch):
    assert hamming.resolve_backend("numpy") == "numpy"
    monkeypatch.setenv("HASHNET_HAMMING_BACKEND", "numpy")
    assert hamming.resolve_backend() == "numpy"
    monkeypatch.delenv("HASHNET_HAMMING_BACKEND")
    assert hamming.resolve_backend() == ("numba" if hamming.numba is not None else "numpy")
    assert hamming.resolve_backend("auto") == hamming.resolve_backend()
    with pytest.raises(ValueError):
        hamming.resolve_backend("cuda")
    monkeypatch.setattr(hamming, "numba", None)         # as on a machine without numba
    assert hamming.resolve_backend() == "numpy"
    assert hamming.available_backends() == ("numpy",)
    with pytest.raises(ValueError, match="not installed"):
        hamming.resolve_backend("numba")


def test_bad_inputs():
    rng = np.random.default_rng(0)
    p8 = hamming.pack_codes(random_codes(rng, 4, 8))
    p16 = hamming.pack_codes(random_codes(rng, 4, 16))
    with pytest.raises(ValueError, match="code lengths"):
        hamming.hamming_topk(p8, p16, 2)
    with pytest.raises(ValueError, match="uint8"):
        hamming.hamming_topk(random_codes(rng, 4, 8), p8, 2)
    with pytest.raises(ValueError):
        hamming.hamming_topk(p8, p8, 0)
    with pytest.raises(ValueError, match="no database labels"):
        hamming.hamming_scan(hamming.packed_to_words(p8), hamming.HammingIndex(p8), 2,
                             query_labels=np.ones((4, 3)))


def test_bench_search_runs_small():
    out = subprocess.run([sys.executable, "benchmarks/bench_search.py", "--database", "20000",
                          "--queries", "50", "--repeat", "5", "--float-queries", "5",
                          "--no-faiss"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "distances equal the float method's: True" in out.stdout
    assert "distances equal the float method's: False" not in out.stdout


@pytest.mark.parametrize("value, fragment", [
    ("nmba", "HASHNET_HAMMING_BACKEND='nmba' is not one of auto, numpy, numba"),
    ("NUMPY", "HASHNET_HAMMING_BACKEND='NUMPY' is not one of"),
])
def test_a_bad_backend_variable_is_one_line_before_any_work(monkeypatch, tmp_path, value, fragment):
    """Checked where the entry points start (here predict.py's flag check),
    not at the first search."""
    from deploy.cli import resolve_retrieval_args
    from support.errors import user_error
    import types
    monkeypatch.setenv("HASHNET_HAMMING_BACKEND", value)
    args = types.SimpleNamespace(dataset="coco", num_class=None, list_dir=str(tmp_path),
                                 data_path=str(tmp_path), crop_size=224, resize_size=None,
                                 arch=None, index="exact", img=str(tmp_path / "q.jpg"),
                                 save_path=str(tmp_path / "out"))
    assert fragment in user_error(resolve_retrieval_args, args)
