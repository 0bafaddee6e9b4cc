"""utils/retrieval/index/: every backend against the exact scan, incremental
add against a rebuild, save/load, the reuse policy of predict.py, and the
one-line errors (unreachable Milvus, wrong code length, other weights).

faiss and milvus-lite are optional (requirements-dev.txt installs them);
their cases are skipped, with the reason, where they are not installed.
Embedded Milvus writes only under tmp_path; the unreachable server is a
closed port on 127.0.0.1.
"""
import json
import os
import shutil
import re
import socket
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.centred_model import BIT, codes_of, make_checkpoint
from support.cli import TINY, run_predict_inprocess
from support.demo_set import database_batch, predict_argv, query_path
from support.errors import user_error
from support.fuzz import FUZZ, edited_text, json_like, mutated, one_line_or_result
from utils.retrieval.code_cache import make_fingerprint
from utils.retrieval.hamming import hamming_distances, hamming_topk, unpack_codes
from utils.retrieval.index import (BACKENDS, MISSING, build_index, create_index, load_index,
                                   open_saved_index, parse_spec, save_index)
from utils.retrieval.index import milvus as milvus_backend
from utils.retrieval.index.base import CodeIndex, rank_candidates
from utils.retrieval.index.milvus import MilvusIndex

HAVE_FAISS = BACKENDS["faiss"].installed()
HAVE_MILVUS = BACKENDS["milvus"].installed()
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss is not installed "
                                 "(pip install faiss-cpu, in requirements-dev.txt)")
needs_milvus = pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus / milvus-lite are not "
                                  "installed (requirements-dev.txt pins them)")
# parameters for this file's 6,000-code database (a kind not named here runs at its defaults)
SMALL = {"faiss:ivf": "nlist=32,nprobe=8", "faiss:multihash": "tables=4,hash_bits=16,nflip=2",
         "faiss:hnsw": "m=16,ef_search=256"}


def registered_specs(approximate):
    """Every registered backend's kinds (exact or approximate ones), skipped
    with the reason where the backend's packages are not installed."""
    for name, cls in BACKENDS.items():
        marks = [] if cls.installed() else [pytest.mark.skip(reason=f"{name} needs {cls.requires}")]
        for kind in cls.kinds:
            if (kind in cls.approximate) == approximate:
                spec = f"{name}:{kind}"
                yield pytest.param(",".join(filter(None, [spec, SMALL.get(spec)])), marks=marks)


EXACT_SPECS = list(registered_specs(approximate=False))
APPROXIMATE_SPECS = [p for p in registered_specs(approximate=True)
                     if not p.values[0].startswith("milvus:")]   # a Milvus server's kind


