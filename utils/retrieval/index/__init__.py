"""Search indexes over packed binary codes: one interface (``CodeIndex``:
add, search top-k, save, load), one file per backend, one registry line each.

    index = build_index("faiss:ivf,nlist=4096,nprobe=32", packed, bit=64)
    ids, distances = index.search(packed_queries, k=100)   # (distance, id) order
    save_index(index, "output/index", fingerprint, packed)
    index, meta = load_index("output/index")

A spec is ``BACKEND[:KIND][,key=value...]`` (``--index`` of predict.py and
infer.py); unknown backends, kinds or keys are one-line errors listing the
known ones. Importing the package registers every backend, one import
line each. Optional packages (faiss, pymilvus) are imported by their backend
only when it is used.
"""
from utils.retrieval.index.base import MISSING, CodeIndex  # noqa: F401
from utils.retrieval.index.registry import (BACKENDS, DEFAULT_SPEC, build_index,  # noqa: F401
                                            create_index, index_help, parse_spec, register)
from utils.retrieval.index import exact, faiss_binary, milvus  # noqa: F401  (register them)
from utils.retrieval.index.saved import (is_saved_index, load_index, open_saved_index,  # noqa: F401
                                         save_index)
