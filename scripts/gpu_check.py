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
1 x 16 (docs/training.md, "Several GPUs"), so both compare with the one reference.

Tolerances: each epoch's mean loss within ``LOSS_RTOL`` (relative); each
parameter's update (final - initial) within ``UPDATE_RTOL`` relative in
norm, and in its projection on a fixed random unit vector relative to that
projection's typical size, norm / sqrt(size) (a gradient of the wrong scale
or sign fails one of the two); Paddle Inference's hash
outputs within ``allowed_difference(z)`` of the dygraph model's z, the export
check's own tolerance (utils/inference/export.py: ``TOLERANCE`` x max(1, max |z|)).
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

import models
from utils.base import distributed as dist
from utils.base.errors import UserError, run_cli
from utils.base.flags import AT_LEAST_0, add, check_ranges

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "gpu_check_reference.json")   # the default arch's
CHECK_SUFFIX = "-gpu-check"


def reference_file(arch):
    """The recorded CPU values of ``arch`` (the default arch's file has no suffix)."""
    return (REFERENCE if arch == models.DEFAULT_ARCH
            else os.path.join(HERE, f"gpu_check_reference_{arch}.json"))


BIT, BATCH, EPOCHS = 16, 16, 2
N_TRAIN, N_TEST, N_EXTRA, IMAGE_SIZE = 32, 8, 8, 72
LOSS_RTOL, UPDATE_RTOL = 1e-3, 1e-2
HASH_INIT_SCALE = 100.0  # hash-layer init std 0.01 -> 1 (see initial_state)


def make_tiny_set(root):
    from scripts.demo.data import generate
    image_dir, list_dir = os.path.join(root, "images"), os.path.join(root, "lists")
    generate(image_dir, list_dir, N_TRAIN, N_TEST, N_EXTRA, IMAGE_SIZE, seed=0)
    return image_dir, list_dir


def run_argv(data, out, batch, arch=models.DEFAULT_ARCH):
    image_dir, list_dir = data
    return ["--dataset", "demo", "--data-path", image_dir, "--list-dir", list_dir,
            "--bit", str(BIT), "--crop_size", "64", "--resize_size", str(IMAGE_SIZE),
            "--arch", arch + CHECK_SUFFIX, "--backbone", "random", "--seed", "0", "-bs", str(batch), "-lr", "0.1", "-wd", "0",
            "-e", str(EPOCHS), "-ee", str(EPOCHS), "--num_threads", "2",
            "--output-dir", os.path.join(out, "output"), "--log_path", os.path.join(out, "logs")]


def initial_state(arch=models.DEFAULT_ARCH, seed=0):
    """The initial weights every run of ``arch`` starts from, built on the CPU."""
    import paddle
    from utils.base.checkpoint import hash_weight_key
    device = paddle.get_device()
    paddle.set_device("cpu")
    paddle.seed(seed)
    model = models.build(arch, BIT)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    paddle.set_device(device)
    # At the usual init (std 0.01) z is ~0, so the loss sits at its value for
    # u = 0 and would not tell a wrong step from a right one; std 1 puts
    # tanh(βz) in its sensitive range.
    key = hash_weight_key(model)
    state[key] = state[key] * HASH_INIT_SCALE
    return state


def register_check_model(arch=models.DEFAULT_ARCH):
    """Register the check's model, ``--arch <arch>-gpu-check``: the arch with
    dropout off and the CPU-built initial weights."""
    from models.alexnet import disable_dropout
    if arch + CHECK_SUFFIX in models.ARCHS:   # already, in this process
        return

    @models.register(arch + CHECK_SUFFIX)
    class ModelForCheck(models.model_class(arch)):
        def __init__(self, bit):
            super().__init__(bit)
            disable_dropout(self)
            self.set_state_dict(initial_state(arch))


def train_worker(args):
    """engine.run with the check's model, in each process."""
    from utils.training import engine
    register_check_model(args.arch[:-len(CHECK_SUFFIX)])
    engine.run(args)


