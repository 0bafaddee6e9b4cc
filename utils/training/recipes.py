"""The recipe registry: what ``--recipe`` chooses from, and what a recipe supplies.

The run skeleton (utils/training/engine.py) is written once: setup, the
finite-loss check, evaluation and its record, keep-best, saving ``last`` on
schedule and on a stop signal, exit 128+signum, resume. A recipe is a
training loop: how the data is drawn, what a period of training is, the
optimizer and the log lines. What is optimised is the method's
(utils/methods/: the criterion and its per-period parameters), which the
recipe calls. utils/training/__init__.py imports every recipe module, one
line each, so a new recipe is one file plus that line.
"""
import abc

from utils.base.registry import Registry
from utils.training.run_log import RunLog

RECIPES = Registry("--recipe", "name")   # name -> Recipe subclass; --recipe's choices
register = RECIPES.register


def build(args, method):
    """The recipe ``args.recipe`` configured by ``args``, training ``method``."""
    return RECIPES[args.recipe](args, method)


def checkpoint_recipe(training):
    """The recipe a checkpoint's training state was written by: recorded as
    ``recipe`` since the registry; older checkpoints tell by their counter
    (only the Caffe recipe's has ``iter``)."""
    if "recipe" in training:
        return training["recipe"]
    return "caffe" if "iter" in training else "reference"


def checkpoint_method(training):
    """The method a checkpoint trained: recorded as ``method`` since the
    method registry; older checkpoints trained their recipe's default."""
    return training.get("method") or RECIPES[checkpoint_recipe(training)].default_method


class Recipe(abc.ABC):
    """A training loop, built as ``cls(args, method)``.

    Class attributes: ``name`` (set by ``register``); ``unit``, what its
    checkpoints count ("epoch" or "iter"); ``default_method``, the
    ``--method`` it trains when none is given; ``default_batch``, its
    per-process batch when -bs is not given (None: the entry point's).

    The engine calls, in a run: ``initial_state``, ``criterion``,
    ``optimizer``, then for each of ``periods(state)``: ``train_period``,
    ``close_period``, ``evaluation_due`` / ``save_due``; ``position`` in its
    messages, ``restore`` on --resume and ``global_step`` for the run log.
    """
    name = None
    unit = "epoch"
    default_method = None
    default_batch = None

    def __init__(self, args, method):
        self.args, self.method = args, method
        self.run_log = RunLog()   # the engine gives the run's (utils/training/run_log.py)

    @classmethod
    def add_flags(cls, parser):
        """Flags of this recipe alone (a group of the one parser)."""

    @classmethod
    def resolve(cls, args):
        """Fill this recipe's defaults into ``args`` and refuse settings it
        cannot train with (UserError), at parse time."""

    @abc.abstractmethod
    def initial_state(self):
        """The counters of a fresh run: a dict saved in checkpoints (with
        ``best_map``, ``best_<unit>`` and ``history``)."""

    def criterion(self, n_train):
        """The method's loss layer for a training set of ``n_train`` images."""
        return self.method.criterion(n_train)

    @abc.abstractmethod
    def optimizer(self, model):
        """The optimizer of ``model``'s parameters, at the first period's lr."""

    @abc.abstractmethod
    def periods(self, state):
        """The stretches of training between two chances to evaluate or save
        (epochs; runs of iterations), from where ``state`` stands."""

    @abc.abstractmethod
    def train_period(self, model, criterion, optimizer, loader, log, state, period):
        """Train one period, updating ``state``; False if a stop signal ended it early."""

    @abc.abstractmethod
    def close_period(self, state, period, criterion, loader, log):
        """The period's history record (or None; the engine adds its mAP) and its log line."""

    @abc.abstractmethod
    def evaluation_due(self, period):
        """Whether mAP is measured after ``period``."""

    @abc.abstractmethod
    def save_due(self, period):
        """Whether ``last`` is saved after ``period``."""

    @abc.abstractmethod
    def position(self, state):
        """Where a run stands, in words ("epoch 2, step 3")."""

    @abc.abstractmethod
    def restore(self, saved, state, prefix):
        """Check a checkpoint's training state ``saved`` against this run,
        restore its counters into ``state``; returns where it resumes, in words."""

    def global_step(self, done, loader):
        """Training steps over the run after ``done`` periods' units (epochs here)."""
        return done * len(loader)

    def set_period_parameters(self, criterion, period):
        """The method's parameters of ``period`` (β) onto its criterion."""
        for name, value in self.method.period_parameters(period).items():
            setattr(criterion, name, value)


def scale_of(criterion):
    """The β of tanh(β·z) a criterion trains with, for the log lines' "scale"
    (1 for a method that does not squash by a schedule)."""
    return getattr(criterion, "beta", 1.0)
