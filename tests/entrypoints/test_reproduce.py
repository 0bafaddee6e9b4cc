"""scripts/reproduce.sh end to end on the local fixture server (the ``mirror``
fixture of tests/conftest.py), offline, and its tiny preset as docs/evaluation.md
states it."""
import json
import os
import subprocess
import time

from support.errors import assert_cli_error
from support.paths import REPO
from support.ports import closed_port


def reproduce(tmp_path, **env):
    env = dict(os.environ, HOME=str(tmp_path / "home"), COCO_PATH=str(tmp_path / "coco"),
               COCO_LISTS=str(tmp_path / "lists"), REPRODUCE_OUT=str(tmp_path / "out"),
               REPRODUCE_PRESET="tiny", **env)
    return subprocess.run(["bash", "scripts/reproduce.sh", "16"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_reproduce_end_to_end_on_the_fixture_server(mirror, tmp_path):
    proc = reproduce(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| bits | measured mAP | reference Paddle | paper |" in proc.stdout
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 16 |")]
    assert len(row) == 1 and row[0].endswith("| 0.619 | 0.6873 |")
    with open(next((tmp_path / "out" / "logs").glob("eval-16-*/metrics.json"))) as f:
        assert f"| 16 | {json.load(f)['map']:.4f} |" in row[0]


def test_reproduce_offline_stops_in_seconds_with_one_line(tmp_path):
    start = time.time()
    proc = reproduce(tmp_path, HASHNET_DOWNLOAD_BASE=f"http://127.0.0.1:{closed_port()}")
    assert time.time() - start < 60
    line = assert_cli_error(proc, "could not download 6 file(s)", "train2014.zip", "val2014.zip",
                            "AlexNet_pretrained.pdparams", "put it at")
    assert line.count("put it at") == 6
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    assert leftovers == []


def test_docs_state_the_tiny_preset():
    with open(os.path.join(REPO, "docs", "evaluation.md")) as f:
        page = " ".join(f.read().split())
    assert "toy sizes (batch 8, 1 epoch, 64 px crops, mAP@10)" in page
    script = open(os.path.join(REPO, "scripts", "reproduce.sh")).read()
    assert "SIZES=(-bs 8 -e 1 -ee 1 --crop_size 64 --resize_size 72 --num_workers 0 --topK 10" in script
