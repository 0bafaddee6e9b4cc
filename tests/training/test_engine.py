"""utils/training/engine.py: exact resume (in a fresh process, in the same
process, after SIGTERM mid-epoch, after SIGKILL mid-checkpoint write),
what --resume notices (another optimizer or training list refused in one
line before anything is restored, changed settings named, a finished run
says so), a non-finite loss stops cleanly, and a short training raises the
mAP. Resume is the engine's, whatever the network: it is checked on the
tiny test net (tests/tiny_model.py), whose checkpoints are small.
"""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import types

import numpy as np
import paddle
import pytest

from support.cli import TINY, run_python
from support.demo_set import demo_argv
from support.errors import user_error
from support.logs import log_lines
from support.paths import GUARD_DIR, REPO
from support.weights import assert_same
from tiny_model import HIDDEN, TINY_PREFIX, TinyHashNet
from utils.training import engine


BIT = 16


# lr and β change every epoch so a resume at the wrong epoch shows; on the
# tiny test net (resume is the engine's, whatever the network)
SCHEDULE = ["-ee", "1", "--step_continuation", "1", "--de_step", "1", "-bs", "16",
            "-lr", "1e-2", "--debug_steps", "1", *TINY]


HASH_LAYER = "hash."   # the tiny net's hash-layer state-dict keys


LR0 = 1e-2 * 16 / 64


EPOCH_LINE = r"HashNet\[\s*(\d+)/(\d+)\] bit:(\d+), lr:([0-9.]+), scale:([0-9.]+)"


def load_training(out_dir, name="last"):
    return paddle.load(os.path.join(out_dir, "output", f"{name}_{BIT}.pdopt"))["training"]


def bank_numpy(training):
    return {k: np.asarray(v) for k, v in training["bank"].items()}


# Runs ``engine.run`` on argv (JSON) in a fresh process, recording what the
# run held when its first epoch started (bank, hash layer, its momentum) and
# the state right after ``resume``; writes them to an .npz and a .json.
RECORDING_DRIVER = r"""
import json, os, sys
import numpy as np
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
import tiny_model  # registers --arch tiny
tiny_model.skip_engine_plots()
from utils.training import engine, reference
from utils.training.config import parse_args

argv, dump = json.loads(sys.argv[1]), sys.argv[2]
seen = {"epochs": []}
arrays = {}
original_train, original_resume = reference.train_one_epoch, engine.resume


def recording_resume(args, recipe, training, state, log):
    original_resume(args, recipe, training, state, log)
    seen["state"] = {k: state[k] for k in ("epoch", "best_map", "best_epoch", "history")}


def recording_train(recipe, model, criterion, optimizer, loader, log, progress):
    args = recipe.args
    if not seen["epochs"]:
        arrays["U"], arrays["Y"] = criterion.U.numpy(), criterion.Y.numpy()
        hash_params = {id(p) for p in model.hash_layer.parameters()}
        for key, value in model.named_parameters():
            if id(value) in hash_params:
                arrays[key] = value.numpy()
        shapes = (tuple(model.hash_layer.weight.shape), (args.bit,))
        velocity = [np.asarray(v) for k, v in optimizer.state_dict().items()
                    if "velocity" in k and tuple(np.shape(v)) in shapes]
        for i, value in enumerate(sorted(velocity, key=np.size)):
            arrays[f"velocity{i}"] = value
    seen["epochs"].append(progress.epoch)
    out = original_train(recipe, model, criterion, optimizer, loader, log, progress)
    seen["beta"], seen["lr"] = criterion.beta, optimizer.get_lr()
    return out


reference.train_one_epoch, engine.resume = recording_train, recording_resume
final = engine.run(parse_args(argv))
seen["final"] = {k: final[k] for k in ("epoch", "best_map", "best_epoch", "history")}
np.savez(dump + ".npz", **arrays)
json.dump(seen, open(dump + ".json", "w"), default=np.ndarray.tolist)
"""


def plain(state):
    """A run's counters after a JSON round trip, as the driver reports them."""
    counters = {k: state[k] for k in ("epoch", "best_map", "best_epoch", "history") if k in state}
    return json.loads(json.dumps(counters, default=np.ndarray.tolist))


def hash_velocity(optimizer_state, bit=BIT):
    """The hash layer's momentum buffers ([bit], then [HIDDEN, bit]), whatever
    Paddle named them."""
    found = [np.asarray(v) for k, v in optimizer_state.items() if "velocity" in k
             and np.asarray(v).shape in ((HIDDEN, bit), (bit,))]
    return sorted(found, key=np.size)


