"""utils/training/plots.py and scripts/compare_runs.py write the PNGs; bad inputs to
compare_runs give one-line errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scripts.compare_runs import compare, load_metrics, main
from support.paths import REPO
from utils.base.errors import UserError
from utils.base.io import atomic_write_json
from utils.training.plots import save_evaluation_plots, save_training_plot
from utils.retrieval.metrics import retrieval_metrics

PNG = b"\x89PNG\r\n\x1a\n"


def metrics_for(bit, seed=0):
    rng = np.random.default_rng(seed + bit)
    centres = rng.choice([-1, 1], size=(6, bit))
    lab = rng.integers(0, 6, 500)
    codes = centres[lab] * np.where(rng.random((500, bit)) < 0.15, -1, 1)
    labels = np.eye(6, dtype=np.float32)[lab]
    m = retrieval_metrics(codes[:50], labels[:50], codes[50:], labels[50:], 200, show_progress=False)
    m.update(dataset="toy", epoch=3)
    return m


def assert_png(path):
    """A PNG that decodes, at a figure's size, with a curve drawn on it: the
    first line's colour (tab:blue, 31 119 180) covers a stroke's worth of pixels."""
    from PIL import Image
    with open(path, "rb") as f:
        assert f.read(8) == PNG
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 300, pixels.shape
    blue = (np.abs(pixels - np.array([31, 119, 180])).max(axis=2) <= 12).sum()
    assert blue > 100, f"{path}: {blue} pixels of the curve's colour"


def no_temp_files(directory):
    return not [f for f in os.listdir(directory) if f.endswith(".tmp")]


def test_evaluation_plots(tmp_path):
    paths = save_evaluation_plots(metrics_for(32), str(tmp_path / "eval"), title="HashNet")
    assert [os.path.basename(p) for p in paths] == ["pr_curve.png", "precision_at_n.png"]
    for p in paths:
        assert_png(p)
    assert no_temp_files(tmp_path / "eval")


def test_training_plot(tmp_path):
    history = [{"epoch": e, "loss": 1.0 / e, "map": (0.1 * e if e % 2 == 0 else None)}
               for e in range(1, 8)]
    assert_png(save_training_plot(history, str(tmp_path / "train.png")))
    assert_png(save_training_plot(history[:1], str(tmp_path / "one.png")))   # no mAP yet
    assert no_temp_files(tmp_path)


def test_compare_runs_writes_the_figures(tmp_path, capsys):
    inputs = []
    for bit in (16, 32, 64):
        run = tmp_path / f"run{bit}"
        atomic_write_json(metrics_for(bit), str(run / "metrics.json"))
        inputs.append(str(run) if bit != 32 else str(run / "metrics.json"))
    out = tmp_path / "cmp"
    assert main(inputs + ["--out", str(out)]) == 0
    names = sorted(os.listdir(out))
    assert names == ["pr_curves.png", "precision_at_n.png", "precision_radius_vs_bits.png"]
    for name in names:
        assert_png(out / name)
    table = capsys.readouterr().out
    assert "toy, 16 bits, epoch 3" in table and "toy, 64 bits, epoch 3" in table


def test_compare_runs_draws_learning_curves_from_history(tmp_path):
    """A run folder with history.jsonl (utils/training/run_log.py) adds learning_curves.png."""
    from utils.training.run_log import RunLog
    run = tmp_path / "run16"
    atomic_write_json(metrics_for(16), str(run / "metrics.json"))
    log = RunLog(str(run), use_visualdl=False)
    for step in range(1, 7):
        log.step(step, 1.5 / step, 0.01, 1.0, epoch=(step + 2) // 3)
        if step % 3 == 0:
            log.evaluation(step, metrics_for(16), "epoch", step // 3)
    log.close()
    out = tmp_path / "cmp"
    assert main([str(run), "--out", str(out)]) == 0
    assert "learning_curves.png" in os.listdir(out)
    assert_png(out / "learning_curves.png")


def test_compare_runs_labels_repeated_settings(tmp_path):
    runs = []
    for name in ("a", "b"):
        atomic_write_json(metrics_for(16, seed=ord(name)), str(tmp_path / name / "metrics.json"))
        runs.append(load_metrics(str(tmp_path / name)))
    assert len(compare(runs, str(tmp_path / "out"))) == 3


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("dir", "no metrics.json in this directory"),
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"map": 0.5}', "missing precision_radius, pr_curve, precision_at_n"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "not a text file"),
])
def test_compare_runs_bad_input(tmp_path, content, message):
    path = tmp_path / "input"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_metrics(str(path))


def test_compare_runs_cli_one_line_error(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(metrics_for(16)))
    out = subprocess.run([sys.executable, "-m", "scripts.compare_runs", str(good),
                          str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.json'}: "
                                               "no such file or directory"]
    assert not (tmp_path / "o").exists()
