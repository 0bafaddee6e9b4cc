"""scripts/demo/report.py: the demo's result line, and its floor (--min-map):
a result below it fails the demo (status 1); at or above it, the demo passes."""
import json

import pytest

from scripts.demo import report


def demo_run(tmp_path, map_value):
    """A finished demo's evaluation log and lists (4 queries, 8 database images)."""
    run = tmp_path / "logs" / "eval-20260101-000000"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"map": map_value, "bit": 16, "topk": 100}))
    lists = tmp_path / "lists"
    lists.mkdir()
    for name, n in (("test.txt", 4), ("database.txt", 8)):
        rows = [f"images/{i:03d}.jpg " + " ".join("1" if j == i % 3 else "0" for j in range(10))
                for i in range(n)]
        (lists / name).write_text("\n".join(rows) + "\n")
    return ["--log-dir", str(tmp_path / "logs"), "--list-dir", str(lists)]


def test_a_demo_below_its_floor_fails(tmp_path, capsys):
    argv = demo_run(tmp_path, 0.7123)
    with pytest.raises(SystemExit) as info:
        report.main(argv + ["--min-map", "0.8"])
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert "demo mAP@100: HashNet 0.7123" in out
    assert "0.7123 is below the demo's floor 0.8" in err
    report.main(argv + ["--min-map", "0.7123"])   # at the floor: passes
    report.main(argv)                              # no floor by default
