"""``--index faiss:KIND,...``: faiss's binary indexes on one machine
(optional: ``pip install faiss-cpu``).

Kinds and their parameters (defaults in ``FaissIndex.defaults``):
  * ``flat``      IndexBinaryFlat: exact, faiss's own scan (a check of the others);
  * ``ivf``       IndexBinaryIVF: k-means over the codes into ``nlist`` lists, a
                  query scans the ``nprobe`` nearest lists; trained on ``train``
                  codes drawn evenly from the first block added (default 64 per
                  list), so later adds keep those lists;
  * ``multihash`` IndexBinaryMultiHash: ``tables`` hash tables on ``hash_bits``-bit
                  substrings of the code, probing ``nflip`` flipped bits
                  (multi-index hashing, Norouzi et al.);
  * ``hnsw``      IndexBinaryHNSW: a graph of ``m`` links per node, searched with
                  ``ef_search`` candidates (built with ``ef_construction``).
faiss does not order ties by id, so each search asks for k + max(k, 16)
candidates and re-ranks them by (distance, id); ``flat`` asks again with
more until the tie at the k-th distance is complete, so it equals ``exact``.

Removal: ``flat`` (inside an IndexBinaryIDMap) and ``ivf`` hold each code's
stored id and delete with ``remove_ids``. ``multihash`` and ``hnsw`` cannot
delete (faiss 1.15 raises): a removed code stays as a tombstone that
searches skip, and once tombstones pass REBUILD_FRACTION of the stored codes
the index is rebuilt from the codes present.
"""
import os

import numpy as np

from utils.base.errors import UserError
from utils.base.flags import Range
from utils.base.io import atomic_write
from utils.retrieval.index.registry import register
from utils.retrieval.index.base import CodeIndex, rank_candidates, search_complete_ties

INDEX_FILE = "faiss.index"
REBUILD_FRACTION = 0.2   # multihash / hnsw: rebuilt when tombstones pass this share
DELETES = ("flat", "ivf")   # the kinds faiss can remove from


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise UserError("--index faiss needs faiss: pip install faiss-cpu (or use --index exact)")
    return faiss


