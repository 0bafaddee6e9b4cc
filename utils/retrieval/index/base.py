"""The interface every search index keeps, and the ranking rule they share.

An index holds packed binary codes (uint8 [n, ceil(bit/8)],
``utils.retrieval.hamming.pack_codes``) and answers top-k by Hamming
distance. Its ids are positions 0..n-1 in the database order, before and
after removals: removing position p moves every later item up by one, as
deleting a line of the list does. Whatever the backend, results come
ordered by (distance, id): ties go to the lower id, as in the exact scan, so
an exact backend agrees with ``exact`` item by item. Backends that cannot
return ties in id order themselves ask for more candidates than k and
re-rank them (``search_complete_ties``).

Inside, each code keeps the *stored id* it was added under (0, 1, 2, ...,
never reused): a backend stores and returns stored ids, and removes by them.
``live`` (sorted) lists the stored ids still present, so position p is
``live[p]`` and back by binary search, an order-preserving map: ranking by
stored id is ranking by position. Backends that can delete (the exact scan,
faiss's flat and IVF, Milvus) delete; the others keep tombstones (stored ids
not in ``live``) that searches skip (``search_live``), and rebuild past a
fraction of them. ``ids.npz`` in a saved index records ``live`` and the
next stored id once anything was removed.
"""
import abc
import importlib.util
import os

import numpy as np

from utils.base.errors import UserError
from utils.base.io import atomic_write

