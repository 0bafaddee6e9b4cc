"""Single-image retrieval on Paddle Inference (a model from export_model.py).

    python deploy/inference_python/infer.py --bit 64 --dataset coco \\
        --data-path datasets/coco --model-dir output/inference --img-path query.jpg \\
        --use-gpu False --benchmark True --warmup 5

Same retrieval as predict.py (deploy/: database and code cache, Hamming top-k
with ties in database order, printed table, JSON, nearest-image copy, montage),
with the codes computed by a Paddle Inference predictor instead of the
dygraph model; --index chooses the search index as in predict.py. Its database cache is ``database_code_<dataset>_<bit>_inference.npz``
in --save-path, fingerprinted by the model files' sha256; when it is
(re)built the database is encoded in batches of --db-batch-size.

--use-onnx True runs ``inference_<bit>.onnx`` (export_model.py --format onnx)
with onnxruntime on the CPU instead (pip install onnxruntime).

--use-gpu True|False (the reference's style; a bare --use-gpu means True;
default: GPU when this Paddle has CUDA and a device). --warmup N runs the
predictor N times on a batch of --batch-size before anything is timed.
--benchmark True repeats the query pipeline (--benchmark-runs times, on a
batch of --batch-size copies of the query) and prints preprocess /
inference / postprocess ms and images/s.
"""
import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from deploy.cli import (BATCH, AT_LEAST_0, AT_LEAST_1, add, add_retrieval_args,  # noqa: E402
                        fit_arch_to_model, fit_sizes_to_model, parse_retrieval_args,
                        query_pipeline_of, str2bool)
from deploy.database import (database_code_cache, database_index, database_loader,  # noqa: E402
                             database_search_index, database_tail, open_database)
from utils.inference.export import load_exported  # noqa: E402
from utils.inference.predictor import read_export_info, resolve_use_gpu  # noqa: E402
from deploy.report import write_retrieval_report  # noqa: E402
from deploy.search import search_database  # noqa: E402
from models.hashnet import sign_codes  # noqa: E402
from utils.datasets import load_query_image  # noqa: E402
from utils.inference.encoder import encode_batches  # noqa: E402
from utils.base.errors import UserError, run_cli  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description="HashNet single-image retrieval (Paddle Inference)")
    add_retrieval_args(p, crop_default=None)

    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--model-dir", "--model_dir", dest="model_dir", default="output/inference",
      help="folder of inference_<bit>.json|.pdmodel + .pdiparams (export_model.py)")
    a("--use-gpu", "--use_gpu", dest="use_gpu", nargs="?", const=True, default=None, type=str2bool,
      help="True|False (default: GPU if available)")
    a("--use-onnx", "--use_onnx", dest="use_onnx", nargs="?", const=True, default=False,
      type=str2bool, help="True: run inference_<bit>.onnx with onnxruntime (CPU)")
    a("--batch-size", "--batch_size", dest="batch_size", type=int, default=1, valid=BATCH,
      help="query batch of --warmup and --benchmark")
    a("--db-batch-size", "--db_batch_size", dest="db_batch_size", type=int, default=64,
      valid=BATCH, help="batch size for encoding the database")
    a("--benchmark", nargs="?", const=True, default=False, type=str2bool,
      help="True: time preprocess / inference / postprocess")
    a("--benchmark-runs", "--benchmark_runs", dest="benchmark_runs", type=int, default=10,
      valid=AT_LEAST_1)
    a("--warmup", type=int, default=0, valid=AT_LEAST_0, help="predictor runs before timing")
    return p


class Timer:
    def __init__(self):
        self.total = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}

    def stage(self, name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.total[name] += time.perf_counter() - start
        return out


def query_pipeline(args, model, packed, index, batch, timer, self_index=None):
    """preprocess -> inference -> postprocess (sign, Hamming top-k) for a
    batch of ``batch`` copies of the query; returns (indices, distances)."""
    x = timer.stage("preprocess", lambda: np.concatenate(
        [load_query_image(args.img, args.resize_size, args.crop_size,
                          upright=not args.ignore_exif_orientation, pipeline=args.pipeline)
         for _ in range(batch)]))
    z = timer.stage("inference", model.run, x)
    return timer.stage("postprocess", lambda: search_database(sign_codes(z), packed, args.topk,
                                                                 self_index, index))


def benchmark(args, model, packed, index, n_db):
    timer = Timer()
    for _ in range(args.benchmark_runs):
        query_pipeline(args, model, packed, index, args.batch_size, timer)
    ms = {k: 1000 * v / args.benchmark_runs for k, v in timer.total.items()}
    total = sum(ms.values())
    device = "GPU" if model.use_gpu else f"CPU, {args.num_threads} threads"
    print(f"benchmark ({device}, batch {args.batch_size}, {args.benchmark_runs} runs after "
          f"{args.warmup} warm-up runs), mean per batch:")
    print(f"  preprocess  {ms['preprocess']:9.2f} ms")
    print(f"  inference   {ms['inference']:9.2f} ms")
    print(f"  postprocess {ms['postprocess']:9.2f} ms (sign + Hamming top-{args.topk} "
          f"over {n_db:,} codes, --index {index.spec})")
    print(f"  throughput  {1000 * args.batch_size / total:9.1f} images/s end to end, "
          f"{1000 * args.batch_size / ms['inference']:.1f} images/s inference alone")
    return {"device": device, "batch_size": args.batch_size, "runs": args.benchmark_runs,
            "ms": ms, "images_per_s": 1000 * args.batch_size / total}


def main(argv):
    args = parse_retrieval_args(build_parser(), argv)
    if args.use_onnx and args.use_gpu:
        raise UserError("--use-onnx runs onnxruntime on the CPU: pass --use-gpu False")
    use_gpu = False if args.use_onnx else resolve_use_gpu(args.use_gpu)
    fmt, tag = ("onnx", "_onnx") if args.use_onnx else ("paddle", "_inference")
    model = load_exported(args.model_dir, args.bit, fmt, use_gpu, args.num_threads)
    fit_arch_to_model(args, read_export_info(args.model_dir, args.bit), model.files[0])
    fit_sizes_to_model(args, model.image_size, model.files[0])
    args.pipeline = query_pipeline_of(args)
    db = open_database(args)
    load_query_image(args.img, args.resize_size, args.crop_size,  # an unreadable query fails now
                     upright=not args.ignore_exif_orientation, pipeline=args.pipeline)
    print(f"model: {' + '.join(model.files)} on {'onnxruntime, ' if args.use_onnx else ''}"
          f"{'GPU' if use_gpu else f'CPU ({args.num_threads} threads)'}")
    for _ in range(args.warmup):
        model.run(np.zeros((args.batch_size, 3, args.crop_size, args.crop_size), np.float32))

    def build(start=0):
        codes, labels, _ = encode_batches(model.run, database_loader(database_tail(db, start),
                                                                     args.db_batch_size),
                                          "encoding database")
        return codes, labels

    cache = database_code_cache(args, model.files, tag=tag, device="gpu" if use_gpu else "cpu")
    packed, labels, source = cache.get(build, len(db), args.rebuild_cache, (db.paths, db.labels))
    index = database_search_index(args, cache, packed, tag=tag)
    indices, distances = query_pipeline(args, model, packed, index, 1, Timer(),
                                        database_index(args.img, db))
    extra = {"model_files": list(model.files), "index": index.spec}
    if args.benchmark:
        extra["benchmark"] = benchmark(args, model, packed, index, len(db))
    return write_retrieval_report(args, db, indices[0], distances[0],
                                  db.labels if labels is None else labels, source,
                                  tag=tag, extra=extra)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
