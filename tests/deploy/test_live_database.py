"""deploy/live_database.py: after adds and removals the list, the code cache
and the saved index agree on disk and answer as a rebuild does, for every
index backend present; a process killed with SIGKILL after any step of an
add leaves a state the next start finishes or undoes, losing nothing;
searches running during changes never see half of one."""
import os
import threading

import numpy as np
import pytest

from support.backends import exhaustive_spec, index_specs
from support.centred_model import centred_checkpoint
from support.cli import TINY
from support.live_database import ADDED, STEPS, killed_during_add, open_live
from support.service import copy_demo
from utils.retrieval.hamming import hamming_topk
from utils.retrieval.index import BACKENDS


@pytest.fixture(scope="module")
def tiny_trained(demo, tmp_path_factory):
    return centred_checkpoint(demo, tmp_path_factory.mktemp("tiny_ckpt"), arch=TINY[1])


def answers(db, k=20):
    """Every database code's top-k through the index: (ids, distances)."""
    return db.index.search(db.packed, k)


def assert_agree(db):
    """The list, the codes and the index hold the same images, and the
    index answers as the exact scan over the codes."""
    assert len(db.images.paths) == len(db.packed) == len(db.labels) == len(db.index)
    for got, want in zip(answers(db), hamming_topk(db.packed, db.packed, 20)):
        np.testing.assert_array_equal(got, want)


def change(live):
    """Adds and removals: first, last and middle positions, added ones among
    them; of the images added only images/000062.jpg stays, last."""
    live.add(ADDED, [[0] * 10, [1] + [0] * 9])
    live.remove([0, 5, len(live) - 1])
    live.add(["images/000062.jpg"], [[0, 1] + [0] * 8])
    live.remove([len(live) - 2])


@pytest.mark.parametrize("name, kind", index_specs())
def test_changes_equal_a_rebuild_on_disk_and_in_memory(name, kind, demo, tiny_trained, tmp_path):
    spec = exhaustive_spec(name, kind)
    if name == "milvus" and kind not in BACKENDS[name].kinds[:1]:
        pytest.skip("a Milvus server's kind (embedded milvus-lite has bin_flat only)")
    copy_demo(demo, str(tmp_path))
    live = open_live(tmp_path, tiny_trained.prefix, spec)
    n = len(live)
    change(live)
    paths = list(live.db.images.paths)
    assert len(paths) == n - 1 and paths[-1] == "images/000062.jpg"
    assert_agree(live.db)
    served = answers(live.db)
    live.db.index.close()
    lines = []
    reopened = open_live(tmp_path, tiny_trained.prefix, spec, log=lines.append)
    assert reopened.db.source == "cache" and reopened.db.images.paths == paths
    assert not any("rebuild" in line or "stale" in line for line in lines), lines
    for got, want in zip(answers(reopened.db), served):
        np.testing.assert_array_equal(got, want)
    reopened.db.index.close()
    rebuilt = open_live(tmp_path, tiny_trained.prefix, spec, save="rebuilt", rebuild=True)
    np.testing.assert_array_equal(rebuilt.db.packed, reopened.db.packed)
    for got, want in zip(answers(rebuilt.db), served):
        np.testing.assert_array_equal(got, want)
    rebuilt.db.index.close()


@pytest.mark.parametrize("step", STEPS)
def test_kill_during_an_add_is_finished_or_undone_at_the_next_start(step, demo, tiny_trained,
                                                                    tmp_path):
    spec = "faiss:flat" if BACKENDS["faiss"].installed() else "exact"
    copy_demo(demo, str(tmp_path))
    with open(tmp_path / "lists" / "database.txt") as f:
        before = f.read().splitlines()
    proc = killed_during_add(step, tmp_path, tiny_trained.prefix, spec)
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = []
    live = open_live(tmp_path, tiny_trained.prefix, spec, log=lines.append)
    done = step != "journal"   # once the list holds the images, the add is completed
    assert live.db.images.paths == [line.rsplit(None, 10)[0] for line in before] + \
        (ADDED if done else [])
    assert any(("completed" if done else "undone") in line for line in lines), lines
    assert live.db.source == "cache" and not any("encoding" in line for line in lines), lines
    assert not [f for f in os.listdir(tmp_path / "out") if "journal" in f]
    assert_agree(live.db)
    live.db.index.close()


def test_searches_during_changes_see_whole_states(demo, tiny_trained, tmp_path):
    copy_demo(demo, str(tmp_path))
    live = open_live(tmp_path, tiny_trained.prefix, "exact")
    seen, stop = [], threading.Event()

    def search():
        while not stop.is_set():
            with live.reading() as db:
                ids, _ = db.index.search(db.packed[:1], len(db.packed))
                seen.append((len(db.images.paths), len(db.packed), len(db.index),
                             sorted(ids[0].tolist()) == list(range(len(db.packed)))))
    readers = [threading.Thread(target=search) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(3):
            change(live)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    sizes = {s[0] for s in seen}
    assert len(sizes) > 1, "the searches never ran between two changes"
    assert all(a == b == c and whole for a, b, c, whole in seen)
