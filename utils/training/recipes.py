"""The recipe registry: what ``--recipe`` chooses from, and what a recipe supplies.

The run skeleton (utils/training/engine.py) is written once: setup, the
finite-loss check, evaluation and its record, keep-best, saving ``last`` on
schedule and on a stop signal, exit 128+signum, resume. A recipe supplies only
what differs between training schemes, as a class registered here:

  unit                 what its checkpoints count: "epoch" or "iter"
  initial_state()      the counters of a fresh run (a dict saved in checkpoints)
  criterion(n_train)   the loss layer (its ``beta`` is set by the recipe)
  optimizer(model)
  periods(state)       the stretches of training between two chances to
                       evaluate or save (epochs; runs of iterations), from
                       where ``state`` stands
  train_period(...)    train one period; False if a stop signal ended it early
  close_period(...)    the period's history record (or None) and its log line
  evaluation_due(p), save_due(p)
  position(state)      where a run stands, in words ("epoch 2, step 3")
  restore(saved, state, prefix)  resume checks and counters from a checkpoint

utils/training/__init__.py imports every recipe module, one line each, so a
new recipe is one file plus that line.
"""
from utils.training.run_log import RunLog

RECIPES = {}   # name -> Recipe subclass; argparse takes --recipe's choices from it


def register(name):
    """Class decorator: make ``name`` a ``--recipe`` choice."""
    def add(cls):
        cls.name = name
        RECIPES[name] = cls
        return cls
    return add


def build(args):
    """The recipe ``args.recipe`` configured by ``args``."""
    return RECIPES[args.recipe](args)


def checkpoint_recipe(training):
    """The recipe a checkpoint's training state was written by: recorded as
    ``recipe`` since the registry; older checkpoints tell by their counter
    (only the Caffe recipe's has ``iter``)."""
    if "recipe" in training:
        return training["recipe"]
    return "caffe" if "iter" in training else "reference"


class Recipe:
    """Base of the registered recipes; see the module docstring."""
    name = None
    unit = "epoch"

    def __init__(self, args):
        self.args = args
        self.run_log = RunLog()   # the engine gives the run's (utils/training/run_log.py)

    def global_step(self, done, loader):
        """Training steps over the run after ``done`` periods' units (epochs here)."""
        return done * len(loader)