MISSING = -1   # id of an empty result slot (an approximate index found fewer than k)
IDS_FILE = "ids.npz"   # the stored ids of a saved index that had removals


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
    pip install for them, in the help; "" when nothing), ``exhaustive``
    ({approximate kind: parameters at which its search reaches every item},
    so that it equals the exact scan: what the contract tests build it with
    to compare add and remove against a rebuild). Subclasses implement
    ``_add``, ``_remove``, ``_search``, ``save_payload`` and
    ``load_payload``; ``params`` (the spec's parameters) make the index
    re-creatable.
    """
    backend = None
    kinds = ()
    defaults = {}
    valid = {}
    approximate = ()
    exhaustive = {}
    modules = ()
    requires = ""

    def __init__(self, bit, directory=None, **params):
        """``directory``: where the index will be saved (an embedded Milvus
        file lives there from the start); other backends ignore it."""
        self.bit = int(bit)
        self.nbytes = (self.bit + 7) // 8
        self.params = params
        self.count = 0       # codes present (positions 0..count-1)
        self.next_id = 0     # the stored id the next added code gets
        self.live = None     # sorted stored ids of positions 0..count-1; None: arange(count)

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
        """Append codes; they get positions len(self), len(self)+1, ..."""
        packed = self.check_codes(packed, "database codes")
        if len(packed):
            ids = np.arange(self.next_id, self.next_id + len(packed), dtype=np.int64)
            self._add(packed, ids)
            if self.live is not None:
                self.live = np.concatenate([self.live, ids])
            self.count += len(packed)
            self.next_id += len(packed)
        return self

    def remove(self, positions):
        """Remove the codes at ``positions`` (of 0..len(self)-1, any order);
        the codes after each move up, as lines of a list do."""
        positions = np.unique(np.asarray(positions, np.int64))
        if len(positions) == 0:
            return self
        if positions[0] < 0 or positions[-1] >= self.count:
            bad = positions[(positions < 0) | (positions >= self.count)][0]
            raise UserError(f"cannot remove position {bad} from the {self.backend} index of "
                            f"{self.count} codes")
        live, before = self.live_ids(), (self.live, self.count, self.next_id)
        self.live, self.count = np.delete(live, positions), self.count - len(positions)
        try:   # after the bookkeeping: a backend may compact, renumbering what is left
            self._remove(live[positions])
        except BaseException:
            self.live, self.count, self.next_id = before
            raise
        return self

    def live_ids(self):
        """The stored id of every position (sorted)."""
        return np.arange(self.count, dtype=np.int64) if self.live is None else self.live

    def positions_of(self, stored_ids):
        """Stored ids -> positions; MISSING stays MISSING."""
        stored_ids = np.asarray(stored_ids, np.int64)
        if self.live is None:
            return stored_ids
        found = stored_ids != MISSING
        out = stored_ids.copy()
        out[found] = np.searchsorted(self.live, stored_ids[found])
        return out

    def is_live(self, stored_ids):
        """Which of ``stored_ids`` are present (not removed, not MISSING)."""
        stored_ids = np.asarray(stored_ids, np.int64)
        if self.live is None:
            return (stored_ids >= 0) & (stored_ids < self.count)
        at = np.minimum(np.searchsorted(self.live, stored_ids), max(self.count - 1, 0))
        return (self.live[at] == stored_ids) if self.count else np.zeros(stored_ids.shape, bool)

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
        ids, distances = self._search(queries, k)
        return self.positions_of(ids), distances

    def search_live(self, raw_search, queries, k, stored):
        """Top-k from ``raw_search(queries, limit)`` (stored ids and distances,
        ties in any order, MISSING-padded) over ``stored`` stored codes, some
        of them tombstones: tombstones are dropped, and a query left with
        fewer than k present items is asked again with 4x the limit, until it
        has k or the search returned fewer than it was asked for."""
        limit = min(stored, k + max(k, 16) + (stored - self.count))
        rows = np.arange(len(queries))
        out_ids = np.full((len(queries), k), MISSING, np.int64)
        out_d = np.full((len(queries), k), self.bit + 1, np.int32)
        while len(rows):
            ids, dist = raw_search(queries[rows], limit)
            exhausted = (ids[:, -1] == MISSING) | (limit >= stored)
            ids = np.where(self.is_live(ids), ids, MISSING)
            out_ids[rows], out_d[rows] = rank_candidates(ids, dist, k, self.bit)
            short = (out_ids[rows, -1] == MISSING) & ~exhausted
            rows, limit = rows[short], min(stored, limit * 4)
        return out_ids, out_d

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

    # ------------------------------------------------------------ saving
    def save_files(self, directory):
        """Write the index into ``directory``: the backend's files, and the
        stored ids once something was removed; returns the files' names."""
        names = list(self.save_payload(directory))
        path = os.path.join(directory, IDS_FILE)
        if self.live is not None or self.next_id != self.count:
            def write(tmp):
                with open(tmp, "wb") as f:   # a file object: np.savez would add ".npz"
                    np.savez(f, live=self.live_ids(), next_id=np.int64(self.next_id))
            atomic_write(path, write)
            names.append(IDS_FILE)
        elif os.path.isfile(path):
            os.remove(path)   # left from before a rebuild: the index.json no longer names it
        return names

    def load_files(self, directory, count, files=()):
        """Read back what ``save_files`` wrote (``files``: their names);
        ``len(self)`` is then the number of codes present."""
        self.load_payload(directory, count)
        if IDS_FILE in files:
            with np.load(os.path.join(directory, IDS_FILE), allow_pickle=False) as saved:
                self.live, self.next_id = saved["live"].astype(np.int64), int(saved["next_id"])
            self.count = len(self.live)
        else:
            self.live, self.next_id = None, self.count

    # ------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def _add(self, packed, ids):
        """Store packed codes [n, nbytes] under the stored ids ``ids`` (int64
        [n], consecutive, above every id stored before)."""

    @abc.abstractmethod
    def _remove(self, ids):
        """Remove the codes stored under ``ids`` (present, sorted, unique):
        delete them, or leave tombstones that ``_search`` skips."""

    @abc.abstractmethod
    def _search(self, packed_queries, k):
        """Top-k of each query (1 <= k <= len(self)) among the codes present:
        (stored ids int64 [nq, k], distances int32 [nq, k]) in (distance,
        stored id) order, MISSING where empty."""

    @abc.abstractmethod
    def save_payload(self, directory):
        """Write the backend's own files into ``directory``; return their names."""

    @abc.abstractmethod
    def load_payload(self, directory, count):
        """Read back what ``save_payload`` wrote (``count`` codes present)."""


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