def clustered_codes(n, bit=64, centres=40, flip=0.06, seed=0):
    """Packed codes near a few random centres (each bit flipped with
    probability ``flip``), with exact duplicates: many ties, as from a model."""
    rng = np.random.default_rng(seed)
    centre_bits = rng.random((centres, bit)) < 0.5
    bits = centre_bits[rng.integers(0, centres, n)] ^ (rng.random((n, bit)) < flip)
    bits[n // 2:n // 2 + n // 10] = bits[n // 2]        # one big group of identical codes
    return np.packbits(bits, axis=1)


@pytest.fixture(scope="module")
def data():
    db = clustered_codes(6000)
    rng = np.random.default_rng(1)
    near = db[250::500] ^ np.packbits(rng.random((12, 64)) < 0.05, axis=1)   # not in the database
    return db, np.concatenate([db[::500], near])


def spec_dir(tmp_path, spec):
    return str(tmp_path / spec.split(",")[0].replace(":", "_"))


def true_distances(db, queries, ids):
    bits_db, bits_q = unpack_codes(db, 64), unpack_codes(queries, 64)
    return np.array([[(bits_db[i] != bits_q[r]).sum() for i in row] for r, row in enumerate(ids)])


def assert_index_equals_the_scan(spec, db, queries, k, directory):
    """``spec`` built over ``db`` answers ``queries`` item by item as the scan does."""
    index = build_index(spec, db, 64, directory)
    try:
        ids, dist = index.search(queries, k)
    finally:
        index.close()
    expected_ids, expected_dist = hamming_topk(queries, db, k)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(dist, expected_dist)


@pytest.mark.parametrize("spec", EXACT_SPECS)
def test_exact_backends_equal_the_scan_item_by_item(data, spec, tmp_path):
    db, queries = data
    assert_index_equals_the_scan(spec, db, queries, 50, spec_dir(tmp_path, spec))


@needs_milvus
def test_milvus_completes_a_tie_larger_than_its_top_k_bound(tmp_path):
    """17,000 identical codes: more than the 16,384 results Milvus returns per
    query, so the lowest ids at the k-th distance come from id windows."""
    db = clustered_codes(18000, flip=0.2)
    db[500:17500] = db[0]
    queries = np.stack([db[0], db[0] ^ np.uint8(1), db[17600]])
    assert_index_equals_the_scan("milvus:bin_flat", db, queries, 30, str(tmp_path / "m"))


class ReversedTiesMilvus(MilvusIndex):
    """The Milvus backend's own search logic over a stand-in server that
    breaks ties against the id order (highest id first) and honours the id
    filter and the 16,384-result bound like Milvus: no server needed."""

    def __init__(self, db):
        CodeIndex.__init__(self, 64, kind="bin_flat", uri="", collection="codes")
        self.db, self.count, self.next_id = db, len(db), len(db)

    def raw_search(self, queries, limit, where=""):
        assert limit <= milvus_backend.MAX_LIMIT
        bounds = [int(v) for v in re.findall(r"\d+", where)] or [0, self.count]
        ids = np.arange(bounds[0], min(bounds[1], self.count))
        dist = hamming_distances(queries, self.db[ids]).astype(np.int64)
        out_ids = np.full((len(queries), limit), MISSING, np.int64)
        out_d = np.full((len(queries), limit), 65, np.int64)
        for row in range(len(queries)):
            order = np.lexsort((-ids, dist[row]))[:limit]
            out_ids[row, :len(order)], out_d[row, :len(order)] = ids[order], dist[row][order]
        return out_ids, out_d


def test_milvus_tie_past_its_bound_is_completed_in_id_order():
    db = clustered_codes(20000, flip=0.2)
    db[300:19000] = db[0]          # 18,701 codes at distance 0 from db[0]: past the bound
    queries = np.stack([db[0], db[0] ^ np.uint8(1), db[19500]])
    ids, dist = ReversedTiesMilvus(db).search(queries, 40)
    expected_ids, expected_dist = hamming_topk(queries, db, 40)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(dist, expected_dist)


@pytest.mark.parametrize("spec", APPROXIMATE_SPECS)
def test_approximate_backends_rank_by_distance_then_id_with_high_recall(data, spec):
    db, queries = data
    k = 50
    ids, dist = build_index(spec, db, 64).search(queries, k)
    found = ids != MISSING
    # the distances are the true ones, and each row is ordered by (distance, id)
    truth = true_distances(db, queries, np.where(found, ids, 0))
    np.testing.assert_array_equal(dist[found], truth[found])
    for row_ids, row_d in zip(ids, dist):
        keys = list(zip(row_d[row_ids != MISSING], row_ids[row_ids != MISSING]))
        assert keys == sorted(keys)
    # recall with ties: a result counts when it is as near as the exact k-th
    kth = hamming_topk(queries, db, k)[1][:, -1:]
    recall = ((dist <= kth) & found).sum() / (k * len(queries))
    assert recall >= 0.9, recall


@pytest.mark.parametrize("spec", EXACT_SPECS + [pytest.param("faiss:ivf,nlist=32,nprobe=4",
                                                             marks=needs_faiss)])
def test_incremental_add_equals_a_rebuild(data, spec, tmp_path):
    """Codes added in three steps give the index a rebuild over all of them
    gives (IVF: its lists are trained on the first block, so the rebuild here
    is trained on that same block, then given everything)."""
    db, queries = data
    steps = create_index(spec, 64, spec_dir(tmp_path, spec) + "_steps")
    for part in np.split(db, [3000, 4500]):
        steps.add(part)
    rebuilt = create_index(spec, 64, spec_dir(tmp_path, spec) + "_all")
    if spec.startswith("faiss:ivf"):
        rebuilt.train(db[:3000])
    rebuilt.add(db)
    try:
        assert len(steps) == len(rebuilt) == len(db)
        for got, want in zip(steps.search(queries, 40), rebuilt.search(queries, 40)):
            np.testing.assert_array_equal(got, want)
    finally:
        steps.close()
        rebuilt.close()


@pytest.mark.parametrize("spec", EXACT_SPECS + APPROXIMATE_SPECS)
def test_save_load_round_trip(data, spec, tmp_path):
    db, queries = data
    directory = spec_dir(tmp_path, spec)
    index = build_index(spec, db, 64, directory)
    before = index.search(queries, 30)
    save_index(index, directory, {"bit": 64}, db)
    index.close()
    loaded, meta = load_index(directory)
    try:
        assert len(loaded) == len(db) and meta["count"] == len(db)
        assert type(loaded) is type(index) and loaded.params == index.params
        for got, want in zip(loaded.search(queries, 30), before):
            np.testing.assert_array_equal(got, want)
    finally:
        loaded.close()


def test_rank_candidates_orders_by_distance_then_id_and_pads():
    ids = np.array([[7, 3, 5, 3, MISSING], [2, 1, MISSING, MISSING, MISSING]])
    dist = np.array([[4, 4, 2, 4, 0], [1, 1, 0, 0, 0]])
    out_ids, out_d = rank_candidates(ids, dist, 4, bit=64)
    np.testing.assert_array_equal(out_ids, [[5, 3, 7, MISSING], [1, 2, MISSING, MISSING]])
    np.testing.assert_array_equal(out_d, [[2, 4, 4, 65], [1, 1, 65, 65]])


# ------------------------------------------------------------------ errors
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # closed when the socket is: nothing listens there


@needs_milvus
def test_unreachable_milvus_is_a_one_line_error():
    uri = f"http://127.0.0.1:{closed_port()}"
    message = user_error(create_index, f"milvus:bin_flat,uri={uri}", 64)
    assert "cannot reach Milvus at " + uri in message and "\n" not in message


@pytest.mark.parametrize("spec", EXACT_SPECS)
def test_wrong_code_length_is_a_one_line_error(data, spec, tmp_path):
    db, _ = data
    index = build_index(spec, db, 64, spec_dir(tmp_path, spec))
    try:
        message = user_error(index.search, np.zeros((2, 4), np.uint8), 10)
        assert "32-bit" in message and "64-bit" in message and "\n" not in message
        assert "32-bit" in user_error(index.add, np.zeros((2, 4), np.uint8))
    finally:
        index.close()


@pytest.mark.parametrize("spec, fragment", [
    ("annoy", "unknown backend 'annoy'"),
    ("faiss:lsh", "faiss has no kind 'lsh'"),
    ("faiss:ivf,nprobes=4", "'nprobes=4' is not a faiss:ivf parameter"),
    ("faiss:ivf,nprobe", "'nprobe' is not a faiss:ivf parameter"),
    ("faiss:hnsw,m=1", "m=1 must be >= 2"),          # faiss crashes the process on it
    ("faiss:ivf,nprobe=0", "nprobe=0 must be >= 1"),  # faiss aborts the search on it
    ("faiss:ivf,nprobe=4.5", "nprobe=4.5 must be an integer >= 1"),
    ("milvus:bin_flat,collection=../x", "collection=../x must be a Milvus collection name"),
])
def test_bad_spec_is_a_one_line_error(spec, fragment):
    message = user_error(parse_spec, spec)
    assert fragment in message and "\n" not in message


@needs_milvus
def test_embedded_milvus_refuses_ivf(tmp_path):
    assert "supports only bin_flat" in user_error(create_index, "milvus:bin_ivf_flat", 64,
                                                  str(tmp_path))


@needs_faiss
def test_ivf_with_more_lists_than_codes_is_a_one_line_error(data):
    assert "lower nlist" in user_error(build_index, "faiss:ivf,nlist=64", data[0][:20], 64)


@needs_milvus
def test_embedded_milvus_never_writes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim.db"
    victim.write_bytes(b"someone's data")
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "milvus.db").symlink_to(victim)
    message = user_error(create_index, "milvus:bin_flat", 64, str(tmp_path / "index"))
    assert "milvus.db is a symbolic link: refusing to write through it" in message
    assert victim.read_bytes() == b"someone's data"


