"""Images/s of a HashNet training step and of encoding, at 224 px and at the
demo's 64 px, against a baseline measured in the same run.

Baseline = Paddle's defaults: one CPU thread and ``clear_grad()`` zeroing
every gradient; ours = the engine (``utils.training.engine.train_step``: all cores,
gradients released instead of zeroed).

    python benchmarks/bench_train_step.py [--sizes 224 64] [--batch 64] [--steps 3]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from models.alexnet import AlexNetHash  # noqa: E402
from utils.retrieval.codes import sign_codes  # noqa: E402
from utils.base.runtime import available_cores, set_num_threads  # noqa: E402
from utils.training.step import train_step  # noqa: E402
from utils.methods.hashnet import HashNetLoss  # noqa: E402
from utils.training.schedules import build_optimizer  # noqa: E402


def baseline_step(model, criterion, optimizer, x, y, ind):
    loss = criterion(model(x), y, ind)
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    return float(loss)


def images_per_second(fn, batch, steps):
    fn()  # warm-up: first call allocates
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return batch * steps / (time.perf_counter() - start)


def measure(size, batch, steps, threads, step_fn):
    set_num_threads(threads)
    paddle.seed(0)
    model = AlexNetHash(64)
    criterion = HashNetLoss(10 * batch, 64, 80)
    optimizer = build_optimizer("sgd", model.parameters(), 1e-3, 5e-4)
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((batch, 3, size, size), dtype=np.float32))
    y = paddle.to_tensor((rng.random((batch, 80)) < 0.05).astype(np.float32))
    ind = paddle.arange(batch)
    model.train()
    train = images_per_second(lambda: step_fn(model, criterion, optimizer, x, y, ind), batch, steps)
    model.eval()
    with paddle.no_grad():
        enc = images_per_second(lambda: sign_codes(model(x)), batch, steps)
    return train, enc


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    cores = available_cores()
    print(f"paddle {paddle.__version__} on {paddle.device.get_device()}, {cores} cores, "
          f"batch {args.batch}, {args.steps} timed steps")
    print(f"{'size':>5} {'what':>8} {'baseline img/s':>15} {'engine img/s':>13} {'ratio':>6}")
    for size in args.sizes:
        base = measure(size, args.batch, args.steps, 1, baseline_step)
        ours = measure(size, args.batch, args.steps, cores, train_step)
        for i, what in enumerate(("train", "encode")):
            print(f"{size:>5} {what:>8} {base[i]:>15.1f} {ours[i]:>13.1f} {ours[i] / base[i]:>5.2f}x")


if __name__ == "__main__":
    main()
