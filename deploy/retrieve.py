"""The one retrieval pipeline of predict.py and infer.py, with the forward pass
passed in (the dygraph model, a Paddle Inference predictor or onnxruntime):
the database's codes (cached), its search index, a query's top-k and the
report."""
import dataclasses
import time

import numpy as np

from deploy.database import (database_code_cache, database_index, database_loader,
                             database_search_index, database_tail, open_database)
from deploy.report import write_retrieval_report
from deploy.search import search_database
from utils.data.transforms import load_query_image
from utils.inference.encoder import encode_batches
from utils.retrieval.codes import sign_codes


@dataclasses.dataclass(frozen=True)
class Encoder:
    """How a retrieval computes codes: x [N, 3, S, S] float32 -> z [N, bit]."""
    query: object        # the forward of query images
    database: object     # n -> the forward to encode n database images with
    files: tuple         # the model's files: the code cache is fingerprinted by them
    tag: str = ""        # suffix of the cache's, the index's and the report's names
    device: str = None   # "cpu" / "gpu" in the fingerprint (None: Paddle's current device)


@dataclasses.dataclass
class Database:
    """The database list with its codes and search index, ready for queries."""
    images: object       # the ImageList of database.txt
    packed: np.ndarray   # packed codes [n, bit/8]
    labels: np.ndarray   # [n, C] (from the cache, else the list's)
    source: str          # where the codes came from ("built", "cache", ...)
    index: object        # the --index (a CodeIndex)
    cache: object = None  # the DatabaseCodeCache the codes are kept in


class Timer:
    """Seconds spent per stage of the query pipeline."""

    def __init__(self):
        self.total = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}

    def stage(self, name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.total[name] += time.perf_counter() - start
        return out


def open_coded_database(args, encoder, batch_size):
    """The database of ``args`` with its codes: from the code cache when it
    matches, else encoded in batches of ``batch_size`` (only the images a
    grown list appends, when the rest match), and its --index."""
    images = open_database(args)

    def build(start=0):
        loader = database_loader(database_tail(images, start), batch_size)
        codes, labels, _ = encode_batches(encoder.database(len(images)), loader,
                                          "encoding database")
        return codes, labels

    cache = database_code_cache(args, list(encoder.files), tag=encoder.tag, device=encoder.device)
    packed, labels, source = cache.get(build, len(images), args.rebuild_cache,
                                       (images.paths, images.labels))
    index = database_search_index(args, cache, packed, tag=encoder.tag)
    return Database(images, packed, images.labels if labels is None else labels, source, index,
                    cache)


def load_query(args, copies=1):
    """``copies`` of the query image as the model's input [copies, 3, S, S]."""
    return np.concatenate([load_query_image(args.img, args.resize_size, args.crop_size,
                                            upright=not args.ignore_exif_orientation,
                                            pipeline=args.pipeline)
                           for _ in range(copies)])


def query_topk(args, forward, database, copies=1, timer=None, self_index=None):
    """preprocess -> inference -> postprocess (sign, Hamming top-k) for a
    batch of ``copies`` of the query; returns (indices, distances) [copies, k]."""
    timer = timer or Timer()
    x = timer.stage("preprocess", load_query, args, copies)
    z = timer.stage("inference", forward, x)
    return timer.stage("postprocess", lambda: search_database(
        sign_codes(z), database.packed, args.topk, self_index, database.index))


def retrieve(args, encoder, database, extra=None):
    """The query's top-k over ``database``, reported (table, JSON, montage);
    returns the JSON dict."""
    indices, distances = query_topk(args, encoder.query, database,
                                    self_index=database_index(args.img, database.images))
    return write_retrieval_report(args, database.images, indices[0], distances[0],
                                  database.labels, database.source, tag=encoder.tag, extra=extra)