# ------------------------------------------------------------------ reuse policy
def fingerprint(weights=b"w1", tmp_path=None):
    weights_file, list_file = tmp_path / "w.pdparams", tmp_path / "database.txt"
    weights_file.write_bytes(weights)
    list_file.write_text("a.jpg 1\n")
    return make_fingerprint([str(weights_file)], str(list_file), str(tmp_path), 64, 224, 256, "cpu")


@pytest.mark.parametrize("spec", ["faiss:flat", "faiss:hnsw"])
def test_saved_index_is_reused_extended_or_rebuilt(data, spec, tmp_path):
    if not HAVE_FAISS:
        pytest.skip("faiss is not installed (pip install faiss-cpu)")
    db, queries = data
    lines, where = [], str(tmp_path / "index")
    fp = fingerprint(tmp_path=tmp_path)
    open_saved_index(spec, db[:5000], fp, where, lines.append).close()
    assert "built" in lines[-1]
    reused = open_saved_index(spec, db[:5000], fp, where, lines.append)
    assert "loaded" in lines[-1] and "fingerprint matches" in lines[-1] and len(reused) == 5000
    # the list grew: only the new codes are added, and the index equals a rebuild
    grown = open_saved_index(spec, db, fp, where, lines.append)
    assert "grew by 1,000 codes" in lines[-1] and len(grown) == len(db)
    if spec == "faiss:flat":
        for got, want in zip(grown.search(queries, 40), hamming_topk(queries, db, 40)):
            np.testing.assert_array_equal(got, want)
    # other weights: a spec'd index is rebuilt with a line saying why ...
    other = fingerprint(b"w2", tmp_path)
    open_saved_index(spec, db, other, where, lines.append)
    assert "stale (the weights changed)" in lines[-2] and "built" in lines[-1]
    # ... a folder named by the user is refused in one line
    message = user_error(open_saved_index, where, db, fp, None, lines.append)
    assert "built for other inputs: the weights changed" in message and "\n" not in message
    # other codes under the same weights (the list changed, not by appending)
    changed = db.copy()
    changed[0] ^= 1
    assert "the database list changed" in user_error(open_saved_index, where, changed, other,
                                                     None, lines.append)


