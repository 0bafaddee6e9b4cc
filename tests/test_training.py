"""End-to-end training: resume, the entry point, and that training helps."""
import json
import math
import os
import re
import types

import numpy as np
import paddle
import pytest

from conftest import (TINY, assert_cli_error, assert_same, demo_argv, log_lines, run_in_process,
                      run_python)
from tiny_model import HIDDEN
from utils.training import engine
import main_single_gpu

BIT = 16
# lr and β change every epoch so a resume at the wrong epoch shows; on the
# tiny test net (resume is the engine's, whatever the network)
SCHEDULE = ["-ee", "1", "--step_continuation", "1", "--de_step", "1", "-bs", "16",
            "-lr", "1e-2", "--debug_steps", "1", *TINY]
HASH_LAYER = "hash."   # the tiny net's hash-layer state-dict keys
LR0 = 1e-2 * 16 / 64
EPOCH_LINE = r"HashNet\[\s*(\d+)/(\d+)\] bit:(\d+), lr:([0-9.]+), scale:([0-9.]+)"
MAP_LINE = r"HashNet epoch:(\d+), bit:(\d+), dataset:(\w+), MAP:([0-9.]+)"


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
    assert resumed["best_map"] == before["best_map"] == runs.first["best_map"]
    assert resumed["best_epoch"] == before["best_epoch"] == runs.first["best_epoch"]
    assert resumed["history"] == plain(before)["history"] == runs.first["history"]
    maps = [r["map"] for r in runs.second["history"]]
    assert runs.second["history"][:2] == runs.first["history"]
    assert runs.second["best_map"] == max(maps)
    assert runs.second["best_epoch"] == 1 + maps.index(max(maps))
    best = load_training(runs.resumed, "model_best")
    assert (best["best_map"], best["best_epoch"]) == (runs.second["best_map"],
                                                      runs.second["best_epoch"])


def test_resume_restores_bank_weights_and_momentum(runs):
    """What epoch 3 starts from is what epoch 2 saved."""
    bank = bank_numpy(runs.after_two)
    assert bank["U"].any() and bank["Y"].any()
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
    diffs = {k: float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a}
    assert max(diffs.values()) == 0.0, diffs
    bank_a, bank_b = bank_numpy(load_training(runs.resumed)), bank_numpy(load_training(runs.full))
    for key in bank_a:
        assert_same(bank_a[key], bank_b[key], key)
    assert runs.second["history"] == runs.whole["history"]


# ------------------------------------------------------------- entry point
@pytest.fixture(scope="module")
def cli_run(demo, tmp_path_factory):
    """main_single_gpu.py: 1 epoch at 64 bits, then --eval of the best weights."""
    out = tmp_path_factory.mktemp("cli")
    train = run_python("main_single_gpu.py", *demo_argv(demo, out, "-e", "1", "-bs", "16",
                                                        bit=64))
    assert train.returncode == 0, train.stderr[-3000:]
    best = os.path.join(str(out), "output", "model_best_64")
    evaluation = run_python("main_single_gpu.py", *demo_argv(demo, out, "--eval", "--pretrained",
                                                             best, bit=64))
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    return types.SimpleNamespace(out=str(out), train=train, evaluation=evaluation, best=best)


def metrics_files(out, mode):
    logs = os.path.join(out, "logs")
    found = [os.path.join(logs, d, "metrics.json") for d in sorted(os.listdir(logs))
             if d.startswith(mode)]
    return [json.load(open(f)) for f in found if os.path.isfile(f)]