@pytest.fixture(scope="module")
def runs(demo, tmp_path_factory):
    """2 epochs, then --resume (auto) to 3, each in a fresh process (the
    second records what it held when epoch 3 started); and 3 epochs in one go."""
    from utils.training.config import parse_args
    root = tmp_path_factory.mktemp("resume")
    resumed, full = root / "resumed", root / "full"

    def argv(out, *flags):
        return demo_argv(demo, out, *SCHEDULE, *flags, bit=BIT)

    def run_fresh(name, *flags):
        """engine.run in a fresh process (see test_resume_in_the_same_process)."""
        dump = str(root / name)
        proc = run_python("-c", RECORDING_DRIVER, json.dumps(argv(resumed, *flags)), dump)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.load(open(dump + ".json")), dict(np.load(dump + ".npz"))

    first, _ = run_fresh("first", "-e", "2")
    saved_two = paddle.load(str(resumed / "output" / f"last_{BIT}.pdopt"))
    params_two = paddle.load(str(resumed / "output" / f"last_{BIT}.pdparams"))
    seen, arrays = run_fresh("second", "-e", "3", "--resume")
    whole = engine.run(parse_args(argv(full, "-e", "3")))
    return types.SimpleNamespace(
        first=first["final"], second=seen["final"], whole=plain(whole),
        after_two=saved_two["training"],
        velocity_two=hash_velocity(saved_two["optimizer"]), seen=seen, arrays=arrays,
        params_two={k: v.numpy() for k, v in params_two.items() if k.startswith(HASH_LAYER)},
        resumed=str(resumed), full=str(full))


def test_resume_continues_at_epoch_3(runs):
    assert runs.seen["epochs"] == [3]
    assert runs.seen["state"]["epoch"] == 2
    assert load_training(runs.resumed)["epoch"] == 3
    assert [r["epoch"] for r in runs.second["history"]] == [1, 2, 3]
    lines = [m.groups() for m in log_lines(os.path.join(runs.resumed, "logs"), EPOCH_LINE)]
    assert [int(g[0]) for g in lines] == [1, 2, 3]
    assert [g[1] for g in lines] == ["2", "2", "3"]  # -e of each run
    resumed_logs = log_lines(os.path.join(runs.resumed, "logs"), r"resumed from (\S+)")
    assert len(resumed_logs) == 1 and resumed_logs[0].group(1).endswith(f"last_{BIT}")


def test_resume_uses_epoch_3_lr_and_beta(runs):
    assert runs.seen["lr"] == pytest.approx(LR0 * 0.25, rel=1e-9)
    assert runs.seen["beta"] == pytest.approx(math.sqrt(3), rel=1e-9)
    lines = [m.groups() for m in log_lines(os.path.join(runs.resumed, "logs"), EPOCH_LINE)]
    assert [(g[3], g[4]) for g in lines] == [("0.002500000", "1.000"), ("0.001250000", "1.414"),
                                             ("0.000625000", "1.732")]


def test_resume_carries_best_map_and_history(runs):
    before = runs.after_two
    resumed = runs.seen["state"]
    # exact: best mAP and history are copied into the checkpoint and read back
    assert resumed["best_map"] == before["best_map"] == runs.first["best_map"]
    assert resumed["best_epoch"] == before["best_epoch"] == runs.first["best_epoch"]
    assert resumed["history"] == plain(before)["history"] == runs.first["history"]
    maps = [r["map"] for r in runs.second["history"]]
    # exact: the resumed run's history starts with the checkpoint's copy of the first's
    assert runs.second["history"][:2] == runs.first["history"]
    # exact: best_map is one of the history's values, copied
    assert runs.second["best_map"] == max(maps)
    assert runs.second["best_epoch"] == 1 + maps.index(max(maps))
    # exact: model_best's state is a save-and-load round trip of the run's values
    best = load_training(runs.resumed, "model_best")
    assert (best["best_map"], best["best_epoch"]) == (runs.second["best_map"],
                                                      runs.second["best_epoch"])