def train(device, data, out, gpus=1, arch=models.DEFAULT_ARCH):
    """Train on ``device`` ('cpu' or 'gpu') with ``gpus`` processes; return the summary."""
    import paddle
    from utils.training.config import parse_args
    register_check_model(arch)   # parse_args takes --arch's choices from the registry
    if gpus == 1:
        paddle.set_device("cpu" if device == "cpu" else "gpu:0")
        train_worker(parse_args(run_argv(data, out, BATCH, arch)))
    else:
        from utils.base.distributed import launch
        args = parse_args(run_argv(data, out, BATCH // gpus, arch), batch_size=BATCH // gpus)
        args.nprocs = gpus
        launch(train_worker, args)
    return summarize(os.path.join(out, "output", f"last_{BIT}"), arch)


def summarize(prefix, arch=models.DEFAULT_ARCH):
    """A few numbers per run: epoch losses; per parameter the update's norm
    and its projection on a fixed random unit vector."""
    from utils.base.checkpoint import load_state_file
    history = load_state_file(prefix + ".pdopt", "training state")["training"]["history"]
    final = load_state_file(prefix + ".pdparams", "checkpoint")
    init = initial_state(arch)
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


def check_inference(prefix, out, use_gpu, arch=models.DEFAULT_ARCH):
    """Export ``prefix`` (checked on the CPU, as export_model.py does) and
    compare Paddle Inference on ``use_gpu`` with the dygraph model."""
    from utils.inference.checkpoints import load_trained_model
    from utils.inference.export import (TOLERANCE, allowed_difference, compare_with_dygraph,
                                        dygraph_outputs, export_checked)
    export_dir = os.path.join(out, "inference")
    model, weights = load_trained_model(BIT, prefix, arch)
    export_checked(model, export_dir, 64, {"weights": weights, "arch": arch}, num_threads=2)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    z = dygraph_outputs(model, x)
    err, _ = compare_with_dygraph(export_dir, BIT, x, z, use_gpu, 2)
    allowed = allowed_difference(z)   # the export check's own tolerance
    where = "GPU" if use_gpu else "CPU"
    return err <= allowed, (f"export + Paddle Inference on {where}: largest difference "
                            f"{err:.2e} (tolerance {TOLERANCE:g} x max(1, max |z|) = "
                            f"{allowed:.2e})")


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


def run_checks(reference_path, work, gpus, arch=models.DEFAULT_ARCH):
    with open(reference_path) as f:
        reference = json.load(f)
    data = make_tiny_set(os.path.join(work, "data"))
    ok = True
    last = {}
    for name, device, processes in plan(gpus):
        out = os.path.join(work, name.replace(" ", "_"))
        ok &= report(name, compare(train(device, data, out, processes, arch), reference))
        last[device] = os.path.join(out, "output", f"last_{BIT}")
    ok &= report("CPU", [check_inference(last["cpu"], os.path.join(work, "cpu_infer"), False,
                                         arch)])
    if gpus:
        ok &= report("1 GPU", [check_inference(last["gpu"], os.path.join(work, "gpu_infer"), True,
                                               arch)])
    else:
        print("no GPU visible (CPU-only Paddle or no CUDA device): GPU checks skipped, "
              "CPU part done", flush=True)
    return ok


def main(argv):
    p = argparse.ArgumentParser(prog="python -m scripts.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--record", action="store_true",
                   help="train on the CPU and write the reference values (to --reference)")
    p.add_argument("--arch", default=models.DEFAULT_ARCH,
                   choices=[a for a in models.ARCHS if not a.endswith(CHECK_SUFFIX)],
                   help="the backbone to check (each has its recorded CPU values)")
    p.add_argument("--reference", default=None,
                   help="the recorded CPU values (JSON; default scripts/gpu_check_reference"
                        "[_<arch>].json)")
    add(p, "--gpus", type=int, default=None, valid=AT_LEAST_0,
        help="GPUs to check (default: all visible; 0 = CPU part only)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = check_ranges(p, p.parse_args(argv))
    args.reference = args.reference or reference_file(args.arch)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        if args.record:
            summary = train("cpu", make_tiny_set(os.path.join(work, "data")), work, arch=args.arch)
            from utils.base.io import atomic_write_json
            atomic_write_json(summary, args.reference)
            print(f"wrote {args.reference}: losses {summary['losses']}")
            return 0
        if not os.path.isfile(args.reference):
            raise UserError(f"{args.reference} not found: record it with "
                            f"python -m scripts.gpu_check --record --arch {args.arch}")
        gpus = dist.gpu_count() if args.gpus is None else args.gpus
        if gpus > dist.gpu_count():
            raise UserError(f"--gpus {gpus}: only {dist.gpu_count()} GPU(s) visible")
        return 0 if run_checks(args.reference, work, gpus, args.arch) else 1


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
