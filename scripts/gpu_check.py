"""GPU self-check: train a few steps on a tiny generated set on the GPU (1
GPU, then 2 when there are) and compare the losses and final parameters with
CPU values recorded in the repo; then export and run Paddle Inference on GPU.

    bash scripts/gpu_check.sh                   # = python -m scripts.gpu_check
    python -m scripts.gpu_check --record          # regenerate the CPU reference (CPU only)

One verdict line per check (``PASS``/``FAIL name: measured vs tolerance``);
exit 1 if any fails. Without a GPU only the CPU part runs (the same training
on the CPU against the recorded values, export and CPU inference) and it says
so, exit 0. Dropout is off and every run starts from the same CPU-built
initial weights (GPU and CPU random generators differ; the hash layer's std
is raised to 1 so that the loss moves), so the runs differ only by
floating-point arithmetic. 2 GPUs x 8 images make the update of
1 x 16 (README, "Several GPUs"), so both compare with the one reference.

Tolerances: each epoch's mean loss within ``LOSS_RTOL`` (relative); each
parameter's update (final - initial) within ``UPDATE_RTOL`` relative in
norm, and in its projection on a fixed random unit vector relative to that
projection's typical size, norm / sqrt(size) (a gradient of the wrong scale
or sign fails one of the two); Paddle Inference's hash
outputs within ``INFERENCE_ATOL`` of the dygraph model's (export_model.py's
own tolerance).
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

from utils import distributed as dist
from utils.base.errors import UserError, run_cli
from utils.base.flags import AT_LEAST_0, add, check_ranges

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_check_reference.json")
BIT, BATCH, EPOCHS = 16, 16, 2
N_TRAIN, N_TEST, N_EXTRA, IMAGE_SIZE = 32, 8, 8, 72
LOSS_RTOL, UPDATE_RTOL, INFERENCE_ATOL = 1e-3, 1e-2, 1e-4
HASH_INIT_SCALE = 100.0  # hash-layer init std 0.01 -> 1 (see initial_state)


def make_tiny_set(root):
    from scripts.demo.data import generate
    image_dir, list_dir = os.path.join(root, "images"), os.path.join(root, "lists")
    generate(image_dir, list_dir, N_TRAIN, N_TEST, N_EXTRA, IMAGE_SIZE, seed=0)
    return image_dir, list_dir


def run_argv(data, out, batch):
    image_dir, list_dir = data
    return ["--dataset", "demo", "--data-path", image_dir, "--list-dir", list_dir,
            "--bit", str(BIT), "--crop_size", "64", "--resize_size", str(IMAGE_SIZE),
            "--arch", CHECK_ARCH, "--backbone", "random", "--seed", "0", "-bs", str(batch), "-lr", "0.1", "-wd", "0",
            "-e", str(EPOCHS), "-ee", str(EPOCHS), "--num_threads", "2",
            "--output-dir", os.path.join(out, "output"), "--log_path", os.path.join(out, "logs")]


def initial_state(seed=0):
    """The initial weights every run starts from, built on the CPU."""
    import paddle
    import models
    device = paddle.get_device()
    paddle.set_device("cpu")
    paddle.seed(seed)
    state = {k: v.numpy() for k, v in models.build("alexnet", BIT).state_dict().items()}
    paddle.set_device(device)
    # At the usual init (std 0.01) z is ~0, so the loss sits at its value for
    # u = 0 and would not tell a wrong step from a right one; std 1 puts
    # tanh(βz) in its sensitive range.
    state["classifier_plus.6.weight"] = state["classifier_plus.6.weight"] * HASH_INIT_SCALE
    return state


CHECK_ARCH = "alexnet-gpu-check"


def register_check_model():
    """Register the check's model, ``--arch alexnet-gpu-check``: AlexNet
    HashNet with dropout off and the CPU-built initial weights. Once per
    process: the launcher's parent parses ``--arch`` before its workers run."""
    import models
    from models.alexnet import disable_dropout
    from models.hashnet import HashNet
    if CHECK_ARCH in models.ARCHS:
        return

    @models.register(CHECK_ARCH)
    class HashNetForCheck(HashNet):
        def __init__(self, bit):
            super().__init__(bit)
            disable_dropout(self)
            self.set_state_dict(initial_state())


def train_worker(args):
    """engine.run with the check's model, in each process."""
    from utils.training import engine
    register_check_model()
    engine.run(args)


