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

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from deploy.cli import (add_retrieval_args, fit_arch_to_model, fit_sizes_to_model,  # noqa: E402
                        parse_retrieval_args, set_pipeline, str2bool)
from deploy.retrieve import (Encoder, Timer, load_query, open_coded_database,  # noqa: E402
                             query_topk, retrieve)
from utils.base.errors import UserError, run_cli  # noqa: E402
from utils.base.flags import AT_LEAST_0, AT_LEAST_1, BATCH, add  # noqa: E402
from utils.inference.export import load_exported  # noqa: E402
from utils.inference.predictor import read_export_info, resolve_use_gpu  # noqa: E402


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


def benchmark(args, model, database):
    timer = Timer()
    for _ in range(args.benchmark_runs):
        query_topk(args, model.run, database, args.batch_size, timer)
    ms = {k: 1000 * v / args.benchmark_runs for k, v in timer.total.items()}
    total = sum(ms.values())
    device = "GPU" if model.use_gpu else f"CPU, {args.num_threads} threads"
    print(f"benchmark ({device}, batch {args.batch_size}, {args.benchmark_runs} runs after "
          f"{args.warmup} warm-up runs), mean per batch:")
    print(f"  preprocess  {ms['preprocess']:9.2f} ms")
    print(f"  inference   {ms['inference']:9.2f} ms")
    print(f"  postprocess {ms['postprocess']:9.2f} ms (sign + Hamming top-{args.topk} "
          f"over {len(database.images):,} codes, --index {database.index.spec})")
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
    set_pipeline(args)
    load_query(args)   # an unreadable query fails before anything is encoded
    print(f"model: {' + '.join(model.files)} on {'onnxruntime, ' if args.use_onnx else ''}"
          f"{'GPU' if use_gpu else f'CPU ({args.num_threads} threads)'}")
    for _ in range(args.warmup):
        model.run(np.zeros((args.batch_size, 3, args.crop_size, args.crop_size), np.float32))
    encoder = Encoder(query=model.run, database=lambda n: model.run, files=tuple(model.files),
                      tag=tag, device="gpu" if use_gpu else "cpu")
    database = open_coded_database(args, encoder, args.db_batch_size)
    extra = {"model_files": list(model.files), "index": database.index.spec}
    if args.benchmark:
        extra["benchmark"] = benchmark(args, model, database)
    return retrieve(args, encoder, database, extra)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
