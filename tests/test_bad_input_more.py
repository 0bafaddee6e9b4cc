"""Issue 25, rules 3, 6, 7 and 8: destinations and download variables are
checked when a command starts; an image is refused by its size after the
resize it will get; all-zero label rows and a path with a space are named;
Ctrl-C outside training is one line and exit 130."""
import logging
import os
import signal
import subprocess
import sys

import paddle
import pytest
from PIL import Image

from conftest import (CROP, GUARD_DIR, REPO, RESIZE, assert_cli_error, run_python,
                      user_error)
from models.alexnet import AlexNetHash
from utils.base import download
from utils.base.download import Remote, check_mirror_settings, mirrored
from utils.data import images
from utils.data.transforms import load_query_image, load_rgb
from utils.data.loaders import ImageList, build_datasets
from utils.training.config import data_settings
from utils.data.list_format import parse_list


# ------------------------------------------------------------------ rule 3
@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return str(path)


def test_export_dir_that_is_a_file_stops_before_loading(tmp_path, a_file):
    """No checkpoint is even read: the destination is checked first."""
    result = run_python("export_model.py", "--bit", "16", "--pretrained", str(tmp_path / "none"),
                        "--save-inference-dir", a_file)
    assert_cli_error(result, "--save-inference-dir", "is a file, not a folder")


def test_predict_save_path_checked_before_the_model(demo, tmp_path, a_file):
    img = os.path.join(demo.image_dir, "images", sorted(os.listdir(
        os.path.join(demo.image_dir, "images")))[0])
    result = run_python("predict.py", "--bit", "16", "--dataset", "demo", "--data_path",
                        demo.image_dir, "--list-dir", demo.list_dir, "--pretrained",
                        str(tmp_path / "none"), "--crop_size", str(CROP), "--img", img,
                        "--save_path", os.path.join(a_file, "out"), "--num_threads", "1")
    assert_cli_error(result, "--save_path", "Not a directory")


@pytest.mark.parametrize("flag", ["--root", "--list-dir"])
def test_get_data_root_or_list_dir_that_is_a_file(tmp_path, a_file, flag):
    other = {"--root": str(tmp_path / "root"), "--list-dir": str(tmp_path / "lists")}
    other[flag] = a_file
    result = run_python("-m", "scripts.get_data", "coco", *[x for kv in other.items() for x in kv])
    assert_cli_error(result, f"{flag} {a_file} is a file, not a folder")


def test_training_list_dir_that_is_a_file(make_args, a_file):
    message = user_error(build_datasets, data_settings(make_args("--list-dir", a_file)))
    assert message.startswith(f"--list-dir {a_file} is a file, not a folder")


@pytest.mark.parametrize("content, fragment", [
    (None, "cannot read it"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"http://127.0.0.1/a.zip": {"checksum": "sha9:00"}}', "the entry for http://127.0.0.1/a.zip must be"),
    ('{"http://127.0.0.1/a.zip": {"checksum": "md5:00", "size": "big"}}', "the entry for"),
])
def test_bad_checksums_variable_is_one_line(monkeypatch, tmp_path, content, fragment):
    path = tmp_path / "checksums.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(download.CHECKSUMS_ENV, str(path))
    message = user_error(check_mirror_settings)
    assert message.startswith("HASHNET_CHECKSUMS=") and fragment in message
    assert fragment in user_error(mirrored, Remote("http://127.0.0.1/a.zip", "md5:00"))


@pytest.mark.parametrize("base", ["ftp://host/", "127.0.0.1:8000", "http://"])
def test_bad_download_base_is_one_line(monkeypatch, base):
    monkeypatch.setenv(download.BASE_ENV, base)
    assert "HASHNET_DOWNLOAD_BASE" in user_error(check_mirror_settings)