# ------------------------------------------------------------------ predict.py
@pytest.fixture(scope="module")
def weights(demo, tmp_path_factory):
    """Tiny-net weights: the cache's and the index's invariants hold whatever the net."""
    prefix = str(tmp_path_factory.mktemp("index_ckpt") / "hashnet_16")
    model = make_checkpoint(prefix, demo, arch=TINY[1])
    return prefix, codes_of(model, database_batch(demo))


@needs_faiss
def test_predict_grown_list_encodes_only_new_images_and_equals_a_rebuild(demo, weights, tmp_path,
                                                                        capsys):
    """predict.py --index faiss:flat on the first 40 database images, then on
    the full list: the code cache encodes only the appended images, the index
    adds only their codes, and the ranking equals a fresh run's."""
    prefix, codes = weights
    lists = tmp_path / "lists"
    shutil.copytree(demo.list_dir, lists)
    full = (lists / "database.txt").read_text().splitlines(keepends=True)
    (lists / "database.txt").write_text("".join(full[:40]))
    img = query_path(demo, 3)

    def run(save, *extra):
        argv = predict_argv(demo, prefix, img, save, "--index", "faiss:flat", "--topk", "20",
                            *TINY, *extra)
        argv[argv.index("--list-dir") + 1] = str(lists)
        return run_predict_inprocess(capsys, argv)

    first, out = run(tmp_path / "out")
    assert first["codes"] == "built" and "index: built faiss:flat over 40 codes" in out, out
    (lists / "database.txt").write_text("".join(full))
    grown, out = run(tmp_path / "out")
    added = len(full) - 40
    assert grown["codes"] == "extended", out
    assert f"the list adds {added:,} images to the 40 cached" in out, out
    assert f"index: the database grew by {added:,} codes" in out, out
    fresh, out = run(tmp_path / "fresh")
    assert fresh["codes"] == "built" and grown["topk"] == fresh["topk"]
    cache = os.path.join(tmp_path / "out", f"database_code_demo_{BIT}.npz")
    np.testing.assert_array_equal(unpack_codes(np.load(cache)["packed"], BIT), codes)
    # the saved index folder, named by the user, serves the next query as it is
    folder = os.path.join(tmp_path / "out", f"index_demo_{BIT}_faiss_flat")
    again, out = run(tmp_path / "out", "--index", folder)
    assert "fingerprint matches" in out and again["topk"] == fresh["topk"]


