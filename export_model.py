"""Export HashNet for Paddle Inference, then check the export.

    python export_model.py --bit 64 --pretrained output/model_best_64 \\
        --img_size 224 --save-inference-dir output/inference

``paddle.jit.save`` with input spec [None, 3, S, S] writes
``<save-inference-dir>/inference_{bit}.json`` + ``.pdiparams`` on Paddle 3.x
(``.pdmodel`` + ``.pdiparams`` on Paddle 2.x). The files are written to a
temporary folder first, loaded back with Paddle Inference and compared with
the dygraph model on a batch; only if the largest absolute difference of the
hash-layer outputs is <= 1e-4 are they moved into place. Otherwise nothing is
installed and the exit code is 1.

--pretrained defaults to output/model_best_<bit>, else output/weights_<bit>.
"""
import argparse
import os
import shutil
import sys

import numpy as np
import utils  # noqa: F401  (first: silences Paddle's import-time ccache warning)
import paddle
from paddle.static import InputSpec

from deploy.cli import THREADS, SIDE, Range, add, check_ranges, check_sizes
from utils.inference.predictor import (MODEL_SUFFIXES, InferenceModel, export_info_path,
                                      write_export_manifest)
from models.hashnet import load_hashnet, sign_codes
from utils.config import BITS
from utils.datasets import normalize
from utils.base.errors import run_cli
from utils.base.io import (atomic_write_json, check_not_cut_short, disk_full_is_user_error,
                      ensure_writable_dir, fsync_dir, fsync_file, make_temp_dir,
                      remove_leftovers)
from utils.base.runtime import available_cores, set_num_threads

TOLERANCE = 1e-4


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
    a("--check-batch", "--check_batch", dest="check_batch", type=int, default=4,
      valid=Range(low=1, high=256), help="images in the post-export check batch")
    a("--num_threads", "--num-threads", dest="num_threads", type=int, default=available_cores(),
      valid=THREADS)
    a("--debug", action="store_true", help="show tracebacks for bad input")
    return p


def check_batch(n, size, seed=0):
    """Random images in pixel range, normalised like the test transform."""
    return normalize(np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32))


def parameter_bytes(model):
    """The weights' payload: a complete .pdiparams holds at least this much."""
    return sum(int(np.prod(p.shape)) * p.element_size() for p in model.state_dict().values())


def compare(x, z_dygraph, exported_dir, bit, num_threads):
    """The saved model vs the dygraph outputs ``z_dygraph`` of batch ``x``:
    (max abs diff, number of differing code bits)."""
    z_saved = InferenceModel(exported_dir, bit, use_gpu=False, num_threads=num_threads).run(x)
    diff = float(np.abs(z_dygraph - z_saved).max())
    flips = int((sign_codes(z_dygraph) != sign_codes(z_saved)).sum())
    return diff, flips


def install(tmp_dir, out_dir, bit):
    """Move the checked files into place; drop the other format's program
    file of the same name, so program and parameters always match."""
    os.makedirs(out_dir, exist_ok=True)
    manifest = os.path.basename(write_export_manifest(tmp_dir, bit))
    written = sorted(os.listdir(tmp_dir), key=lambda name: name != manifest)  # manifest first
    for suffix in MODEL_SUFFIXES:
        stale = os.path.join(out_dir, f"inference_{bit}{suffix}")
        if f"inference_{bit}{suffix}" not in written and os.path.isfile(stale):
            os.remove(stale)
    for name in written:
        fsync_file(os.path.join(tmp_dir, name))
        os.replace(os.path.join(tmp_dir, name), os.path.join(out_dir, name))
    fsync_dir(out_dir)
    return [os.path.join(out_dir, name) for name in written]


def main(argv):
    parser = build_parser()
    args = check_ranges(parser, parser.parse_args(argv))
    check_sizes(args.img_size, flag="--img_size")
    set_num_threads(args.num_threads)
    ensure_writable_dir(args.save_inference_dir, "--save-inference-dir")  # before any work
    model, weights = load_hashnet(args.bit, args.pretrained)
    print(f"loaded {weights} ({args.bit} bits)")
    out_dir = args.save_inference_dir
    os.makedirs(out_dir, exist_ok=True)
    remove_leftovers(out_dir, ".export-")   # temp folders of killed exports
    tmp_dir = make_temp_dir(out_dir, ".export-")
    x = check_batch(args.check_batch, args.img_size)
    with paddle.no_grad():   # the dygraph reference, before jit.save touches the model
        z_dygraph = model(paddle.to_tensor(x)).numpy()
    try:
        spec = [InputSpec(shape=[None, 3, args.img_size, args.img_size], dtype="float32", name="x")]
        params = f"inference_{args.bit}.pdiparams"
        with disk_full_is_user_error(os.path.join(out_dir, params)):
            paddle.jit.save(model, os.path.join(tmp_dir, f"inference_{args.bit}"), input_spec=spec)
        check_not_cut_short(os.path.join(tmp_dir, params), parameter_bytes(model),
                            os.path.join(out_dir, params))
        atomic_write_json({"bit": args.bit, "img_size": args.img_size, "weights": weights,
                           "paddle": paddle.__version__},
                          export_info_path(tmp_dir, args.bit))
        diff, flips = compare(x, z_dygraph, tmp_dir, args.bit, args.num_threads)
        verdict = "OK" if diff <= TOLERANCE else "FAILED"
        print(f"export check {verdict}: Paddle Inference vs dygraph on a batch of "
              f"{args.check_batch} {args.img_size}px images: max abs diff {diff:.3g} "
              f"(tolerance {TOLERANCE:g}), {flips} of {args.check_batch * args.bit} code bits differ")
        if verdict != "OK":
            print("error: the exported model does not reproduce the dygraph model; "
                  "nothing was installed", file=sys.stderr)
            sys.exit(1)
        files = install(tmp_dir, out_dir, args.bit)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    print(f"inference model saved with prefix {os.path.join(out_dir, f'inference_{args.bit}')} "
          f"(Paddle {paddle.__version__}):")
    for f in files:
        print(f"  {f}  ({os.path.getsize(f) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
