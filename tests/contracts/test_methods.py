"""What every registered ``--method`` must do (utils/methods/registry.py
``Method``), checked for each method in the registry, the tests' own
``plain_pairwise`` included: no list here names a method.

Each method trains through the engine on the tiny net under its first
recipe, and a run stopped after its second step and resumed ends
bit-identical to the run that was not stopped (same process, same kernels,
same order of operations: exact equality is what resume guarantees).
"""
import dataclasses
import itertools
import signal
import sys

import numpy as np
import paddle
import pytest

from support.cli import TINY
from support.demo_set import demo_argv
from support.errors import user_error
from utils import methods
from utils.base.flags import flag_name
from utils.retrieval.codes import CODE_RULES
from utils.training import engine, recipes
from utils.training.config import build_method, build_parser, parse_args
from utils.training.step import STOP

METHODS = sorted(methods.METHODS)
# a short run of every recipe: each takes the length flag it knows (-e epochs,
# --max_iter iterations) and ignores the other's
SHORT_RUN = ["-bs", "8", "-e", "2", "-ee", "2", "--max_iter", "4", "--snapshot_iter", "4"]


def method_argv(demo, out, name, *extra):
    cls = methods.method_class(name)
    return demo_argv(demo, out, *TINY, *SHORT_RUN, "--recipe", cls.recipes[0], "--method", name,
                     *extra)


def batch(name, rows=8, bit=16, num_class=10, seed=0):
    """z [rows, bit] (needing a gradient), multi-hot y [rows, C], ind [rows]."""
    rng = np.random.default_rng(seed)
    z = paddle.to_tensor(rng.normal(0, 1, (rows, bit)).astype("float32"), stop_gradient=False)
    y = paddle.to_tensor((rng.random((rows, num_class)) < 0.3).astype("float32"))
    return z, y, paddle.to_tensor(np.arange(rows))


@pytest.mark.parametrize("name", METHODS)
def test_settings_are_flags_with_defaults_and_ranges(name):
    cls = methods.method_class(name)
    settings = cls.resolve({f.name: None for f in dataclasses.fields(cls.Settings)}, 64, "coco")
    assert dataclasses.is_dataclass(settings) and isinstance(settings, cls.Settings)
    assert all(getattr(settings, f.name) is not None for f in dataclasses.fields(settings))
    flags = build_parser()._option_string_actions
    for field in dataclasses.fields(cls.Settings):
        action = flags[f"--{field.name}"]
        assert action.help and action.default is None, flag_name(action)
        if field.metadata["type"] in (int, float):
            assert action.valid_range is not None, flag_name(action)


@pytest.mark.parametrize("name", METHODS)
def test_names_registered_recipes_and_code_rule(name):
    cls = methods.method_class(name)
    assert cls.name == name and cls.recipes and set(cls.recipes) <= set(recipes.RECIPES)
    assert cls.code_rule in CODE_RULES and cls.hash_lr > 0
    assert name in build_parser()._option_string_actions["--method"].choices


@pytest.mark.parametrize("name", METHODS)
def test_criterion_gives_a_finite_loss_and_gradient(name, make_args):
    cls = methods.method_class(name)
    method = build_method(make_args("--recipe", cls.recipes[0], "--method", name))
    criterion = method.criterion(n_train=8)
    for attribute, value in method.period_parameters(3).items():
        assert hasattr(criterion, attribute), attribute   # the recipe sets existing ones only
        setattr(criterion, attribute, value)
    z, y, ind = batch(name)
    loss = criterion(z, y, ind)
    assert loss.shape in ([], [1]) and np.isfinite(float(loss))
    loss.backward()
    assert z.grad.shape == z.shape and np.isfinite(z.grad.numpy()).all()
    assert np.abs(z.grad.numpy()).max() > 0


