"""``--index milvus:KIND,...``: a Milvus collection of binary vectors, on a
server or cluster (``uri=http://HOST:19530``) or embedded in a milvus-lite
file (no ``uri``: ``milvus.db`` inside the saved index's folder).

Optional: ``pip install "pymilvus<2.6" milvus-lite==2.4.12 "setuptools<70"``
(milvus-lite 3.x refuses binary vectors; 2.4 imports pkg_resources, gone from
setuptools 70). A server's token, if it needs one, is read from the
environment variable MILVUS_TOKEN, never from a flag.

Kinds: ``bin_flat`` (exact) and ``bin_ivf_flat`` (``nlist`` lists, ``nprobe``
searched), both with metric HAMMING. Rows are (id INT64 primary key = the
database index, code BINARY_VECTOR). Milvus breaks ties arbitrarily and
returns at most 16,384 results per query, so an exact search completes the
tie at the k-th distance by asking again with a larger limit and, past that
bound, by scanning id windows (``complete_tie_by_windows``); results are then
(distance, id) ordered like every backend's. Removal deletes rows by primary
key (the stored id).
"""
import os
import tempfile

import numpy as np

from utils.base.errors import UserError
from utils.base.flags import Pattern, Range
from utils.base.io import claim_file
from utils.retrieval.index.registry import register
from utils.retrieval.index.base import CodeIndex, search_complete_ties

DB_FILE = "milvus.db"
MAX_LIMIT = 16384      # Milvus's bound on top-k (and on queries per request)
INSERT_ROWS = 20000
CONNECT_TIMEOUT = 5.0  # seconds before an unreachable server is reported


def first_line(err):
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def import_pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise UserError('--index milvus needs pymilvus: pip install "pymilvus<2.6" '
                        'milvus-lite==2.4.12 "setuptools<70" (or use --index exact)')
    return pymilvus


