"""``--index exact``: the packed popcount scan of utils/retrieval/hamming.py
over every code. The default and the reference every other backend's recall
is measured against; O(n) per query (about 1 ms per 1M 64-bit codes here)."""
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
        self.scan_index = None   # HammingIndex of all parts, built lazily

    def codes(self):
        if len(self.parts) != 1:
            joined = np.concatenate(self.parts) if self.parts else np.zeros((0, self.nbytes),
                                                                           np.uint8)
            self.parts = [joined]
        return self.parts[0]

    def _add(self, packed, first_id):
        self.parts.append(packed.copy())
        self.scan_index = None

    def _search(self, packed_queries, k):
        if self.scan_index is None:
            self.scan_index = HammingIndex(self.codes())
        ids, distances = hamming_topk(packed_queries, self.scan_index, k)
        return ids, distances.astype(np.int32)

    def save_payload(self, directory):
        def write(tmp):
            with open(tmp, "wb") as f:   # a file object: np.save would add ".npy" to a name
                np.save(f, self.codes())
        atomic_write(os.path.join(directory, CODES_FILE), write)
        return [CODES_FILE]

    def load_payload(self, directory, count):
        codes = self.check_codes(load_npy(os.path.join(directory, CODES_FILE)), CODES_FILE)
        self.parts, self.count = [codes], len(codes)
