"""--resume says what it notices (issue 25, rule 7): a checkpoint of another
optimizer or training list is refused in one line before anything is
restored, changed settings are named, a finished run says it is finished.
One tiny (--arch tiny) 1-epoch run is shared by the module."""
import os
import shutil

import pytest

from conftest import TINY, user_error
from utils.training import engine


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """A finished 1-epoch run, its lists beside it (copied, so a test may change them)."""
    from conftest import demo_argv
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