@register("milvus")
class MilvusIndex(CodeIndex):
    requires = "pip install pymilvus; uri=http://HOST:19530 for a server, else embedded milvus-lite"
    modules = ("pymilvus", "milvus_lite")
    kinds = ("bin_flat", "bin_ivf_flat")
    approximate = ("bin_ivf_flat",)
    defaults = {"bin_flat": {"uri": "", "collection": "hashnet_codes"},
                "bin_ivf_flat": {"uri": "", "collection": "hashnet_codes", "nlist": 1024,
                                 "nprobe": 16}}
    exhaustive = {"bin_ivf_flat": {"nlist": 16, "nprobe": 16}}   # every list probed
    valid = {"uri": Pattern(r"((https?|tcp)://[^\s,/]+(/\S*)?)?",
                            "empty (embedded) or http(s)://HOST:PORT"),
             "collection": Pattern(r"[A-Za-z_][A-Za-z0-9_]{0,254}",
                                   "a Milvus collection name (letters, digits, _; 255 at most)"),
             "nlist": Range(1, 65536), "nprobe": Range(1, 65536)}   # Milvus's own bounds

    def __init__(self, bit, directory=None, **params):
        super().__init__(bit, **params)
        self.pymilvus = import_pymilvus()
        self.embedded = not params["uri"]
        if self.embedded and params["kind"] != "bin_flat":
            raise UserError(f"--index milvus:{params['kind']}: embedded milvus-lite supports only "
                            "bin_flat; give uri=http://HOST:19530 for a Milvus server")
        if self.embedded:
            directory = directory or tempfile.mkdtemp(prefix="hashnet-milvus-")
            os.makedirs(directory, exist_ok=True)
            self.directory = os.path.abspath(directory)
            claim_file(self.where, "--index milvus's database file")   # never through a link
        self.client = self.connect()

    @property
    def where(self):
        return os.path.join(self.directory, DB_FILE) if self.embedded else self.params["uri"]

    def connect(self):
        try:
            return self.pymilvus.MilvusClient(uri=self.where, timeout=CONNECT_TIMEOUT,
                                              token=os.environ.get("MILVUS_TOKEN", ""))
        except Exception as err:   # pymilvus raises its own types, and OSError for lite files
            raise UserError(f"--index milvus: cannot reach Milvus at {self.where} "
                            f"({first_line(err)}): start the server or fix uri=, or drop uri= "
                            "for an embedded milvus-lite file")

    def call(self, method, *args, **kwargs):
        """A client call; a server-side failure becomes a one-line UserError."""
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except self.pymilvus.MilvusException as err:
            raise UserError(f"Milvus at {self.where}, {method} on {self.collection!r}: "
                            f"{first_line(err)}")

    @property
    def collection(self):
        return self.params["collection"]

    def create_collection(self):
        """A new, empty collection (an old one of that name is dropped: building
        an index replaces it)."""
        DataType = self.pymilvus.DataType
        schema = self.pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=self.bit)
        index_params = self.client.prepare_index_params()
        ivf = self.params["kind"] == "bin_ivf_flat"
        extra = {"nlist": int(self.params["nlist"])} if ivf else {}
        index_params.add_index(field_name="code", index_type=self.params["kind"].upper(),
                               metric_type="HAMMING", params=extra)
        if self.call("has_collection", self.collection):
            self.call("drop_collection", self.collection)
        self.call("create_collection", self.collection, schema=schema, index_params=index_params)

    def _add(self, packed, ids):
        if self.bit % 8:
            raise UserError(f"Milvus binary vectors need a multiple of 8 bits, got {self.bit}")
        if ids[0] == 0:
            self.create_collection()
        for start in range(0, len(packed), INSERT_ROWS):
            block = packed[start:start + INSERT_ROWS]
            self.call("insert", self.collection, [
                {"id": int(i), "code": row.tobytes()}
                for i, row in zip(ids[start:start + INSERT_ROWS], block)])
        self.call("flush", self.collection)
        self.call("load_collection", self.collection)

    def _remove(self, ids):
        for start in range(0, len(ids), INSERT_ROWS):
            self.call("delete", self.collection, ids=[int(i) for i in ids[start:start + INSERT_ROWS]])
        self.call("flush", self.collection)

    def raw_search(self, queries, limit, where=""):
        """Nearest ``limit`` of each query, ties in Milvus's order:
        (ids int64 [nq, limit], distances int64 [nq, limit]), MISSING-padded."""
        params = {"metric_type": "HAMMING"}
        if self.params["kind"] == "bin_ivf_flat":
            params["params"] = {"nprobe": int(self.params["nprobe"])}
        ids = np.full((len(queries), limit), -1, np.int64)
        distances = np.full((len(queries), limit), self.bit + 1, np.int64)
        step = max(1, MAX_LIMIT // limit)
        for start in range(0, len(queries), step):
            block = queries[start:start + step]
            hits = self.call("search", self.collection, data=[q.tobytes() for q in block],
                                      limit=limit, filter=where, search_params=params)
            for row, found in enumerate(hits, start):
                ids[row, :len(found)] = [h["id"] for h in found]
                distances[row, :len(found)] = [round(h["distance"]) for h in found]
        return ids, distances

    def _search(self, packed_queries, k):
        ids, distances, rows, kth = search_complete_ties(self.raw_search, packed_queries, k,
                                                         self.count, self.bit, cap=MAX_LIMIT)
        for row, t in zip(rows, kth):
            ids[row], distances[row] = self.complete_tie_by_windows(
                packed_queries[row:row + 1], ids[row], distances[row], int(t))
        return ids, distances

    def complete_tie_by_windows(self, query, ids, distances, t):
        """More than MAX_LIMIT items are nearer than or as near as the k-th:
        the nearer ones are all in ``ids`` already; the lowest ids at distance
        ``t`` are collected from id windows in order, each window narrowed
        until Milvus returns all of its items at distance <= t."""
        nearer = distances < t
        need = len(ids) - int(nearer.sum())
        found, low, width = [], 0, max(1, self.next_id // 64)
        while len(found) < need and low < self.next_id:
            got, dist = self.raw_search(query, MAX_LIMIT, f"id >= {low} and id < {low + width}")
            if dist[0, -1] <= t and width > 1:   # the window may hold more at distance t
                width //= 2
                continue
            found.extend(sorted(got[0][dist[0] == t]))
            low += width
            width *= 2
        ids = np.concatenate([ids[nearer], np.asarray(found[:need], np.int64)])
        distances = np.concatenate([distances[nearer], np.full(need, t, distances.dtype)])
        return ids, distances

    def save_payload(self, directory):
        """The rows live in Milvus (for milvus-lite, in ``milvus.db`` here, a
        live database: no digest; loading checks its row count instead)."""
        self.call("flush", self.collection)
        if self.embedded and os.path.abspath(directory) != self.directory:
            raise UserError(f"an embedded Milvus index lives in {self.directory}: save it "
                            "there (its milvus.db cannot move while open)")
        return []

    def load_payload(self, directory, count):
        if not self.call("has_collection", self.collection):
            raise UserError(f"Milvus at {self.where} has no collection {self.collection!r}: "
                            "build the index again")
        self.call("load_collection", self.collection)
        self.count = int(self.call("get_collection_stats", self.collection)["row_count"])

    def close(self):
        self.client.close()