@needs_faiss
def test_predict_refuses_a_saved_index_of_other_weights(demo, weights, tmp_path, capsys):
    from support.cli import run_tiny
    from support.errors import assert_cli_error
    prefix, _ = weights
    img = query_path(demo, 3)
    run_predict_inprocess(capsys, predict_argv(demo, prefix, img, tmp_path / "a", "--index",
                                               "faiss:flat", *TINY))
    folder = os.path.join(tmp_path / "a", f"index_demo_{BIT}_faiss_flat")
    other = str(tmp_path / "other")
    make_checkpoint(other, demo, seed=1, arch=TINY[1])
    proc = run_tiny("predict.py", *predict_argv(demo, other, img, tmp_path / "b",
                                                "--index", folder, *TINY))
    assert_cli_error(proc, f"--index {folder}", "the weights changed")


@pytest.mark.parametrize("spec, module, install", [
    ("faiss:ivf", "faiss", "pip install faiss-cpu"),
    ("milvus:bin_flat", "pymilvus", 'pip install "pymilvus<2.6" milvus-lite==2.4.12'),
])
def test_missing_optional_package_is_a_one_line_error(spec, module, install, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)   # import raises ImportError
    message = user_error(create_index, spec, 64, str(tmp_path))
    assert install in message and "--index exact" in message and "\n" not in message


# ------------------------------------------------------------------ index.json
def saved_exact(folder, data, tmp_path):
    """A saved exact index of 300 codes in ``folder``: (packed, fingerprint, its index.json)."""
    packed, fp = data[0][:300], fingerprint(tmp_path=tmp_path)
    save_index(build_index("exact", packed, 64), str(folder), fp, packed)
    return packed, fp, json.loads((folder / "index.json").read_text())


@pytest.mark.parametrize("change, fragment", [
    ({"params": {"kind": "scan", "nlist": 4}}, "exact:scan takes the parameters none"),
    ({"count": "300"}, "count is not an integer"),
    ({"files": {"../codes.npy": "0" * 64}}, "files lists '../codes.npy'"),
    ({"backend": ["exact"]}, "backend is not a name"),
    ({"bit": 0}, "bit 0 or count 300 out of range"),
], ids=["unknown parameter", "count a string", "a file outside", "backend a list", "bit 0"])
def test_index_json_of_the_wrong_shape_is_one_line(data, tmp_path, change, fragment):
    folder = tmp_path / "index"
    packed, fp, meta = saved_exact(folder, data, tmp_path)
    (folder / "index.json").write_text(json.dumps(dict(meta, **change)))
    message = user_error(open_saved_index, str(folder), packed, fp, None)
    assert "cannot serve this database" in message and fragment in message


@needs_faiss
def test_a_saved_index_with_a_parameter_out_of_range_is_rebuilt(data, tmp_path):
    """index.json's parameters are checked like a spec's: an out-of-range
    value saved by an older version is never reused."""
    db, fp, where, lines = data[0][:2000], fingerprint(tmp_path=tmp_path), tmp_path / "ix", []
    open_saved_index("faiss:ivf,nlist=16", db, fp, str(where), lines.append).close()
    meta = json.loads((where / "index.json").read_text())
    meta["params"]["nprobe"] = 0
    (where / "index.json").write_text(json.dumps(meta))
    open_saved_index("faiss:ivf,nlist=16", db, fp, str(where), lines.append).close()
    assert "nprobe=0 must be >= 1" in lines[-2] and "built" in lines[-1]


def test_fuzzed_index_json_is_read_or_refused_in_one_line(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzzed_index")
    packed, fp, meta = saved_exact(folder, data, tmp_path_factory.mktemp("fp"))

    @FUZZ
    @given(text=json_like(meta) | mutated([json.dumps(meta).encode()]))
    def fuzz(text):
        (folder / "index.json").write_bytes(text if isinstance(text, bytes) else
                                            json.dumps(text).encode())
        index = one_line_or_result(open_saved_index, str(folder), packed, fp, None, lambda _: None)
        if index is not None:
            assert len(index) == len(packed)
            index.close()
    fuzz()


SPEC_SEEDS = ["faiss:ivf,nlist=64,nprobe=8,train=0", "faiss:multihash,tables=4,hash_bits=16,nflip=1",
              "faiss:hnsw,m=16,ef_search=64", "milvus:bin_ivf_flat,uri=http://127.0.0.1:19530,"
              "collection=codes,nlist=8,nprobe=2", "exact"]


@FUZZ
@given(spec=st.sampled_from(SPEC_SEEDS).flatmap(edited_text))
def test_fuzzed_index_spec_is_parsed_in_range_or_refused_in_one_line(spec):
    from utils.retrieval.index.registry import params_problem
    parsed = one_line_or_result(parse_spec, spec)
    assert parsed is None or params_problem(*parsed) is None
