"""scripts/compare_runs.py reads evaluations' metrics.json and their runs'
history.jsonl: any file of the wrong shape is one line, the fuzzed ones
included (the figures themselves: tests/training/test_plots.py)."""
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scripts.compare_runs import load_metrics, reference_table, summary
from support.errors import user_error
from support.fuzz import FUZZ, json_like, mutated, one_line_or_result

METRICS_SEED = {"map": 0.71, "map_tie_aware": 0.7, "precision_radius": 0.62,
                "recall_radius": 0.3, "radius": 2, "bit": 4, "dataset": "coco", "epoch": 3,
                "pr_curve": {"radius": [0, 1, 2, 3, 4], "precision": [0.9, 0.8, 0.62, 0.4, 0.2],
                             "recall": [0.1, 0.2, 0.3, 0.7, 1.0]},
                "precision_at_n": {"n": [1, 10, 100], "precision": [0.9, 0.8, math.nan]}}


def metrics_file(folder, data):
    folder.mkdir(exist_ok=True)
    path = folder / "metrics.json"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return str(path)


@pytest.mark.parametrize("change, fragment", [
    ({"map": "0.7"}, "map is not a number"),
    ({"radius": 2.5}, "radius is not a whole number"),
    ({"bit": None}, "bit is not a whole number"),
    ({"pr_curve": {"radius": [0], "precision": ["x"], "recall": [0]}}, "lists of numbers"),
    ({"precision_at_n": [1, 2]}, "lists of numbers"),
    ({"dataset": ["coco"]}, "dataset is not a name"),
], ids=["map a string", "radius a float", "bit null", "curve of strings", "curve a list",
        "dataset a list"])
def test_metrics_of_the_wrong_shape_are_one_line(tmp_path, change, fragment):
    path = metrics_file(tmp_path / "run", dict(METRICS_SEED, **change))
    assert fragment in user_error(load_metrics, path)


def test_a_history_of_the_wrong_shape_is_one_line(tmp_path):
    metrics_file(tmp_path / "run", METRICS_SEED)
    (tmp_path / "run" / "history.jsonl").write_text('{"kind": "step"}\n[]\n')
    assert "history.jsonl:1: its step is not a number" in user_error(load_metrics,
                                                                       str(tmp_path / "run"))


def compared(path):
    """What compare_runs prints of one run (its figures are test_plots.py's)."""
    run = load_metrics(path)
    return summary([run]) + reference_table([run], "coco")


@FUZZ
@given(data=json_like(METRICS_SEED) | mutated([json.dumps(METRICS_SEED).encode()]))
def test_fuzzed_metrics_are_read_or_refused_in_one_line(tmp_path_factory, data):
    path = metrics_file(tmp_path_factory.getbasetemp() / "fuzzed_eval", data)
    one_line_or_result(compared, path)


def test_the_seed_is_a_valid_input(tmp_path):
    assert "| 4 | 0.7100 |" in compared(metrics_file(tmp_path / "run", METRICS_SEED))
