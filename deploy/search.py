"""Hamming search of query codes over a packed database: the --index
(utils/retrieval/index/), or the exact scan (utils/retrieval/hamming.py)."""
import numpy as np

from utils.retrieval.hamming import hamming_distances, hamming_topk, pack_codes
from utils.retrieval.index import MISSING


def search_database(query_codes, packed_db, k, self_index=None, index=None):
    """Top-k of queries (±1 codes [nq, bit]) by Hamming distance, ties in
    database order: (indices [nq, k], distances [nq, k]). ``index``: a
    CodeIndex over ``packed_db`` (default: the exact scan); result columns
    an approximate index left empty in some query are cut.

    ``self_index``: the query's own entry in the database. A good model gives
    many images the same code, and ties go by index, so the query's own entry
    could hide behind a lower-indexed twin. When it is at least as near as the
    top hit (always, unless its stored code differs from the fresh one, e.g.
    a cache built by another encoder), it is moved to the first place; when
    it is farther, the ranking is left alone."""
    packed_query = pack_codes(query_codes)
    if index is None:
        indices, distances = hamming_topk(packed_query, packed_db, k)
    else:
        indices, distances = index.search(packed_query, k)
        filled = int((indices != MISSING).all(axis=0).sum())
        indices, distances = indices[:, :filled], distances[:, :filled]
    if self_index is not None:
        own = hamming_distances(packed_query, packed_db[self_index:self_index + 1])[:, 0]
        for row in np.flatnonzero(own <= distances[:, 0]):
            others = indices[row] != self_index
            indices[row] = np.concatenate([[self_index], indices[row][others][:k - 1]])
            distances[row] = np.concatenate([[own[row]], distances[row][others][:k - 1]])
    return indices, distances