def test_cli_eval_reproduces_logged_map(cli_run):
    trained = re.findall(MAP_LINE, cli_run.train.stdout)
    assert len(trained) == 1 and trained[0][:3] == ("1", "64", "demo")
    evaluated = re.findall(r"HashNet eval bit:64, dataset:demo, MAP:([0-9.]+) "
                           r"\(mAP@100 = ([0-9.]+)", cli_run.evaluation.stdout)
    assert len(evaluated) == 1
    assert evaluated[0][0] == trained[0][3]  # the 3-decimal figures of both logs
    # full precision: the best mAP the training saved == what --eval measured
    best = paddle.load(cli_run.best + ".pdopt")["training"]
    eval_metrics = metrics_files(cli_run.out, "eval")
    assert len(eval_metrics) == 1
    assert eval_metrics[0]["map"] == best["best_map"]
    assert float(evaluated[0][1]) == pytest.approx(best["best_map"], abs=5e-7)
    train_metrics = metrics_files(cli_run.out, "train")
    assert train_metrics and train_metrics[-1]["map"] == eval_metrics[0]["map"]


def test_cli_writes_reference_log_lines(cli_run):
    assert re.search(r"Epoch\[001/001\], Step\[0003/0003\], Loss: \d+\.\d{4}", cli_run.train.stdout)
    assert re.search(r"HashNet\[ 1/1\] bit:64, lr:0\.000250000, scale:1\.000, train loss:\d+\.\d{3}",
                     cli_run.train.stdout)
    assert re.search(r"HashNet epoch:1, bit:64, dataset:demo, MAP:\d\.\d{3}, "
                     r"Best MAP\(e1\): \d\.\d{3}", cli_run.train.stdout)


def test_cli_run_draws_the_figures(cli_run):
    """The engine's figures (the tests' in-process and tiny runs skip them:
    tests/tiny_model.py skip_engine_plots), in each run's log folder."""
    logs = os.path.join(cli_run.out, "logs")
    runs = {d.split("-")[0]: os.path.join(logs, d) for d in sorted(os.listdir(logs))}
    expected = {"train": ["pr_curve.png", "precision_at_n.png", "training.png"],
                "eval": ["pr_curve.png", "precision_at_n.png"]}
    assert sorted(runs) == sorted(expected), runs
    for mode, names in expected.items():
        for name in names:
            with open(os.path.join(runs[mode], name), "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n", (mode, name)


def test_cli_missing_data_path(demo, tmp_path):
    """The one subprocess of main_single_gpu.py's error path: its __main__
    wiring (run_cli). The other bad inputs run in-process (run_in_process)."""
    argv = demo_argv(demo, tmp_path, "-e", "1")
    argv[argv.index("--data-path") + 1] = str(tmp_path / "no_such_dir")
    assert_cli_error(run_python("main_single_gpu.py", *argv), "no_such_dir")


def test_cli_missing_backbone(demo, tmp_path):
    argv = demo_argv(demo, tmp_path, "-e", "1", "-bs", "16")
    argv[argv.index("--backbone") + 1] = str(tmp_path / "AlexNet_pretrained.pdparams")
    assert_cli_error(run_in_process(main_single_gpu.main, *argv), "AlexNet_pretrained.pdparams",
                     "convert_alexnet")


def test_cli_eval_missing_checkpoint(demo, tmp_path):
    proc = run_in_process(main_single_gpu.main, *demo_argv(demo, tmp_path, "--eval", "--pretrained",
                                                           str(tmp_path / "model_best_16")))
    assert_cli_error(proc, "model_best_16")


def test_cli_bad_list_line(demo, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    for split in ("train", "test", "database"):
        text = open(os.path.join(demo.list_dir, f"{split}.txt")).read()
        if split == "test":
            lines = text.splitlines()
            lines[2] = lines[2].rsplit(" ", 1)[0]  # one label short
            text = "\n".join(lines) + "\n"
        (lists / f"{split}.txt").write_text(text)
    argv = demo_argv(demo, tmp_path, "-e", "1")
    argv[argv.index("--list-dir") + 1] = str(lists)
    assert_cli_error(run_in_process(main_single_gpu.main, *argv), f"{lists / 'test.txt'}:3")


# ------------------------------------------------------------- it learns
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
