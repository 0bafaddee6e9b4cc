"""Export HashNet for Paddle Inference (or ONNX), then check the export.

    python export_model.py --bit 64 --pretrained output/model_best_64 \\
        --img_size 224 --save-inference-dir output/inference
    python export_model.py --bit 64 --pretrained output/model_best_64 \\
        --img_size 224 --save-inference-dir output/onnx --format onnx

``utils/inference/export.py`` does the work: ``paddle.jit.save`` with input
spec [None, 3, S, S] writes ``<save-inference-dir>/inference_{bit}.json`` +
``.pdiparams`` on Paddle 3.x (``.pdmodel`` + ``.pdiparams`` on Paddle 2.x)
into a temporary folder; they are loaded back with Paddle Inference and
compared with the dygraph model on a batch, and only if the largest absolute
difference of the hash-layer outputs is <= 1e-4 are they moved into place.
Otherwise nothing is installed and the exit code is 1. ``--format onnx``
converts that export with paddle2onnx and checks and installs
``inference_{bit}.onnx`` the same way, run by onnxruntime (both optional:
requirements-dev.txt).

--pretrained defaults to output/model_best_<bit>, else output/weights_<bit>.
"""
import argparse
import os
import sys

import utils  # noqa: F401  (first: silences Paddle's import-time ccache warning)
import paddle

from deploy.cli import THREADS, SIDE, Range, add, check_ranges, check_sizes
import models
from utils.inference.checkpoints import load_trained_model
from utils.base.errors import run_cli
from utils.base.io import ensure_writable_dir
from utils.base.runtime import available_cores, set_num_threads
from models.registry import BITS
from utils.data.caffe_pipeline import PIPELINES, resolve_pipeline
from utils.inference.export import FORMATS, TOLERANCE, ExportMismatch, export_checked

RUNTIME = {"paddle": "Paddle Inference", "onnx": "onnxruntime"}


def build_parser():
    p = argparse.ArgumentParser(description="export HashNet to a Paddle Inference model")

    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--bit", type=int, default=64, choices=BITS)
    a("--img_size", "--img-size", dest="img_size", type=int, default=224, valid=SIDE,
      help="input side S of the exported [None, 3, S, S] spec (= the crop size; recorded in "
           "inference_<bit>.export.json, which infer.py reads)")
    a("--save-inference-dir", "--save_inference_dir", dest="save_inference_dir",
      default="output/inference")
    a("--pretrained", default=None,
      help="checkpoint path without .pdparams (default output/model_best_<bit>, "
           "else output/weights_<bit>)")
    a("--arch", default=models.DEFAULT_ARCH, choices=models.ARCHS,
      help="the checkpoint's backbone (recorded in inference_<bit>.export.json)")
    a("--input_pipeline", "--input-pipeline", dest="input_pipeline", default="auto",
      choices=PIPELINES, help="the transforms infer.py applies (auto: caffe for --arch "
                              "caffenet); recorded in inference_<bit>.export.json")
    a("--check-batch", "--check_batch", dest="check_batch", type=int, default=4,
      valid=Range(low=1, high=256), help="images in the post-export check batch")
    a("--format", choices=FORMATS, default="paddle",
      help="paddle: inference_<bit>.json + .pdiparams; onnx: inference_<bit>.onnx "
           "(paddle2onnx, checked on onnxruntime)")
    a("--num_threads", "--num-threads", dest="num_threads", type=int, default=available_cores(),
      valid=THREADS)
    a("--debug", action="store_true", help="show tracebacks for bad input")
    return p


def main(argv):
    parser = build_parser()
    args = check_ranges(parser, parser.parse_args(argv))
    arch = models.model_class(args.arch)
    check_sizes(args.img_size, flag="--img_size", min_crop=arch.min_crop, label=arch.label)
    set_num_threads(args.num_threads)
    ensure_writable_dir(args.save_inference_dir, "--save-inference-dir")  # before any work
    model, weights = load_trained_model(args.bit, args.pretrained, args.arch)
    print(f"loaded {weights} ({args.bit} bits, --arch {args.arch})")
    out_dir = args.save_inference_dir
    info = {"weights": weights, "paddle": paddle.__version__, "arch": args.arch,
            "input_pipeline": resolve_pipeline(args.input_pipeline, args.arch)}
    verdict = "OK"
    try:
        diff, flips, files = export_checked(model, out_dir, args.img_size, info, args.check_batch,
                                            args.num_threads, tolerance=TOLERANCE,
                                            fmt=args.format)
    except ExportMismatch as mismatch:
        diff, flips, _ = mismatch.args
        verdict = "FAILED"
    print(f"export check {verdict}: {RUNTIME[args.format]} vs dygraph on a batch of "
          f"{args.check_batch} {args.img_size}px images: max abs diff {diff:.3g} "
          f"(tolerance {TOLERANCE:g} x max(1, max |z|)), {flips} of "
          f"{args.check_batch * args.bit} code bits differ")
    if verdict != "OK":
        print("error: the exported model does not reproduce the dygraph model; "
              "nothing was installed", file=sys.stderr)
        sys.exit(1)
    print(f"{args.format} inference model saved with prefix "
          f"{os.path.join(out_dir, f'inference_{args.bit}')} (Paddle {paddle.__version__}):")
    for f in files:
        print(f"  {f}  ({os.path.getsize(f) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