def train(device, data, out, gpus=1):
    """Train on ``device`` ('cpu' or 'gpu') with ``gpus`` processes; return the summary."""
    import paddle
    from utils.config import parse_args
    register_check_model()   # parse_args checks --arch against the registry
    if gpus == 1:
        paddle.set_device("cpu" if device == "cpu" else "gpu:0")
        train_worker(parse_args(run_argv(data, out, BATCH)))
    else:
        from utils.distributed import launch
        args = parse_args(run_argv(data, out, BATCH // gpus), batch_size=BATCH // gpus)
        args.nprocs = gpus
        launch(train_worker, args)
    return summarize(os.path.join(out, "output", f"last_{BIT}"))


def summarize(prefix):
    """A few numbers per run: epoch losses; per parameter the update's norm
    and its projection on a fixed random unit vector."""
    import paddle
    history = paddle.load(prefix + ".pdopt")["training"]["history"]
    final = paddle.load(prefix + ".pdparams")
    init = initial_state()
    updates = {}
    for key in sorted(init):
        update = final[key].numpy().astype(np.float64).ravel() - init[key].astype(np.float64).ravel()
        direction = np.random.default_rng(0).standard_normal(update.size)
        updates[key] = {"norm": float(np.linalg.norm(update)), "size": update.size,
                        "projection": float(update @ direction / np.linalg.norm(direction))}
    return {"losses": [float(h["loss"]) for h in history], "updates": updates}


def compare(measured, reference):
    """Verdicts [(passed, line)] of losses and parameter updates."""
    verdicts = []
    loss_err = max(abs(m - r) / abs(r) for m, r in zip(measured["losses"], reference["losses"]))
    same_len = len(measured["losses"]) == len(reference["losses"])
    verdicts.append((same_len and loss_err <= LOSS_RTOL,
                     f"losses {measured['losses']}: largest relative difference {loss_err:.2e} "
                     f"(tolerance {LOSS_RTOL:g})"))
    worst, worst_key = 0.0, None
    for key, ref in reference["updates"].items():
        got = measured["updates"][key]
        # a projection on a random unit vector is typically norm / sqrt(size)
        typical = max(ref["norm"], 1e-12) / np.sqrt(ref["size"])
        err = max(abs(got["norm"] - ref["norm"]) / max(ref["norm"], 1e-12),
                  abs(got["projection"] - ref["projection"]) / typical)
        if err >= worst:
            worst, worst_key = err, key
    verdicts.append((worst <= UPDATE_RTOL,
                     f"parameter updates: largest difference {worst:.2e} of the update's size "
                     f"({worst_key}; tolerance {UPDATE_RTOL:g})"))
    return verdicts


def check_inference(prefix, out, use_gpu):
    """Export ``prefix`` (checked on the CPU, as export_model.py does) and
    compare Paddle Inference on ``use_gpu`` with the dygraph model."""
    from models.hashnet import load_hashnet
    from utils.inference.export import compare_with_dygraph, dygraph_outputs, export_checked
    export_dir = os.path.join(out, "inference")
    model, weights = load_hashnet(BIT, prefix)
    export_checked(model, export_dir, 64, {"weights": weights}, num_threads=2)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    err, _ = compare_with_dygraph(export_dir, BIT, x, dygraph_outputs(model, x), use_gpu, 2)
    where = "GPU" if use_gpu else "CPU"
    return err <= INFERENCE_ATOL, (f"export + Paddle Inference on {where}: largest difference "
                                   f"{err:.2e} (tolerance {INFERENCE_ATOL:g})")


def plan(gpus):
    """The checks to run with ``gpus`` visible GPUs: (name, device, processes)."""
    checks = [("CPU", "cpu", 1)]
    if gpus >= 1:
        checks.append(("1 GPU", "gpu", 1))
    if gpus >= 2:
        checks.append(("2 GPUs", "gpu", 2))
    return checks


def report(name, verdicts):
    for passed, line in verdicts:
        print(f"{'PASS' if passed else 'FAIL'} {name}: {line}", flush=True)
    return all(passed for passed, _ in verdicts)


def run_checks(reference_file, work, gpus):
    with open(reference_file) as f:
        reference = json.load(f)
    data = make_tiny_set(os.path.join(work, "data"))
    ok = True
    last = {}
    for name, device, processes in plan(gpus):
        out = os.path.join(work, name.replace(" ", "_"))
        ok &= report(name, compare(train(device, data, out, processes), reference))
        last[device] = os.path.join(out, "output", f"last_{BIT}")
    ok &= report("CPU", [check_inference(last["cpu"], os.path.join(work, "cpu_infer"), False)])
    if gpus:
        ok &= report("1 GPU", [check_inference(last["gpu"], os.path.join(work, "gpu_infer"), True)])
    else:
        print("no GPU visible (CPU-only Paddle or no CUDA device): GPU checks skipped, "
              "CPU part done", flush=True)
    return ok


def main(argv):
    p = argparse.ArgumentParser(prog="python -m scripts.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--record", action="store_true",
                   help="train on the CPU and write the reference values (to --reference)")
    p.add_argument("--reference", default=REFERENCE, help="the recorded CPU values (JSON)")
    add(p, "--gpus", type=int, default=None, valid=AT_LEAST_0,
        help="GPUs to check (default: all visible; 0 = CPU part only)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = check_ranges(p, p.parse_args(argv))
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        if args.record:
            summary = train("cpu", make_tiny_set(os.path.join(work, "data")), work)
            from utils.base.io import atomic_write_json
            atomic_write_json(summary, args.reference)
            print(f"wrote {args.reference}: losses {summary['losses']}")
            return 0
        if not os.path.isfile(args.reference):
            raise UserError(f"{args.reference} not found: record it with "
                            "python -m scripts.gpu_check --record")
        gpus = dist.gpu_count() if args.gpus is None else args.gpus
        if gpus > dist.gpu_count():
            raise UserError(f"--gpus {gpus}: only {dist.gpu_count()} GPU(s) visible")
        return 0 if run_checks(args.reference, work, gpus) else 1


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
