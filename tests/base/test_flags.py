"""utils/base/flags.py: every numeric flag of every entry point has a
documented range, and the entry point itself refuses a value outside it
with one line before any work starts. Parsers are captured as
tests/test_docs.py does."""
import math
import os
import sys

import pytest

from support.cli import run_in_process
from support.demo_set import demo_argv
from support.errors import assert_cli_error
from support.paths import REPO
from support.docs import capture_parser
from utils.base.errors import UserError


ENTRY_POINTS = {   # module -> arguments it requires
    "main_single_gpu": [], "main_multi_gpu": [],
    "predict": ["--img", "q.jpg"], "infer": ["--img", "q.jpg"],
    "export_model": [],
    "scripts.demo.data": [], "scripts.demo.backbone": [],
    "scripts.demo.report": ["--log-dir", "l", "--list-dir", "d"],
    "scripts.gpu_check": [], "scripts.get_data": ["coco"],
    "scripts.compare_runs": ["run", "--out", "o"], "scripts.convert_alexnet": ["a", "b"],
    "scripts.convert_backbone": ["a", "b"],
    "scripts.compare_methods": ["--dataset", "demo"],
}


NO_NUMERIC_FLAGS = ("scripts.get_data", "scripts.compare_runs", "scripts.convert_alexnet",
                    "scripts.convert_backbone",
                    "scripts.compare_methods")   # its --bits has choices


sys.path.insert(0, os.path.join(REPO, "deploy", "inference_python"))


def numeric_flags(parser):
    """Numeric flags without ``choices`` (argparse itself refuses a --bit of 24)."""
    return [a for a in parser._actions if a.type in (int, float) and not a.choices]


def parser_of(module, monkeypatch):
    with monkeypatch.context() as patch:
        return capture_parser(module, patch)


def entry_main(module):
    import importlib
    return importlib.import_module(module).main


def refused_values(action):
    valid = action.valid_range
    values = [valid.out_of_range_example()] + ([valid.high + 1] if valid.high is not None else [])
    if action.type is float:
        values += [math.nan, math.inf, -math.inf]
    return values


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_every_numeric_flag_has_a_range_in_its_help(module, monkeypatch):
    parser = parser_of(module, monkeypatch)
    for action in numeric_flags(parser):
        assert getattr(action, "valid_range", None) is not None, \
            f"{module}: {action.option_strings[0]} has no range (utils/base/flags.py add(..., valid=))"
        assert action.valid_range.describe() in action.help, action.option_strings


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_every_out_of_range_value_is_refused_by_the_entry_point(module, monkeypatch):
    parser = parser_of(module, monkeypatch)
    flags = numeric_flags(parser)
    if module not in NO_NUMERIC_FLAGS:
        assert flags, f"{module} has no numeric flags?"
    main = entry_main(module)
    for action in flags:
        flag = action.option_strings[-1]
        for value in refused_values(action):
            argv = ENTRY_POINTS[module] + [f"{flag}={value}"]   # "=": -1 is not an option
            with pytest.raises(UserError) as info:
                main(argv)
            message = str(info.value)
            assert f"must be {action.valid_range.violation(value)}, got" in message, (
                module, flag, message)
            assert any(o in message for o in action.option_strings), message


def test_in_range_values_pass_the_check(monkeypatch):
    from utils.training.config import parse_args
    args = parse_args(["--crop_size", "64", "--resize_size", "64", "-lr", "1e-5",
                       "--momentum", "0", "--topK", "-1", "--num_workers", "0"])
    assert args.topK == -1 and args.learning_rate == 1e-5


@pytest.mark.parametrize("argv, fragment", [
    (["-lr", "-1"], "error: -lr/--learning_rate must be > 0, got -1.0"),
    (["-lr", "nan"], "error: -lr/--learning_rate must be finite and > 0, got nan"),
    (["--crop_size", "0"], "error: --crop_size must be >= 1, got 0"),
    (["--crop_size", "5000"], "error: --crop_size must be <= 4096, got 5000"),
    (["--num_workers", "-1"], "error: --num_workers must be >= 0, got -1"),
    (["--num_threads", "4096"], "error: --num_threads must be <= "),
    (["--crop_size", "224", "--resize_size", "200"],
     "error: --resize_size 200 is smaller than --crop_size 224"),
])
def test_training_cli_refuses_before_any_work(tmp_path, argv, fragment):
    import main_single_gpu   # in-process: tests/entrypoints/test_main_single_gpu.py runs its __main__
    proc = run_in_process(main_single_gpu.main, "--log_path", tmp_path / "logs",
                          "--output-dir", tmp_path / "out", *argv)
    assert_cli_error(proc, fragment)
    assert not os.path.exists(tmp_path / "logs") and not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("flags, fragment", [
    (["-ee", "0"], "-ee/--eval_epoch must be >= 1, got 0"),
    (["--debug_steps", "0"], "--debug_steps must be >= 1"),
    (["--step_continuation", "-1"], "--step_continuation must be >= 1"),
    (["-bs", "0"], "-bs/--batch-size must be >= 1"),
    (["--topK", "0"], "--topK must be -1 (whole database) or >= 1, got 0"),
])
def test_non_positive_numeric_flags(demo, tmp_path, flags, fragment):
    from utils.training.config import parse_args
    from support.errors import user_error
    assert fragment in user_error(parse_args, demo_argv(demo, tmp_path, *flags))
