"""The interface every search index keeps, and the ranking rule they share.

An index holds packed binary codes (uint8 [n, ceil(bit/8)],
``utils.retrieval.hamming.pack_codes``) under consecutive ids 0..n-1 (the
database order), and answers top-k by Hamming distance. Whatever the
backend, results come ordered by (distance, id): ties go to the lower id,
as in the exact scan, so an exact backend agrees with ``exact`` item by item.
Backends that cannot return ties in id order themselves ask for more
candidates than k and re-rank them (``search_complete_ties``).
"""
import abc
import importlib.util

import numpy as np

from utils.base.errors import UserError

MISSING = -1   # id of an empty result slot (an approximate index found fewer than k)


class CodeIndex(abc.ABC):
    """The interface of the backends (one file each under utils/retrieval/index/,
    registered with ``@register("name")`` from registry.py).

    Class attributes: ``backend`` (its ``--index`` name, set by ``register``),
    ``kinds`` (the KINDs of its specs, the first the default),
    ``defaults`` ({kind: {parameter: default}}) and ``valid`` ({parameter:
    its utils/base/flags.py Range, or Pattern for text}: every parameter
    has one, checked before any work), ``approximate`` (the kinds
    whose top-k may miss items; the others equal the exact scan item by item),
    ``modules`` (the optional packages it imports) and ``requires`` (what to
    pip install for them, in the help; "" when nothing). Subclasses implement
    ``_add``, ``_search``, ``save_payload`` and ``load_payload``; ``params``
    (the spec's parameters) make the index re-creatable.
    """
    backend = None
    kinds = ()
    defaults = {}
    valid = {}
    approximate = ()
    modules = ()
    requires = ""

    def __init__(self, bit, directory=None, **params):
        """``directory``: where the index will be saved (an embedded Milvus
        file lives there from the start); other backends ignore it."""
        self.bit = int(bit)
        self.nbytes = (self.bit + 7) // 8
        self.params = params
        self.count = 0

    def __len__(self):
        return self.count

    @classmethod
    def installed(cls):
        """Whether the optional packages this backend needs are importable."""
        return all(importlib.util.find_spec(m) is not None for m in cls.modules)

    @property
    def spec(self):
        """The ``--index`` string that makes an empty index like this one."""
        kind = self.params.get("kind")
        rest = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()) if k != "kind")
        return self.backend + (f":{kind}" if kind else "") + (f",{rest}" if rest else "")

    # ------------------------------------------------------------ the interface
    def add(self, packed):
        """Append codes; they get ids len(self), len(self)+1, ..."""
        packed = self.check_codes(packed, "database codes")
        if len(packed):
            self._add(packed, self.count)
            self.count += len(packed)
        return self

    def search(self, packed_queries, k):
        """Top-k of each query: (ids int64 [nq, k], distances int32 [nq, k])
        ordered by (distance, id); k is capped at len(self). Slots an
        approximate index could not fill hold id MISSING and distance bit + 1."""
        queries = self.check_codes(packed_queries, "query codes")
        if self.count == 0:
            raise UserError(f"the {self.backend} index is empty: add database codes first")
        k = min(int(k), self.count)
        if k < 1:
            raise UserError(f"top-k must be >= 1, got {k}")
        if len(queries) == 0:
            return np.empty((0, k), np.int64), np.empty((0, k), np.int32)
        return self._search(queries, k)

    def close(self):
        """Release connections or files (Milvus); a no-op elsewhere."""

    def check_codes(self, packed, what):
        packed = np.asarray(packed)
        if packed.ndim != 2 or packed.dtype != np.uint8:
            raise UserError(f"{what} must be packed uint8 [n, {self.nbytes}] (pack_codes), "
                            f"got {packed.dtype} {packed.shape}")
        if packed.shape[1] != self.nbytes:
            raise UserError(f"{what} are {8 * packed.shape[1]}-bit but the {self.backend} index "
                            f"holds {self.bit}-bit codes: use the --bit the index was built with, "
                            "or build another index")
        return np.ascontiguousarray(packed)

    # ------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def _add(self, packed, first_id):
        """Store packed codes [n, nbytes] under ids first_id, first_id + 1, ..."""

    @abc.abstractmethod
    def _search(self, packed_queries, k):
        """Top-k of each query (1 <= k <= len(self)): (ids int64 [nq, k],
        distances int32 [nq, k]) in (distance, id) order, MISSING where empty."""

    @abc.abstractmethod
    def save_payload(self, directory):
        """Write the backend's own files into ``directory``; return their names."""

    @abc.abstractmethod
    def load_payload(self, directory, count):
        """Read back what ``save_payload`` wrote (``count`` codes)."""


def rank_candidates(ids, distances, k, bit):
    """Order candidate rows by (distance, id), drop MISSING and duplicate ids,
    keep k per row (padding with MISSING / bit + 1): the shared ranking rule."""
    ids = np.asarray(ids, np.int64)
    distances = np.where(ids == MISSING, bit + 1, np.asarray(distances, np.int64))
    out_ids = np.full((len(ids), k), MISSING, np.int64)
    out_d = np.full((len(ids), k), bit + 1, np.int32)
    for row in range(len(ids)):
        order = np.lexsort((ids[row], distances[row]))
        row_ids, row_d = ids[row][order], distances[row][order]
        keep = row_ids != MISSING
        keep[1:] &= row_ids[1:] != row_ids[:-1]
        row_ids, row_d = row_ids[keep][:k], row_d[keep][:k]
        out_ids[row, :len(row_ids)] = row_ids
        out_d[row, :len(row_d)] = row_d
    return out_ids, out_d


def search_complete_ties(raw_search, queries, k, size, bit, cap=None):
    """Exact top-k in (distance, id) order from a search that returns the
    nearest ``limit`` items but breaks ties arbitrarily.

    The k-th distance t is known after one search; every item nearer than t
    is then in the result, but the items at distance t may be any of them.
    When the last of ``limit`` candidates is farther than t, all items at t
    were returned and re-ranking by id is exact; otherwise the query is asked
    again with 4x the limit, up to ``cap`` (a server's top-k bound). Returns
    (ids, distances, rows still incomplete at the cap, their k-th distance).
    """
    cap = min(size, cap or size)
    limit = min(cap, k + max(k, 16))
    ids, dist = raw_search(queries, limit)
    rows = np.arange(len(queries))
    out_ids, out_d = rank_candidates(ids, dist, k, bit)
    while True:
        kth = out_d[rows, k - 1]
        incomplete = (dist[:, -1] <= kth) & (limit < size) if len(rows) else np.zeros(0, bool)
        rows, kth = rows[incomplete], kth[incomplete]
        if len(rows) == 0 or limit >= cap:
            return out_ids, out_d, rows, kth
        limit = min(cap, limit * 4)
        ids, dist = raw_search(queries[rows], limit)
        out_ids[rows], out_d[rows] = rank_candidates(ids, dist, k, bit)