@pytest.mark.parametrize("name", METHODS)
def test_bank_matches_uses_bank(name, make_args):
    """A bank method keeps rows per training image and can exclude some; a
    bankless one keeps nothing that grows with the training set."""
    cls = methods.method_class(name)
    method = build_method(make_args("--recipe", cls.recipes[0], "--method", name))
    small, large = method.criterion(8), method.criterion(16)
    shapes = {k: list(v.shape) for k, v in small.state_dict().items()}
    if cls.uses_bank:
        assert shapes != {k: list(v.shape) for k, v in large.state_dict().items()}
        small.exclude(np.array([1]))
    else:
        assert shapes == {k: list(v.shape) for k, v in large.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(demo, tmp_path_factory):
    """{method: its short run's last checkpoint prefix}, trained without a stop."""
    prefixes = {}
    for name in METHODS:
        out = tmp_path_factory.mktemp(f"whole_{name}")
        engine.run(parse_args(method_argv(demo, out, name)))
        prefixes[name] = str(out / "output" / "last_16")
    return prefixes


def stop_after_second_step(monkeypatch, recipe_name):
    """The recipe's train_step, with a stop signal raised after its 2nd call."""
    module = sys.modules[recipes.RECIPES[recipe_name].__module__]
    step, calls = module.train_step, []

    def stopping(*args):
        value = step(*args)
        calls.append(1)
        if len(calls) == 2:
            STOP.signum = signal.SIGTERM
        return value
    monkeypatch.setattr(module, "train_step", stopping)


def saved_arrays(prefix):
    """Every array of a checkpoint pair (weights; optimizer and bank), by key."""
    arrays = {}
    for suffix in (".pdparams", ".pdopt"):
        stack = [(suffix, paddle.load(prefix + suffix))]
        while stack:
            key, value = stack.pop()
            if isinstance(value, dict):
                stack += [(f"{key}/{k}", v) for k, v in value.items()]
            elif isinstance(value, (paddle.Tensor, np.ndarray)):
                arrays[key] = np.asarray(value)
    return arrays


@pytest.mark.parametrize("name", METHODS)
def test_stopped_and_resumed_equals_uninterrupted(name, demo, tmp_path, monkeypatch,
                                                  uninterrupted):
    argv = method_argv(demo, tmp_path, name)
    with monkeypatch.context() as patch:
        stop_after_second_step(patch, methods.method_class(name).recipes[0])
        with pytest.raises(SystemExit) as stopped:
            engine.run(parse_args(argv))
    assert stopped.value.code == 128 + signal.SIGTERM
    engine.run(parse_args([*argv, "--resume"]))
    got, want = saved_arrays(str(tmp_path / "output" / "last_16")), saved_arrays(
        uninterrupted[name])
    assert got.keys() == want.keys() and len(got) > 4
    for key in want:   # same process and kernels, same order: bit-exact
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


PAIRS = [(a, b) for a, b in itertools.permutations(METHODS, 2)
         if methods.method_class(a).recipes[0] in methods.method_class(b).recipes]


@pytest.mark.parametrize("trained, other", PAIRS)
def test_resuming_with_another_method_names_both(trained, other, demo, tmp_path, uninterrupted):
    recipe = methods.method_class(other).recipes[0]
    argv = demo_argv(demo, tmp_path, *TINY, *SHORT_RUN, "--recipe", recipe, "--method", other,
                     "--resume", uninterrupted[trained])
    message = user_error(engine.run, parse_args(argv))
    assert f"trained --method {trained}, not --method {other}" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", METHODS)
def test_evaluation_encodes_with_the_methods_code_rule(name, make_args, monkeypatch):
    """The engine's evaluation turns outputs into codes by the method's
    ``code_rule`` (here a rule registered for the test, which counts its calls)."""
    from utils.retrieval.codes import sign_codes
    from utils.training.config import data_settings
    from utils.data.loaders import build_datasets, build_loader
    calls = []
    monkeypatch.setitem(CODE_RULES, "counted_sign", lambda z: calls.append(len(z)) or sign_codes(z))
    monkeypatch.setattr(methods.method_class(name), "code_rule", "counted_sign")
    args = make_args(*TINY, "--recipe", methods.method_class(name).recipes[0], "--method", name)
    sets = build_datasets(data_settings(args), ("test", "database"))
    loaders = {s: build_loader(d, 16, shuffle=False) for s, d in sets.items()}
    engine.evaluate(engine.build_model(args), loaders["test"], loaders["database"], args)
    assert sum(calls) == len(sets["test"]) + len(sets["database"])


def test_pairs_exist():
    """hashnet and the tests' plain_pairwise share the reference recipe."""
    assert ("hashnet", "plain_pairwise") in PAIRS