@register("faiss")
class FaissIndex(CodeIndex):
    requires = "pip install faiss-cpu"
    modules = ("faiss",)
    kinds = ("ivf", "multihash", "hnsw", "flat")
    approximate = ("ivf", "multihash", "hnsw")
    defaults = {"ivf": {"nlist": 1024, "nprobe": 16, "train": 0},
                "multihash": {"tables": 4, "hash_bits": 16, "nflip": 1},
                "hnsw": {"m": 16, "ef_search": 128, "ef_construction": 40},
                "flat": {}}
    # every list probed; every bucket within all hash_bits flips; a candidate
    # list as long as a test's database
    exhaustive = {"ivf": {"nlist": 16, "nprobe": 16},
                  "multihash": {"tables": 2, "hash_bits": 8, "nflip": 8},
                  "hnsw": {"ef_search": 1 << 16}}
    # faiss aborts or crashes outside these (HNSW with m < 2, IVF with nprobe 0)
    valid = {"nlist": Range(1, 1 << 20), "nprobe": Range(1, 1 << 20), "train": Range(0, 1 << 30),
             "tables": Range(1, 64), "hash_bits": Range(1, 64), "nflip": Range(0, 64),
             "m": Range(2, 512), "ef_search": Range(1, 1 << 20), "ef_construction": Range(1, 1 << 20)}

    def __init__(self, bit, directory=None, **params):
        super().__init__(bit, **params)
        if self.bit % 8:
            raise UserError(f"faiss binary indexes need a multiple of 8 bits, got {self.bit}")
        self.faiss = import_faiss()
        self.index = self.new_index()

    def new_index(self):
        faiss, p, d = self.faiss, self.params, self.bit
        kind = p["kind"]
        if kind == "flat":
            self.storage = faiss.IndexBinaryFlat(d)   # kept alive: the ID map points to it
            return faiss.IndexBinaryIDMap(self.storage)
        if kind == "ivf":
            self.quantizer = faiss.IndexBinaryFlat(d)   # kept alive: the IVF index points to it
            return faiss.IndexBinaryIVF(self.quantizer, d, int(p["nlist"]))
        if kind == "multihash":
            if int(p["tables"]) * int(p["hash_bits"]) > d:
                raise UserError(f"--index faiss:multihash: tables x hash_bits = "
                                f"{p['tables']} x {p['hash_bits']} exceeds the {d} code bits")
            return faiss.IndexBinaryMultiHash(d, int(p["tables"]), int(p["hash_bits"]))
        return faiss.IndexBinaryHNSW(d, int(p["m"]))

    def configure(self):
        """Search-time parameters (not stored in faiss's file)."""
        p = self.params
        if p["kind"] == "ivf":
            self.index.nprobe = int(p["nprobe"])
        elif p["kind"] == "multihash":
            self.index.nflip = int(p["nflip"])
        elif p["kind"] == "hnsw":
            self.index.hnsw.efSearch = int(p["ef_search"])
            self.index.hnsw.efConstruction = int(p["ef_construction"])

    def train(self, packed):
        nlist = int(self.params["nlist"])
        if len(packed) < nlist:
            raise UserError(f"--index faiss:ivf,nlist={nlist} needs at least {nlist} codes to "
                            f"train its lists, the database has {len(packed)}: lower nlist")
        size = min(len(packed), int(self.params["train"]) or 64 * nlist)
        sample = packed[np.linspace(0, len(packed) - 1, size).astype(np.int64)]
        self.index.train(sample)

    def _add(self, packed, ids):
        self.configure()
        if not self.index.is_trained:
            self.train(packed)
        if self.params["kind"] in DELETES:
            self.index.add_with_ids(packed, ids)
        else:   # stored id = faiss's own sequential number (next_id == ntotal)
            self.index.add(packed)

    def _remove(self, ids):
        if self.params["kind"] in DELETES:
            self.index.remove_ids(np.ascontiguousarray(ids, np.int64))
        elif self.index.ntotal - self.count > REBUILD_FRACTION * self.index.ntotal:
            self.rebuild()

    def rebuild(self):
        """A new index over the codes present only (tombstones dropped); their
        stored ids become 0..count-1."""
        stored = self.index.storage.reconstruct_n(0, self.index.ntotal)
        present = stored[self.live_ids()]
        self.index = self.new_index()
        self.live, self.next_id = None, self.count
        self.configure()
        self.index.add(present)

    def raw_search(self, queries, limit):
        distances, ids = self.index.search(queries, limit)
        return ids, distances

    def _search(self, packed_queries, k):
        self.configure()
        kind = self.params["kind"]
        if kind == "flat":
            ids, distances, _, _ = search_complete_ties(self.raw_search, packed_queries, k,
                                                        self.count, self.bit)
            return ids, distances
        if kind not in DELETES:
            return self.search_live(self.raw_search, packed_queries, k, self.index.ntotal)
        ids, distances = self.raw_search(packed_queries, min(self.count, k + max(k, 16)))
        return rank_candidates(ids, distances, k, self.bit)

    def save_payload(self, directory):
        atomic_write(os.path.join(directory, INDEX_FILE),
                     lambda tmp: self.faiss.write_index_binary(self.index, tmp))
        return [INDEX_FILE]

    def load_payload(self, directory, count):
        self.index = self.faiss.read_index_binary(os.path.join(directory, INDEX_FILE))
        self.count = self.index.ntotal
        if self.params["kind"] == "flat" and not isinstance(self.index,
                                                             self.faiss.IndexBinaryIDMap):
            self.index = self.with_id_map(self.index)

    def with_id_map(self, flat):
        """A flat index saved without stored ids (they were its positions)
        inside the ID map that removal needs."""
        codes = flat.reconstruct_n(0, flat.ntotal)
        index = self.new_index()
        index.add_with_ids(codes, np.arange(len(codes), dtype=np.int64))
        return index
