"""What every registered ``--recipe`` must do (utils/training/recipes.py
``Recipe``), checked for each recipe in the registry."""
import inspect

import pytest

from utils import methods
from utils.base.flags import check_ranges
from utils.training import recipes
from utils.training.config import build_method, build_parser

RECIPES = sorted(recipes.RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_implements_every_hook_and_trains_its_default_method(name):
    cls = recipes.RECIPES[name]
    assert issubclass(cls, recipes.Recipe) and cls.name == name
    assert not inspect.isabstract(cls), sorted(cls.__abstractmethods__)
    assert cls.unit in ("epoch", "iter")
    assert name in methods.method_class(cls.default_method).recipes
    assert name in build_parser()._option_string_actions["--recipe"].choices


@pytest.mark.parametrize("name", RECIPES)
def test_schedule_ends_with_an_evaluation_and_a_save(name, make_args):
    args = make_args("--recipe", name, "-e", "3", "--max_iter", "5")
    recipe = recipes.build(args, build_method(args))
    state = recipe.initial_state()
    assert {"best_map", f"best_{cls_unit(name)}", "history"} <= set(state)
    periods = list(recipe.periods(state))
    assert periods and recipe.evaluation_due(periods[-1]) and recipe.save_due(periods[-1])
    assert isinstance(recipe.position(state), str)


def cls_unit(name):
    return recipes.RECIPES[name].unit


@pytest.mark.parametrize("name", RECIPES)
def test_its_flags_have_ranges_and_parse_with_it(name, make_args):
    """Its own flags parse; numeric ones carry a range (checked at startup)."""
    parser = build_parser()
    args = make_args("--recipe", name)
    assert check_ranges(parser, args) is args and args.method == recipes.RECIPES[name].default_method
