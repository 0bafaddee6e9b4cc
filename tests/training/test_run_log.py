"""Training records: history.jsonl always, VisualDL scalars read back with
visualdl.LogReader (skipped with the reason when visualdl is missing), for
both recipes; --no_visualdl turns VisualDL off."""
import glob
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.cli import TINY
from support.errors import user_error
from support.fuzz import FUZZ, json_like, mutated, one_line_or_result
from utils.training import engine
from utils.training.run_log import RunLog, read_history

CAFFE = ["--recipe", "caffe", "--base_lr", "0.02", "--debug_steps", "1"]
# demo: 48 training images; -bs 16 -> 3 steps per epoch, every step logged
REFERENCE = ["-bs", "16", "-e", "2", "-ee", "1", "--debug_steps", "1"]


def run_dir(out):
    (found,) = glob.glob(os.path.join(str(out), "logs", "train-16-*"))
    return found


def scalars(vdl_dir):
    """{tag: [(step, value)]} of every scalar VisualDL wrote under vdl_dir."""
    from visualdl import LogReader
    (log_file,) = glob.glob(os.path.join(vdl_dir, "vdlrecords.*.log"))
    reader = LogReader(file_path=log_file)
    return {tag: [(r.id, r.value) for r in reader.get_data("scalar", tag)]
            for tag in reader.get_tags().get("scalar", [])}


@pytest.mark.parametrize("flags, unit, logged_steps, evals, eval_steps", [
    (REFERENCE, "epoch", [1, 2, 3, 4, 5, 6], [1, 2], [3, 6]),
    ([*CAFFE, "--max_iter", "4", "--eval_iter", "2", "-bs", "8"], "iter", [1, 2, 3, 4],
     [2, 4], [2, 4]),
], ids=["reference", "caffe"])
def test_a_tiny_run_leaves_visualdl_records(make_args, tmp_path, flags, unit, logged_steps,
                                             evals, eval_steps):
    pytest.importorskip("visualdl", reason="VisualDL records need visualdl (requirements-dev.txt)")
    engine.run(make_args(*flags, *TINY))   # the records are the engine's, whatever the net
    log_dir = run_dir(tmp_path)
    history = read_history(log_dir)
    steps = [r for r in history if r["kind"] == "step"]
    assert [r["step"] for r in steps] == logged_steps
    evaluations = [r for r in history if r["kind"] == "eval"]
    assert [(r["step"], r[unit]) for r in evaluations] == list(zip(eval_steps, evals))
    found = scalars(os.path.join(log_dir, "vdl"))
    for tag in ("train/loss", "train/lr", "train/beta"):
        assert [step for step, _ in found[tag]] == logged_steps, tag
    assert [v for _, v in found["train/loss"]] == pytest.approx([r["loss"] for r in steps])
    for tag, key in (("eval/mAP", "map"), ("eval/P@H<=2", "precision_radius")):
        assert [s for s, _ in found[tag]] == eval_steps, tag
        assert [v for _, v in found[tag]] == pytest.approx([r[key] for r in evaluations])
    for done in evals:   # 17 radii (0..16 bits), recall on the x axis
        assert [s for s, _ in found[f"pr_radius/{unit}_{done}/precision"]] == list(range(17))
        curve = found[f"pr_curve/{unit}_{done}"]
        assert len(curve) >= 2 and [s for s, _ in curve] == sorted(s for s, _ in curve)


def test_no_visualdl_writes_the_history_only(make_args, tmp_path):
    engine.run(make_args("-bs", "16", "-e", "1", "--debug_steps", "1", "--no_visualdl", *TINY))
    log_dir = run_dir(tmp_path)
    assert not os.path.exists(os.path.join(log_dir, "vdl"))
    assert [r["kind"] for r in read_history(log_dir)] == ["step"] * 3 + ["eval"]
    assert "VisualDL off (--no_visualdl)" in open(os.path.join(log_dir, "log.txt")).read()


def test_the_null_run_log_records_nothing(tmp_path):
    log = RunLog()
    log.step(1, 0.5, 0.1, 1.0, epoch=1)
    log.close()
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- reading history.jsonl
HISTORY_SEED = [{"kind": "step", "step": 1, "loss": 0.69, "lr": 0.001, "beta": 1.0, "epoch": 1,
                 "time": 1.5},
                {"kind": "eval", "step": 3, "map": 0.25, "precision_radius": 0.5, "epoch": 1,
                 "time": 2.5}]


def written_history(folder, lines):
    folder.mkdir(exist_ok=True)
    data = lines if isinstance(lines, bytes) else "".join(line + "\n" for line in lines).encode(
        "utf-8", "surrogatepass")
    (folder / "history.jsonl").write_bytes(data)
    return str(folder)


@pytest.mark.parametrize("lines, fragment", [
    (['{"kind": "step", "step": 1}', '{"kind": "eval"}'], "history.jsonl:1: its loss is not a number"),
    (["[1, 2]", "{}"], "history.jsonl:1: not an object"),
    (['{"kind": "eval", "step": 2, "map": "0.5", "precision_radius": 0}'],
     "history.jsonl:1: its map is not a number"),
    (["{torn", '{"kind": "eval", "step": 2, "map": 0.5, "precision_radius": 0}'],
     "history.jsonl:1: not JSON"),
    (b"\xff\xfe{}\n", "not UTF-8 text"),
], ids=["missing numbers", "not an object", "a string for a number", "bad line not last",
        "not text"])
def test_history_lines_of_the_wrong_shape_are_one_line(tmp_path, lines, fragment):
    assert fragment in user_error(read_history, written_history(tmp_path / "run", lines))


def test_a_torn_last_line_is_skipped(tmp_path):
    lines = [json.dumps(r) for r in HISTORY_SEED] + ['{"kind": "st']
    # exact: a JSON round trip of each double
    assert read_history(written_history(tmp_path / "run", lines)) == HISTORY_SEED


SEED_TEXT = "".join(json.dumps(r) + "\n" for r in HISTORY_SEED).encode()


@FUZZ
@given(data=st.lists(json_like(HISTORY_SEED[0]) | json_like(HISTORY_SEED[1]), max_size=4)
       .map(lambda records: "".join(json.dumps(r) + "\n" for r in records).encode())
       | mutated([SEED_TEXT]))
def test_fuzzed_history_is_read_or_refused_in_one_line(tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp() / "fuzzed_run"
    records = one_line_or_result(read_history, written_history(folder, data))
    assert records is None or all(r["kind"] in ("step", "eval") for r in records)
