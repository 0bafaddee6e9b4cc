"""What every registered ``--index`` backend must do (utils/retrieval/index/base.py
``CodeIndex``), for each of its kinds, at its default parameters: answer
top-k in (distance, id) order with true distances, equal the exact scan item
by item where the kind is not ``approximate``, survive save and load, and
refuse what it cannot do in one line; and after any sequence of adds and
removes, answer as an index built from scratch on the codes left, item by
item (an approximate kind at its ``exhaustive`` parameters, where it must
equal the exact scan). A backend whose optional packages are not installed
is skipped, saying what to install."""
import numpy as np
import pytest

from support.backends import exhaustive_spec, index_specs
from support.errors import user_error
from utils.base.errors import UserError
from utils.retrieval.hamming import hamming_distances, hamming_topk
from utils.retrieval.index import (BACKENDS, MISSING, create_index, load_index, parse_spec,
                                   save_index)

BIT, K = 64, 20


@pytest.fixture(scope="module")
def codes():
    """50,000 packed codes near 200 centres (ties, as from a trained model),
    enough for the default parameters of the approximate kinds (faiss's
    IVF trains its 1,024 lists), and 16 queries near database items."""
    rng = np.random.default_rng(0)
    centres = rng.random((200, BIT)) < 0.5
    bits = centres[rng.integers(0, 200, 50_000)] ^ (rng.random((50_000, BIT)) < 0.05)
    queries = bits[::3125] ^ (rng.random((16, BIT)) < 0.03)
    return np.packbits(bits, axis=1), np.packbits(queries, axis=1)


def built(name, kind, codes, directory):
    """The index over the database codes (50,000 for an approximate kind, at
    its default parameters; 5,000 for the others), or None when the kind
    refuses to be built here (in one line)."""
    db = codes[0] if kind in BACKENDS[name].approximate else codes[0][:5000]
    try:
        index = create_index(f"{name}:{kind}", BIT, str(directory))
    except UserError as refused:
        assert "\n" not in str(refused) and kind in str(refused)
        return None, db
    return index.add(db), db


def check_top_k(index, db, queries, approximate):
    """(distance, id) order, true distances; the exact scan's items unless approximate."""
    ids, dist = index.search(queries, K)
    assert ids.shape == dist.shape == (len(queries), K)
    for row in range(len(queries)):
        found = ids[row] != MISSING
        assert found[:1].all()   # at least one result per query
        true = hamming_distances(queries[row:row + 1], db[ids[row][found]])[0]
        np.testing.assert_array_equal(dist[row][found], true)
        order = np.lexsort((ids[row][found], dist[row][found]))
        np.testing.assert_array_equal(order, np.arange(found.sum()))
    if not approximate:
        want_ids, want_dist = hamming_topk(queries, db, K)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(dist, want_dist)
    return ids, dist


@pytest.mark.parametrize("name, kind", index_specs())
def test_answers_in_order_and_survives_save_and_load(name, kind, codes, tmp_path):
    index, db = built(name, kind, codes, tmp_path)
    if index is None:
        return   # refused in one line, checked in built()
    queries = codes[1]
    try:
        before = check_top_k(index, db, queries, kind in BACKENDS[name].approximate)
        message = user_error(index.search, np.zeros((2, 4), np.uint8), 10)
        assert "32-bit" in message and "64-bit" in message and "\n" not in message
        save_index(index, str(tmp_path), {"bit": BIT}, db)
    finally:
        index.close()
    loaded, meta = load_index(str(tmp_path))
    try:
        assert type(loaded) is BACKENDS[name] and len(loaded) == len(db) == meta["count"]
        assert loaded.spec == index.spec
        for got, want in zip(loaded.search(queries, K), before):
            np.testing.assert_array_equal(got, want)
    finally:
        loaded.close()


def test_every_backend_has_a_default_kind_and_parameters():
    for name, cls in BACKENDS.items():
        assert cls.backend == name and cls.kinds
        assert set(cls.approximate) <= set(cls.kinds) and set(cls.defaults) <= set(cls.kinds)


def largest_tie(db):
    """The rows of ``db`` holding its most frequent code."""
    _, group, counts = np.unique(db, axis=0, return_inverse=True, return_counts=True)
    return np.flatnonzero(group.ravel() == np.argmax(counts))


def mutated(index, db, directory):
    """Adds and removes on ``index`` over blocks of ``db``: first and last
    positions, neighbours, a whole group of tied codes, one code right after
    its add, a quarter of everything (past a tombstone backend's rebuild
    fraction), and a save and load in between. Returns the index and the
    rows of ``db`` it holds, in position order."""
    held = list(range(1200))
    index.add(db[:1200])

    def remove(positions):
        index.remove(positions)
        for p in sorted(set(positions), reverse=True):
            del held[p]
    remove([0, 5, 6, 1199])
    index.add(db[1200:2000])
    held += range(1200, 2000)
    tied = largest_tie(db[held])
    assert len(tied) > 1   # its lower ids answer first, until removed
    remove(list(tied))
    save_index(index, str(directory), {"bit": BIT}, db[held])
    index.close()
    index, _ = load_index(str(directory))
    remove(list(np.random.default_rng(0).choice(len(held), len(held) // 4, replace=False)))
    index.add(db[2000:3000])
    held += range(2000, 3000)
    remove([len(held) - 1])
    return index, held


@pytest.mark.parametrize("name, kind", index_specs())
def test_adds_and_removes_equal_a_build_on_the_codes_left(name, kind, codes, tmp_path):
    spec, db = exhaustive_spec(name, kind), codes[0][:3000]
    try:
        index = create_index(spec, BIT, str(tmp_path / "steps"))
    except UserError as refused:   # a kind this machine cannot build (checked above)
        assert "\n" not in str(refused) and kind in str(refused)
        return
    index, held = mutated(index, db, tmp_path / "steps")
    queries = np.concatenate([codes[1], db[[0, 10, 1500, 2999]]])   # removed ones among them
    rebuilt = create_index(spec, BIT, str(tmp_path / "rebuilt")).add(db[held])
    try:
        assert len(index) == len(held)
        got, want = index.search(queries, K), rebuilt.search(queries, K)
        for a, b, c in zip(got, want, hamming_topk(queries, db[held], K)):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
        message = user_error(index.remove, [len(held)])
        assert f"position {len(held)}" in message and "\n" not in message
    finally:
        index.close()
        rebuilt.close()


def test_every_parameter_has_a_stated_range_checked_before_any_work():
    """Each parameter of each kind has a rule (utils/base/flags.py Range or
    Pattern); a value outside it is refused when the spec is parsed, in one
    line naming the parameter and its range, before any backend is built."""
    for name, cls in BACKENDS.items():
        for kind in cls.kinds:
            for key in cls.defaults.get(kind, {}):
                rule = cls.valid[key]
                bad = (rule.out_of_range_example() if hasattr(rule, "out_of_range_example")
                       else "not:a value")
                message = user_error(parse_spec, f"{name}:{kind},{key}={bad}")
                assert f"{key}={bad} must be {rule.violation(bad)}" in message, message
                assert "\n" not in message
                assert rule.violation(cls.defaults[kind][key]) is None, (name, kind, key)
