"""Images/s of encoding (model -> z) at 224 px and at the demo's 64 px, batch
32: dygraph (the baseline) against the fast path of utils/inference/encoder.py (on a
CPU: Paddle Inference with oneDNN on an export of the weights), in one run. The
export's own cost (paid once per evaluation) is printed beside it.

With ``--checkpoint PREFIX --data-path DIR --list FILE`` it also encodes that
list both ways and prints the code agreement and the largest |Δz| (the
parity that tests/inference/test_encoder.py asserts on the tiny set).

    python benchmarks/bench_encode.py [--arch vgg16] [--sizes 224 64] [--batch 32] [--batches 4]
    python benchmarks/bench_encode.py --sizes 64 --checkpoint output/demo/model_best_64 \\
        --data-path datasets/demo --list data/demo/database.txt
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402,F401  (first: silences Paddle's import-time ccache warning)
import numpy as np  # noqa: E402
import paddle  # noqa: E402

import models  # noqa: E402
from utils.inference.checkpoints import load_trained_model  # noqa: E402
from utils.data.loaders import ImageList, build_loader  # noqa: E402
from utils.inference.encoder import dygraph_forward, inference_forward  # noqa: E402
from utils.base.runtime import available_cores, set_num_threads  # noqa: E402


def images_per_second(forward, x, batches):
    forward(x)  # warm-up: the first call allocates (and oneDNN builds its kernels)
    start = time.perf_counter()
    for _ in range(batches):
        forward(x)
    return len(x) * batches / (time.perf_counter() - start)


def speed(model, size, batch, batches):
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    base = images_per_second(dygraph_forward(model), x, batches)
    start = time.perf_counter()
    fast_forward = inference_forward(model)
    export_s = time.perf_counter() - start
    fast = images_per_second(fast_forward, x, batches)
    print(f"{size:>5} {base:>15.1f} {fast:>15.1f} {fast / base:>6.1f}x {export_s:>9.1f}s",
          flush=True)
    return fast / base


def parity(args):
    """Codes and z of a list, dygraph vs the fast encoder."""
    model, weights = load_trained_model(args.bit, args.checkpoint, args.arch)
    data = ImageList(args.list, args.data_path, args.num_class, train=False,
                     resize_size=args.resize_size, crop_size=args.crop_size)
    dygraph, fast = dygraph_forward(model), inference_forward(model)
    diffs, agree, bits = [], 0, 0
    for x, _, _ in build_loader(data, args.batch, shuffle=False):
        z_d, z_f = dygraph(x.numpy()), fast(x.numpy())
        diffs.append(np.abs(z_d - z_f).max())
        agree += int(((z_d >= 0) == (z_f >= 0)).sum())
        bits += z_d.size
    print(f"parity on {args.list} ({len(data)} images, {weights}): {agree}/{bits} code bits "
          f"agree ({100 * agree / bits:.4f}%), max |Δz| {max(diffs):.3g}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=4, help="timed batches per measurement")
    p.add_argument("--checkpoint", help="parity: a HashNet checkpoint prefix")
    p.add_argument("--data-path", default="datasets/demo")
    p.add_argument("--list", default="data/demo/database.txt")
    p.add_argument("--num_class", type=int, default=10)
    p.add_argument("--bit", type=int, default=64)
    p.add_argument("--arch", default=models.DEFAULT_ARCH, choices=models.ARCHS,
                   help="the backbone to time (random weights)")
    p.add_argument("--crop_size", type=int, default=64)
    p.add_argument("--resize_size", type=int, default=72)
    args = p.parse_args()
    cores = available_cores()
    set_num_threads(cores)
    paddle.seed(0)
    model = models.build(args.arch, 64)
    print(f"--arch {args.arch}: paddle {paddle.__version__} on {paddle.device.get_device()}, "
          f"{cores} threads, "
          f"batch {args.batch}, {args.batches} timed batches after one warm-up")
    print(f"{'size':>5} {'dygraph img/s':>15} {'encoder img/s':>15} {'ratio':>7} {'export':>10}")
    ratios = {size: speed(model, size, args.batch, args.batches) for size in args.sizes}
    if args.checkpoint:
        parity(args)
    if 224 in ratios:
        print(f"encode speed-up at 224 px: {ratios[224]:.1f}x")


if __name__ == "__main__":
    main()
