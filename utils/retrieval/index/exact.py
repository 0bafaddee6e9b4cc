"""``--index exact``: the packed popcount scan of utils/retrieval/hamming.py
over every code. The default and the reference every other backend's recall
is measured against; O(n) per query (about 1 ms per 1M 64-bit codes here).
A removal only marks its codes; the next search or save compacts them away
(one copy of the codes, as an add's next search rebuilds the scan anyway)."""
import os

import numpy as np

from utils.base.array_files import load_npy
from utils.base.io import atomic_write
from utils.retrieval.hamming import HammingIndex, hamming_topk
from utils.retrieval.index.registry import register
from utils.retrieval.index.base import CodeIndex

CODES_FILE = "codes.npy"


@register("exact")
class ExactIndex(CodeIndex):
    kinds = ("scan",)
    defaults = {}

    def __init__(self, bit, directory=None, **params):
        super().__init__(bit, **params)
        self.parts = []          # added blocks, joined on the next search
        self.part_ids = []       # the stored ids of their rows
        self.removed = []        # stored ids marked removed, not yet compacted away
        self.scan_index = None   # HammingIndex of all parts, built lazily

    def codes(self):
        """The codes present, row p at position p: the blocks joined and the
        removed rows dropped."""
        if len(self.parts) != 1 or self.removed:
            joined = np.concatenate(self.parts) if self.parts else np.zeros((0, self.nbytes),
                                                                           np.uint8)
            ids = np.concatenate(self.part_ids) if self.part_ids else np.zeros(0, np.int64)
            present = ~np.isin(ids, np.concatenate(self.removed)) if self.removed else slice(None)
            self.parts, self.part_ids, self.removed = [joined[present]], [ids[present]], []
        return self.parts[0]

    def _add(self, packed, ids):
        self.parts.append(packed.copy())
        self.part_ids.append(ids)
        self.scan_index = None

    def _remove(self, ids):
        self.removed.append(ids)
        self.scan_index = None

    def _search(self, packed_queries, k):
        if self.scan_index is None:
            self.scan_index = HammingIndex(self.codes())
        rows, distances = hamming_topk(packed_queries, self.scan_index, k)
        return self.part_ids[0][rows], distances.astype(np.int32)

    def save_payload(self, directory):
        def write(tmp):
            with open(tmp, "wb") as f:   # a file object: np.save would add ".npy" to a name
                np.save(f, self.codes())
        atomic_write(os.path.join(directory, CODES_FILE), write)
        return [CODES_FILE]

    def load_payload(self, directory, count):
        codes = self.check_codes(load_npy(os.path.join(directory, CODES_FILE)), CODES_FILE)
        self.parts, self.count = [codes], len(codes)

    def load_files(self, directory, count, files=()):
        super().load_files(directory, count, files)
        self.part_ids = [self.live_ids()]
