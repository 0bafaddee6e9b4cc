"""scripts/reproduce.sh end to end on the local fixture server (the ``mirror``
fixture of tests/conftest.py), offline, and its tiny preset as docs/evaluation.md
states it."""
import json
import os
import subprocess
import time

from download_fixtures import N_DATABASE, N_TEST, N_TRAIN, copy_dir
from support.errors import assert_cli_error
from support.paths import REPO
from support.ports import closed_port


def reproduce(tmp_path, *dataset, **env):
    env = dict(os.environ, HOME=str(tmp_path / "home"), COCO_PATH=str(tmp_path / "coco"),
               COCO_LISTS=str(tmp_path / "lists"), IMAGENET_LISTS=str(tmp_path / "lists"),
               NUSWIDE_LISTS=str(tmp_path / "lists"), REPRODUCE_OUT=str(tmp_path / "out"),
               REPRODUCE_PRESET="tiny", **env)
    return subprocess.run(["bash", "scripts/reproduce.sh", *dataset, "16"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def measured_row(proc, tmp_path):
    """The table's 16-bit row, checked against the evaluation's metrics.json."""
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 16 |")]
    assert len(row) == 1, proc.stdout[-3000:]
    with open(next((tmp_path / "out" / "logs").glob("eval-16-*/metrics.json"))) as f:
        # exact: the table formats the mAP read from this metrics.json
        assert f"| 16 | {json.load(f)['map']:.4f} |" in row[0]
    return row[0]


def test_reproduce_end_to_end_on_the_fixture_server(mirror, tmp_path):
    proc = reproduce(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| bits | measured mAP | reference Paddle | paper |" in proc.stdout
    assert measured_row(proc, tmp_path).endswith("| 0.619 | 0.6873 |")


def test_reproduce_imagenet_on_a_users_ilsvrc_copy(mirror, tmp_path):
    """The lists from the fixture server, the images from a copy laid out as
    ILSVRC-2012 (train/<wnid>/, val/ flat and in class folders), which the
    step only reads; the paper's ImageNet number beside the measured one."""
    copy = copy_dir(mirror.root, "imagenet")
    before = sorted(os.path.join(d, f) for d, _, files in os.walk(copy) for f in files)
    proc = reproduce(tmp_path, "imagenet", IMAGENET_PATH=copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = N_TRAIN + N_TEST + (N_TRAIN + N_DATABASE)   # the database holds the train images
    assert f"images: all {entries} list entries found under" in proc.stdout
    assert measured_row(proc, tmp_path).endswith("|  | 0.4420 |")
    lists = (tmp_path / "lists" / "test.txt").read_text().splitlines()
    assert lists[0].startswith("val/ILSVRC2012_val_00000001.JPEG ")
    assert lists[1].startswith("val/n0000000") and len(lists[0].split()) == 101
    assert sorted(os.path.join(d, f) for d, _, files in os.walk(copy) for f in files) == before


def test_reproduce_nuswide_81_on_the_users_images(mirror, tmp_path):
    proc = reproduce(tmp_path, "nuswide_81", NUSWIDE_PATH=copy_dir(mirror.root, "nuswide_81"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    eval_dir = next((tmp_path / "out" / "logs").glob("eval-16-*"))
    config = json.loads((eval_dir / "config.json").read_text())
    assert (config["dataset"], config["num_class"]) == ("nuswide_81_m", 81)
    measured = json.loads((eval_dir / "metrics.json").read_text())["map"]
    summary = [line for line in proc.stdout.splitlines()
               if line.startswith("nuswide_81_m, 16 bits")]
    # exact: the summary formats the mAP read from this metrics.json
    assert len(summary) == 1 and f" {measured:.4f} " in summary[0]   # no paper column to set it by
    assert len((tmp_path / "lists" / "train.txt").read_text().splitlines()[0].split()) == 82


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