def test_resume_restores_bank_weights_and_momentum(runs):
    """What epoch 3 starts from is what epoch 2 saved."""
    bank = bank_numpy(runs.after_two)
    assert bank["U"].any() and bank["Y"].any()
    # exact: what was saved, loaded back (copies, no arithmetic)
    assert_same(runs.arrays["U"], bank["U"], "U")
    assert_same(runs.arrays["Y"], bank["Y"], "Y")
    for key, value in runs.params_two.items():
        assert_same(runs.arrays[key], value, key)
    assert len(runs.velocity_two) == 2 and all(v.any() for v in runs.velocity_two)
    assert_same(runs.arrays["velocity0"], runs.velocity_two[0], "hash bias momentum")
    assert_same(runs.arrays["velocity1"], runs.velocity_two[1], "hash weight momentum")


def test_resume_in_the_same_process(runs, make_args):
    """engine.run with --resume after this process has built other models
    (a second run, a notebook, these tests): Paddle's automatic parameter
    names (conv2d_5.w_0 ...) then differ from the saved optimizer state's."""
    state = engine.run(make_args(*SCHEDULE, "-e", "4", "--resume",
                                 os.path.join(runs.full, "output", f"last_{BIT}")))
    assert [r["epoch"] for r in state["history"]] == [1, 2, 3, 4]


def test_resumed_equals_uninterrupted(runs):
    """2 + 1 resumed epochs give bit-identical weights, bank and history to
    3 epochs in one go (all randomness is seeded per epoch)."""
    a = paddle.load(os.path.join(runs.resumed, "output", f"last_{BIT}.pdparams"))
    b = paddle.load(os.path.join(runs.full, "output", f"last_{BIT}.pdparams"))
    assert sorted(a) == sorted(b)
    # exact: one machine and thread count, the same kernels in the same order
    diffs = {k: float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a}
    assert max(diffs.values()) == 0.0, diffs
    bank_a, bank_b = bank_numpy(load_training(runs.resumed)), bank_numpy(load_training(runs.full))
    for key in bank_a:
        assert_same(bank_a[key], bank_b[key], key)
    assert runs.second["history"] == runs.whole["history"]


# ---------------------------------------------------------------- stop and resume


# The stop/resume invariants hold for any network: checked on --arch tiny
# (tests/tiny_model.py), whose checkpoints are small.
TRAIN = ["-bs", "16", "-e", "3", "-ee", "3", "--debug_steps", "1",
         "--step_continuation", "1", "--de_step", "1", *TINY]


def train_argv(demo, out, *extra):
    """python argv: main_single_gpu.py with the tiny arch registered."""
    return ["-c", TINY_PREFIX, "main_single_gpu.py", *demo_argv(demo, out, *TRAIN, *extra)]


def params(out):
    return paddle.load(os.path.join(str(out), "output", "last_16.pdparams"))


def run_until(argv, marker, sig):
    """Start training, send `sig` once `marker` is printed; return the exit code."""
    proc = subprocess.Popen([sys.executable, "-u", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR])))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=300)
    assert any(marker in line for line in seen), "".join(seen) + rest
    return proc.returncode, "".join(seen) + rest


