"""Seconds to load a full AlexNet HashNet checkpoint (about 230 MB each
file): ``paddle.load`` (the baseline, which would run code from a crafted
file) against the restricted loader (utils/base/safe_pickle.py), in one
run, on the same files; the best of ``--repeats`` reads counts (the page
cache is warm for both). The last column is the whole
``utils.base.checkpoint.load_state_file``, which also checks the file's
sha256 against the checkpoint manifest (paddle.load checks nothing).

    python benchmarks/bench_load.py [--bit 64] [--repeats 5] [--dir /tmp]
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402,F401  (first: silences Paddle's import-time ccache warning)
import paddle  # noqa: E402

from models.alexnet import AlexNetHash  # noqa: E402
from utils.base.checkpoint import load_state_file, save_checkpoint  # noqa: E402
from utils.base.safe_pickle import load_paddle_file  # noqa: E402
from utils.training.schedules import build_optimizer  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bit", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="where the checkpoint is written (removed at the end)")
    return parser.parse_args(argv)


def write_checkpoint(folder, bit):
    model = AlexNetHash(bit)
    optimizer = build_optimizer("sgd", model.parameters(), 1e-3, 5e-4)
    model(paddle.randn([2, 3, 64, 64])).sum().backward()
    optimizer.step()  # the momentum buffers: a .pdopt as large as the weights
    prefix = os.path.join(folder, f"bench_{bit}")
    save_checkpoint(prefix, model, optimizer, {"epoch": 1, "history": []})
    return prefix


def best_seconds(load, path, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        load(path)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-load-") as folder:
        prefix = write_checkpoint(folder, args.bit)
        print(f"{'file':<18} {'MB':>7} {'paddle.load s':>14} {'restricted s':>13} {'ratio':>6} "
              f"{'+ manifest s':>13}")
        ratios = []
        for suffix in (".pdparams", ".pdopt"):
            path = prefix + suffix
            paddle.load(path)  # warm the page cache and Paddle's lazy imports once
            base = best_seconds(paddle.load, path, args.repeats)
            ours = best_seconds(load_paddle_file, path, args.repeats)
            whole = best_seconds(lambda p: load_state_file(p, "checkpoint"), path, args.repeats)
            ratios.append(ours / base)
            print(f"{os.path.basename(path):<18} {os.path.getsize(path) / 1e6:>7.1f} "
                  f"{base:>14.3f} {ours:>13.3f} {ours / base:>5.2f}x {whole:>13.3f}", flush=True)
    print(f"restricted load / paddle.load: {ratios[0]:.2f}x (.pdparams), "
          f"{ratios[1]:.2f}x (.pdopt)")


if __name__ == "__main__":
    main()
