"""main_single_gpu.py, the training entry point: a 1-epoch run and its
--eval agree on the mAP, write the reference's log lines and the figures;
every kind of bad input is a one-line error (exit 2) before any checkpoint
is written; a full disk names the checkpoint; Ctrl-C in an evaluation is
one line and exit 130.

Each error path runs in this process (support.cli.run_in_process), but one:
``test_cli_missing_data_path`` runs the script's ``__main__``."""
import json
import os
import re
import shutil
import types

import paddle
import pytest

import main_single_gpu
from support.cli import TINY, check_interrupted, interrupted, run_in_process, run_python
from support.demo_set import demo_argv
from support.errors import assert_cli_error
from support.file_size_limit import run_limited, temp_files

MAP_LINE = r"HashNet epoch:(\d+), bit:(\d+), dataset:(\w+), MAP:([0-9.]+)"


# ---------------------------------------------------------------- a run and its evaluation


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
    # exact: the saved best weights (a round trip) through the same kernels, threads and batches
    assert evaluated[0][0] == trained[0][3]  # the 3-decimal figures of both logs
    # full precision: the best mAP the training saved == what --eval measured
    best = paddle.load(cli_run.best + ".pdopt")["training"]
    eval_metrics = metrics_files(cli_run.out, "eval")
    assert len(eval_metrics) == 1
    # exact: as above, then the same float64 metric code on the same codes
    assert eval_metrics[0]["map"] == best["best_map"]
    assert float(evaluated[0][1]) == pytest.approx(best["best_map"], abs=5e-7)
    train_metrics = metrics_files(cli_run.out, "train")
    # exact: the same codes and metric code (above); JSON round trips a double
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


# ---------------------------------------------------------------- bad input


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


def copy_demo(demo, tmp_path):
    images, lists = str(tmp_path / "images"), str(tmp_path / "lists")
    shutil.copytree(demo.image_dir, images)
    shutil.copytree(demo.list_dir, lists)
    return images, lists


def first_train_image(lists, images):
    with open(os.path.join(lists, "train.txt")) as f:
        return os.path.join(images, f.readline().split()[0])


def cli(demo, tmp_path, *extra, images=None, lists=None):
    argv = demo_argv(demo, tmp_path, "-bs", "16", "-e", "1", *extra)
    if images:
        argv += ["--data-path", images, "--list-dir", lists]
    return run_in_process(main_single_gpu.main, *argv)


def test_missing_image(demo, tmp_path):
    images, lists = copy_demo(demo, tmp_path)
    os.remove(first_train_image(lists, images))
    proc = cli(demo, tmp_path, images=images, lists=lists)
    assert_cli_error(proc, "train.txt:1:", "not found", "--skip-bad-images")
    assert not os.path.exists(tmp_path / "output" / "last_16.pdparams")


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_unreadable_or_truncated_image_and_skip_bad_images(demo, tmp_path, content):
    images, lists = copy_demo(demo, tmp_path)
    path = first_train_image(lists, images)
    if content == "truncated":
        with open(path, "rb") as f:
            content = f.read()[:400]
    with open(path, "wb") as f:
        f.write(content)
    proc = cli(demo, tmp_path, images=images, lists=lists)
    assert_cli_error(proc, os.path.basename(path), "unreadable or corrupt")
    skipped = cli(demo, tmp_path, "--skip-bad-images", *TINY, images=images, lists=lists)
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert f"skipped: image {path} is unreadable" in skipped.stdout


@pytest.mark.parametrize("line, fragment", [
    ("images/x.jpg 0 1 0", "train.txt:2: 3 labels, expected 10"),
    ("images/x.jpg 0 1 0 0 0 0 0 0 0 2", "train.txt:2: labels must be 0 or 1"),
])
def test_malformed_list_line(demo, tmp_path, line, fragment):
    images, lists = copy_demo(demo, tmp_path)
    path = os.path.join(lists, "train.txt")
    with open(path) as f:
        rows = f.read().splitlines()
    rows[1] = line
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")
    assert_cli_error(cli(demo, tmp_path, images=images, lists=lists), fragment)


def test_empty_list(demo, tmp_path):
    images, lists = copy_demo(demo, tmp_path)
    open(os.path.join(lists, "test.txt"), "w").close()
    assert_cli_error(cli(demo, tmp_path, images=images, lists=lists), "test.txt is empty")


@pytest.mark.parametrize("flag, value, fragment", [
    ("--dataset", "imagenette", "invalid choice: 'imagenette'"),
    ("--bit", "24", "invalid choice: 24"),
])
def test_unknown_dataset_and_unsupported_bit(demo, tmp_path, flag, value, fragment):
    proc = cli(demo, tmp_path, flag, value)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr


def test_missing_data_path(demo, tmp_path):
    proc = cli(demo, tmp_path, "--data-path", str(tmp_path / "nowhere"))
    assert_cli_error(proc, "data path", "nowhere", "not found")


def test_missing_backbone_weights(demo, tmp_path):
    proc = cli(demo, tmp_path, "--backbone", str(tmp_path / "alexnet.pdparams"))
    assert_cli_error(proc, "alexnet.pdparams not found", "convert_alexnet", "--backbone random")


def test_checkpoint_of_other_bit_and_not_hashnet(demo, tmp_path):
    from models.alexnet import AlexNetHash
    from utils.base.io import atomic_save
    atomic_save(AlexNetHash(48).state_dict(), str(tmp_path / "h48.pdparams"))
    atomic_save({"linear.weight": paddle.zeros([2, 2])}, str(tmp_path / "other.pdparams"))
    proc = cli(demo, tmp_path, "--eval", "--pretrained", str(tmp_path / "h48"))
    assert_cli_error(proc, "48-bit weights but --bit is 16")
    proc = cli(demo, tmp_path, "--eval", "--pretrained", str(tmp_path / "other"))
    assert_cli_error(proc, "not a HashNet checkpoint")


def test_unwritable_output_dir(demo, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = cli(demo, tmp_path, "--output-dir", str(blocker / "out"))
    assert_cli_error(proc, "--output-dir", "is not writable")


def test_batch_larger_than_training_set(demo, tmp_path):
    proc = cli(demo, tmp_path, "-bs", "4096")
    assert_cli_error(proc, "--batch-size 4096", "larger than the training set (48 images)")
    assert not os.path.exists(tmp_path / "output" / "last_16.pdparams")


def test_debug_shows_the_traceback(demo, tmp_path):
    proc = cli(demo, tmp_path, "--data-path", str(tmp_path / "nowhere"), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


# ---------------------------------------------------------------- a full disk, Ctrl-C


def test_training_with_a_full_disk_exits_2_naming_the_checkpoint(demo, tmp_path):
    argv = ["main_single_gpu.py", *demo_argv(demo, tmp_path, "-bs", "16", "-e", "1", "-ee", "1")]
    code = ("import runpy\nsys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = run_limited(50 << 20, code, *argv, timeout=600)   # logs fit; a 230 MB checkpoint not
    assert_cli_error(proc, f"cannot write {tmp_path / 'output' / 'model_best_16.pdopt'}: "
                           "File too large")     # epoch 1's best is the first checkpoint
    out = tmp_path / "output"
    assert not os.path.exists(out / "model_best_16.pdopt") and temp_files(out) == []


def test_ctrl_c_in_eval_is_one_line_and_130(demo, weights, long_lists, tmp_path):
    from support.demo_set import demo_argv
    check_interrupted(*interrupted(
        ["main_single_gpu.py", "--eval", "--pretrained", weights, *demo_argv(demo, tmp_path),
         "--list-dir", long_lists],
        '"eval": true'))