@pytest.fixture(scope="module")
def uninterrupted(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run_python(*train_argv(demo, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return params(out)


def assert_bit_identical(a, b):
    """Exact: both runs on this machine at the same thread count, the same
    kernels in the same order, every random draw seeded (docs/reliability.md)."""
    assert a.keys() == b.keys()
    for key in a:
        assert_same(a[key].numpy(), b[key].numpy(), key)


def test_sigterm_mid_epoch_saves_and_resumes_exactly(demo, tmp_path, uninterrupted):
    code, output = run_until(train_argv(demo, tmp_path), "Epoch[002/003], Step[0001/0003]",
                             signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, output[-2000:]
    stopped = re.search(r"stopped by signal 15 at epoch 2, step (\d)", output)
    assert stopped, output[-2000:]
    resumed = run_python(*train_argv(demo, tmp_path, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at epoch 2, step {stopped.group(1)}" in resumed.stdout
    assert_bit_identical(params(tmp_path), uninterrupted)


def test_mid_epoch_resume_restores_the_rng_streams(make_args):
    """In one process, no training: a checkpoint saved mid-epoch holds the
    python, numpy and paddle RNG states, and resuming it restores them, so
    the draws after the resume (dropout, here paddle.rand) are the draws that
    would have followed the save. (The SIGTERM test above shows the end result.)"""
    import logging
    import random
    from utils.methods.hashnet import HashNetLoss
    from utils.training import engine, recipes, reference
    from utils.training.config import build_method
    from utils.training.schedules import build_optimizer
    args = make_args("-bs", "16", *TINY)

    def run_state():
        model = TinyHashNet(16)
        return (model, build_optimizer("sgd", model.parameters(), 0.1, 5e-4),
                HashNetLoss(48, 16, 10))

    def draws():
        return paddle.rand([6]).numpy(), np.random.rand(3), random.random()

    paddle.seed(11), np.random.seed(11), random.seed(11)
    model, optimizer, criterion = run_state()
    state = {"epoch": 0, "best_map": 0.0, "best_epoch": 0, "history": [],
             "partial": reference.EpochProgress(1, step=2, loss_sum=2.5)}
    engine.save(args, "last", model, optimizer, criterion, state)
    expected = draws()
    paddle.seed(99), np.random.seed(99), random.seed(99)   # a fresh process
    model, optimizer, criterion = run_state()
    resumed = {"epoch": 0}
    args.resume = os.path.join(args.output_dir, "last_16")
    engine.resume(args, recipes.build(args, build_method(args)), (model, optimizer, criterion),
                  resumed, logging.getLogger("test"))
    # exact: 2.5 is saved and loaded as it was written (a round trip)
    assert resumed["partial"] == reference.EpochProgress(1, step=2, loss_sum=2.5)
    got = draws()
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


# Runs main_single_gpu.py's flow (argv as JSON) with the checkpoint writer
# patched: the 3rd file (epoch 2's last_16.pdopt, the first of its pair) is
# written half into its temp file, then a marker file appears and the
# process waits there to be killed.
HALF_WRITE_DRIVER = r"""
import json, os, sys, time
import paddle
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
import tiny_model  # registers --arch tiny
tiny_model.skip_engine_plots()
from utils.base import checkpoint, io
from utils.training.config import parse_args
from utils.training.engine import run

argv, marker = json.loads(sys.argv[1]), sys.argv[2]
calls = []


def half_then_wait(obj, path):
    calls.append(path)
    if len(calls) != 3:
        return io.atomic_save(obj, path)

    def write(tmp):
        paddle.save(obj, marker + ".full")
        with open(marker + ".full", "rb") as f:
            data = f.read()
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        with open(marker, "w") as f:
            f.write(tmp)
        time.sleep(600)
    io.atomic_write(path, write)


checkpoint.atomic_save = half_then_wait
run(parse_args(argv))
"""


def test_sigkill_mid_checkpoint_write_resumes_from_previous(demo, tmp_path, uninterrupted):
    """SIGKILL while epoch 2's checkpoint is half written: epoch 1's files
    are still whole and consistent, and --resume from them ends with the
    uninterrupted run's weights, bit for bit. (This is also the test of a
    SIGKILL after a complete checkpoint: epoch 1's.)"""
    import json
    import time
    marker = str(tmp_path / "half_written")
    argv = demo_argv(demo, tmp_path, *TRAIN)
    proc = subprocess.Popen([sys.executable, "-c", HALF_WRITE_DRIVER, json.dumps(argv), marker],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR])))
    deadline = time.time() + 300
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    try:
        assert os.path.exists(marker), proc.communicate(timeout=10)[0][-3000:]
        time.sleep(0.2)  # the marker is written after the half file
        partial = open(marker).read()
        assert os.path.basename(partial).startswith(".last_16.pdopt")
        assert 0 < os.path.getsize(partial) < os.path.getsize(marker + ".full")
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    out = tmp_path / "output"
    saved = paddle.load(str(out / "last_16.pdopt"))["training"]   # whole, and epoch 1's
    assert saved["epoch"] == 1 and "partial" not in saved
    resumed = run_python(*train_argv(demo, tmp_path, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at the end of epoch 1" in resumed.stdout
    assert "HashNet[ 2/3]" in resumed.stdout and "HashNet[ 1/3]" not in resumed.stdout
    assert_bit_identical(params(tmp_path), uninterrupted)


# ---------------------------------------------------------------- what --resume notices


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """A finished 1-epoch run, its lists beside it (copied, so a test may change them)."""
    from support.demo_set import demo_argv
    from utils.training.config import parse_args
    out = tmp_path_factory.mktemp("resume_checks")
    lists = out / "lists"
    shutil.copytree(demo.list_dir, lists)
    argv = [*demo_argv(demo, out, *TINY, "-bs", "16", "-e", "1", "-ee", "1"),
            "--list-dir", str(lists)]
    engine.run(parse_args(argv))
    return argv, out


def resumed(argv, *extra):
    from utils.training.config import parse_args
    return parse_args([*argv, "--resume", *extra])


def newest_log(out):
    runs = sorted((out / "logs").iterdir(), key=os.path.getmtime)
    return (runs[-1] / "log.txt").read_text().splitlines()


def test_another_optimizer_is_refused_before_anything_is_restored(trained):
    argv, _ = trained
    message = user_error(engine.run, resumed(argv, "-op", "rmsprop"))
    assert message.endswith("was trained with -op sgd, not -op rmsprop: resume it with -op sgd "
                            "(or start from it with --pretrained)") and "\n" not in message


def test_another_training_list_is_refused(trained, tmp_path):
    argv, out = trained
    lists = tmp_path / "lists"
    shutil.copytree(out / "lists", lists)
    with open(lists / "train.txt") as f:
        lines = f.read().splitlines()
    (lists / "train.txt").write_text("\n".join(lines[1:] + lines[:1]) + "\n")   # same images, other order
    message = user_error(engine.run, resumed([*argv, "--list-dir", str(lists)]))
    assert "was trained on another" in message and "train.txt (its sha256 differs)" in message


def test_a_finished_run_says_so_and_changed_settings_are_named(trained):
    argv, out = trained
    state = engine.run(resumed(argv, "-lr", "0.002"))
    assert state["epoch"] == 1
    lines = newest_log(out)
    assert any("is a finished run (epoch 1): nothing left to train" in m for m in lines), lines
    assert any(m.endswith("-lr was 0.001, now 0.002") for m in lines), lines
    assert not any("-op" in m or "--seed was" in m for m in lines)


@pytest.mark.parametrize("change", [{"config": 5}, {"bank": [1, 2]}, {"history": 7},
                                    {"epoch": "two"}, {"partial": {"x": 1}}],
                         ids=["config a number", "bank a list", "history a number", "epoch text",
                              "partial of other fields"])
def test_a_training_state_of_another_shape_is_one_line(trained, tmp_path, change):
    """A .pdopt that unpickles fine but holds other keys or types than the
    recipe and method read (damaged, foreign, or edited)."""
    argv, out = trained
    copy = tmp_path / "output"
    shutil.copytree(out / "output", copy)
    saved = paddle.load(str(copy / "last_16.pdopt"))
    saved["training"].update(change)
    paddle.save(saved, str(copy / "last_16.pdopt"))
    os.remove(copy / "last_16.manifest.json")   # as a file of another run would come
    message = user_error(engine.run, resumed([*argv, "--output-dir", str(copy)], "-e", "3"))
    assert "last_16.pdopt holds a training state of another shape (" in message, message
    assert len(message.splitlines()) == 1


def test_resume_refuses_a_bank_of_another_training_set():
    from utils.training.engine import load_bank
    from utils.methods.hashnet import HashNetLoss
    from support.errors import user_error
    saved = HashNetLoss(48, 16, 10).state_dict()
    message = user_error(load_bank, HashNetLoss(50, 16, 10), saved, "output/last_16")
    assert "memory bank U is [48, 16], this run needs [50, 16]" in message
    load_bank(HashNetLoss(48, 16, 10), saved, "output/last_16")  # same shapes load


# ---------------------------------------------------------------- non-finite loss


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_last(demo, tmp_path, make_args,
                                                                  monkeypatch):
    """The weights go NaN just before epoch 2's 2nd step (a NaN image would
    not do: ReLU maps NaN to 0): the real train_step sees a NaN loss and the
    run stops naming epoch and step, epoch 1's checkpoint intact."""
    import models
    from utils.training import engine
    from utils.base.errors import UserError
    args = make_args("-bs", "16", "-e", "3", "-ee", "5")
    calls = []

    class PoisonedHashNet(TinyHashNet):
        def forward(self, x):
            calls.append(self.training)
            if calls.count(True) == 5:  # 3 steps per epoch: epoch 2, step 2
                bias = self.hash_layer.bias
                bias.set_value(np.full(bias.shape, np.nan, dtype="float32"))
            return super().forward(x)

    monkeypatch.setitem(models.ARCHS, "poisoned", PoisonedHashNet)   # registered for this test
    args.arch = "poisoned"
    with pytest.raises(UserError, match="non-finite loss nan at epoch 2, step 2"):
        engine.run_train(args)
    last = os.path.join(args.output_dir, "last_16.pdopt")
    assert paddle.load(last)["training"]["epoch"] == 1  # epoch 1's checkpoint, intact


# ---------------------------------------------------------------- it learns


def objective(model, args):
    """HashNet's loss over the whole training set as one batch, bank empty,
    β = 1, test transform, eval mode: a fixed yardstick for two models."""
    from utils.data.loaders import ImageList
    from utils.methods.hashnet import HashNetLoss
    data = ImageList(os.path.join(args.list_dir, "train.txt"), args.data_path, args.num_class,
                     resize_size=args.resize_size, crop_size=args.crop_size, train=False)
    x = np.stack([data[i][0] for i in range(len(data))])
    model.eval()
    with paddle.no_grad():
        z = model(paddle.to_tensor(x))
        loss = HashNetLoss(len(data), args.bit, args.num_class, args.alpha)(
            z, paddle.to_tensor(data.labels), paddle.to_tensor(np.arange(len(data))))
    return float(loss)


def test_short_training_raises_map(tmp_path, monkeypatch):
    """The demo's pipeline, scaled to seconds: warm up AlexNet on the training
    labels (the stand-in for ImageNet weights, scripts.demo.backbone), then
    train HashNet at the demo's settings (recipe lr, batch 16, β raised each
    epoch). The trained model must beat the untrained one (random init)
    clearly, and the HashNet stage must not collapse the warm backbone's
    codes (collapse falls to the untrained level, ~0.45 here)."""
    from models.alexnet import AlexNetHash
    from utils.base.checkpoint import load_weights
    from utils.training.config import parse_args
    from utils.data.loaders import build_loader
    from scripts.demo.backbone import pretrain
    from scripts.demo.data import generate
    from utils.base.io import atomic_save
    from utils.base.runtime import set_seed

    data = types.SimpleNamespace(image_dir=str(tmp_path / "img"), list_dir=str(tmp_path / "lists"))
    generate(data.image_dir, data.list_dir, 96, 48, 48, 72, seed=1)
    backbone = str(tmp_path / "alexnet_warm.pdparams")
    args = parse_args(demo_argv(data, tmp_path, "-bs", "16", "-lr", "1e-3", "-e", "3", "-ee", "3",
                                "--step_continuation", "1", "--debug_steps", "100", bit=64))
    args.backbone = backbone
    engine.setup_runtime(args)
    loaders = engine.make_loaders(args, ("train", "test", "database"))

    def map_of(model):
        return engine.evaluate(model, loaders["test"], loaders["database"], args)["map"]

    set_seed(args.seed)  # as engine.run does before it builds the model
    untrained = map_of(AlexNetHash(64))
    warm = pretrain(build_loader(loaders["train"].dataset, 16, shuffle=True, seed=0), 10,
                    epochs=10, lr=2e-2, log=lambda line: None)
    atomic_save(warm.state_dict(), backbone)
    set_seed(args.seed)
    initial = AlexNetHash(64)
    initial.load_backbone(backbone)
    warm_only = map_of(initial)
    # Only the last epoch's weights are read below: the other saves (460 MB
    # each, the best model's included) are skipped.
    write = engine.save

    def save_last_epoch_only(args, name, model, optimizer, criterion, state):
        if (name, state["epoch"]) == ("last", args.epoch):
            write(args, name, model, optimizer, criterion, state)
    monkeypatch.setattr(engine, "save", save_last_epoch_only)
    state = engine.run(args)
    after = state["history"][-1]["map"]
    report = (f"mAP untrained {untrained:.4f}, warm backbone {warm_only:.4f}, after HashNet "
              f"{after:.4f}; train loss per epoch {[round(r['loss'], 3) for r in state['history']]}")
    assert after > untrained + 0.05, report
    assert after > warm_only - 0.02, report
    # The gain above is mostly the warm-up's, so check that the HashNet stage
    # itself trained: every parameter moved, and HashNet's objective over the
    # training set fell (at β = 1, without dropout or augmentation: the
    # logged epoch losses rise with β, which goes up every epoch here).
    trained = AlexNetHash(64)
    load_weights(trained, os.path.join(args.output_dir, "last_64"))
    for key, value in initial.state_dict().items():
        moved = float(np.abs(trained.state_dict()[key].numpy() - value.numpy()).max())
        assert moved > 0, (key, report)
    before, after_training = objective(initial, args), objective(trained, args)
    assert after_training < before, (before, after_training, report)