def test_get_data_checks_the_variables_before_downloading(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR]),
               HASHNET_CHECKSUMS=str(tmp_path / "missing.json"))
    result = subprocess.run([sys.executable, "-m", "scripts.get_data", "coco", "--root",
                             str(tmp_path / "root")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert_cli_error(result, "HASHNET_CHECKSUMS=", "cannot read it")
    assert not os.path.exists(tmp_path / "root") or not os.listdir(tmp_path / "root")


# ------------------------------------------------------------------ rule 6
def strip(tmp_path, height, name="strip.png"):
    """A 1-pixel-wide PNG: tiny on disk, enormous once its short side is resized."""
    path = str(tmp_path / name)
    Image.new("L", (1, height), 128).save(path)
    return path


@pytest.fixture
def limit_5000():
    images.set_max_pixels(5000)
    yield
    images.set_max_pixels(images.DEFAULT_MAX_PIXELS)


def test_the_issues_strip_is_refused_by_its_size_after_resize(tmp_path):
    """1 x 1,000,000 px (a few KB, far under the pixel limit) resized to 72 px
    is 72 x 72,000,000: refused before it is decoded or resized."""
    path = strip(tmp_path, 1_000_000)
    assert os.path.getsize(path) < 100_000
    message = user_error(load_rgb, path, 72)
    assert ("is 1x1000000 px, resized to 72x72000000 = 5,184,000,000 pixels, over the limit of "
            "178,956,970 (pass a larger --max-image-pixels if it is genuine)") in message
    assert "\n" not in message


def test_query_image_is_checked_after_resize(tmp_path, limit_5000):
    path = strip(tmp_path, 100)
    assert "resized to 72x7200 = 518,400 pixels" in user_error(load_query_image, path, 72, 64)


def test_skip_bad_images_skips_a_strip(tmp_path, limit_5000, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("hashnet"), "propagate", True)  # a run's logger may not
    folder = tmp_path / "images"
    folder.mkdir()
    strip(folder, 100, "strip.png")
    Image.new("RGB", (40, 40), (10, 20, 30)).save(folder / "ok.png")
    (tmp_path / "list.txt").write_text("strip.png 1 0\nok.png 0 1\n")
    data = ImageList(str(tmp_path / "list.txt"), str(folder), 2, resize_size=64, crop_size=64,
                     train=False, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="hashnet"):
        assert data[0] is None
        assert data[1] is not None
    assert any("strip.png" in r.getMessage() and "resized to" in r.getMessage()
               for r in caplog.records)
    refusing = ImageList(str(tmp_path / "list.txt"), str(folder), 2, resize_size=64,
                         crop_size=64, train=False)
    assert "resized to 64x6400" in user_error(refusing.__getitem__, 0)


def test_image_cache_estimate_ignores_a_refused_strip(tmp_path, limit_5000):
    from utils.data.image_cache import ResizedShortSide
    assert ResizedShortSide(72).nbytes(strip(tmp_path, 100)) == 0


# ------------------------------------------------------------------ rule 7
def test_path_with_a_space_is_read_as_one_path(tmp_path):
    """The list-line rule (utils/data/list_format.py): the labels are the
    last C fields, so a path may hold spaces."""
    (tmp_path / "l.txt").write_text("ok.jpg 0 1 0\nmy photos/a b.jpg 1 0 0\n")
    paths, labels = parse_list(str(tmp_path / "l.txt"), 3)
    assert paths == ["ok.jpg", "my photos/a b.jpg"] and labels.tolist() == [[0, 1, 0], [1, 0, 0]]


def test_extra_label_columns_are_not_called_a_space(tmp_path):
    (tmp_path / "l.txt").write_text("a.jpg 0 1 0 1\n")
    message = user_error(parse_list, str(tmp_path / "l.txt"), 3)
    assert "4 labels, expected 3" in message and "space" not in message


def test_all_zero_label_rows_are_counted_and_warned(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("hashnet"), "propagate", True)  # a run's logger may not
    (tmp_path / "l.txt").write_text("a.jpg 0 1\nb.jpg 0 0\nc.jpg 1 0\nd.jpg 0 0\n")
    with caplog.at_level(logging.WARNING, logger="hashnet"):
        parse_list(str(tmp_path / "l.txt"), 2)
    warned = [r.getMessage() for r in caplog.records if "all-zero" in r.getMessage()]
    assert len(warned) == 1 and "2 of 4 lines have all-zero labels (first: b.jpg)" in warned[0]


def test_a_split_with_only_zero_labels_is_refused(make_args, demo, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    for split in ("train", "test", "database"):
        text = open(os.path.join(demo.list_dir, f"{split}.txt")).read()
        if split == "test":
            text = "".join(line.split()[0] + " 0" * 10 + "\n" for line in text.splitlines())
        (lists / f"{split}.txt").write_text(text)
    args = make_args("--list-dir", str(lists))
    message = user_error(build_datasets, data_settings(args))
    assert "test.txt: every line's labels are all 0" in message


# ------------------------------------------------------------------ rule 8
def interrupted(argv, ready):
    """Run ``python argv``, send SIGINT once a stdout line contains ``ready``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR]), PYTHONUNBUFFERED="1")
    # As from a terminal: SIGINT at its default disposition in the child, even if
    # something in this test process left it ignored (an ignored signal is
    # inherited across exec, and Python then installs no KeyboardInterrupt).
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    while ready not in seen:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert ready in seen, proc.communicate(timeout=120)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture(scope="module")
def long_lists(demo, tmp_path_factory):
    """The demo lists with the database repeated 100 times: encoding it takes
    long enough that the SIGINT sent at the ready line always lands mid-run,
    however loaded the machine (the process is interrupted, so it costs nothing)."""
    lists = tmp_path_factory.mktemp("long_lists")
    for split in ("train", "test", "database"):
        with open(os.path.join(demo.list_dir, f"{split}.txt")) as f:
            text = f.read()
        (lists / f"{split}.txt").write_text(text * (100 if split == "database" else 1))
    return str(lists)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("w") / "w_16")
    paddle.save(AlexNetHash(16).state_dict(), prefix + ".pdparams")
    return prefix


def check_interrupted(returncode, err):
    assert returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip() and "warn" not in line.lower()]
    assert lines == ["interrupted (Ctrl-C): stopped; no file was left half-written"], err[-2000:]


def test_ctrl_c_in_predict_is_one_line_and_130(demo, weights, long_lists, tmp_path):
    img = os.path.join(demo.image_dir, "images", sorted(os.listdir(
        os.path.join(demo.image_dir, "images")))[0])
    check_interrupted(*interrupted(
        ["predict.py", "--bit", "16", "--dataset", "demo", "--data_path", demo.image_dir,
         "--list-dir", long_lists, "--pretrained", weights, "--crop_size", str(CROP),
         "--resize_size", str(RESIZE), "--img", img, "--save_path", str(tmp_path / "out"),
         "--num_threads", "1"], "weights:"))
    assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".tmp")]


def test_ctrl_c_in_eval_is_one_line_and_130(demo, weights, long_lists, tmp_path):
    from conftest import demo_argv
    check_interrupted(*interrupted(
        ["main_single_gpu.py", "--eval", "--pretrained", weights, *demo_argv(demo, tmp_path),
         "--list-dir", long_lists],
        '"eval": true'))
