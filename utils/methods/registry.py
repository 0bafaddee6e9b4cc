"""The method registry: what ``--method`` chooses from, and what a hashing
method supplies (``Method``).

A method is the training objective: the loss on a batch of hash-layer outputs
and labels, its schedule of parameters (HashNet's β), its own flags, and the
rule that turns outputs into codes. The recipes (utils/training/recipes.py:
the training loops) call it; the networks (models/) never see it. A new
method is one file that defines a ``Method`` subclass with ``@register``,
plus one import line in utils/methods/__init__.py.
"""
import abc
import dataclasses

from utils.base.flags import NON_NEGATIVE_FLOAT, add_options, option
from utils.base.registry import Registry

METHODS = Registry("--method", "name")   # name -> Method subclass; --method's choices
register, unregister, method_class = METHODS.register, METHODS.unregister, METHODS.lookup


def quantization_weight():
    """The flag several methods share, each filling its own default in
    ``resolve``: the weight λ of its quantization term."""
    return option(None, "λ, the weight of the method's quantization term (default: the "
                        "method's official value; docs/comparison.md)", NON_NEGATIVE_FLOAT,
                  kind=float)


def resolve_defaults(cls, given, defaults):
    """``cls.Settings`` from the flags ``given`` (None: not given), the
    method's ``defaults`` filling the flags that were not given."""
    return cls.Settings(**{k: defaults[k] if v is None and k in defaults else v
                           for k, v in given.items() if v is not None or k in defaults})


@dataclasses.dataclass(frozen=True)
class QuantizationSettings:
    """The settings of a method whose only flag is its quantization weight."""
    quantization_weight: float = quantization_weight()


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of a method without flags of its own."""


class Method(abc.ABC):
    """A hashing objective, built as ``cls(settings, bit, num_class)``.

    Class attributes:
      * ``name``: its ``--method`` name (set by ``register``);
      * ``recipes``: the ``--recipe`` loops it trains under (a recipe calls
        ``criterion``, ``period_parameters`` and reads ``hash_lr``);
      * ``uses_bank``: its criterion keeps a row per training image (buffers,
        saved in checkpoints as the "bank" and shape-checked on resume) and
        takes images that could not be read out of its pairs with
        ``criterion.exclude(indices)`` (``--skip-bad-images``);
      * ``hash_lr``: how many times the base learning rate the hash layer
        learns at, in recipes whose optimizer does not set its own groups
        (HashNet: 10, the layer is new while the backbone is pretrained);
      * ``code_rule``: how outputs become codes (utils/retrieval/codes.py);
      * ``Settings``: a frozen dataclass of its own flags, each field made
        with ``utils.base.flags.option`` (``--<field>``, its default, range
        and help);
      * ``training``: its official optimisation settings, the defaults of
        the recipe's flags it names (``learning_rate`` per 64 images,
        ``optimizer``, ``weight_decay``, ``momentum``, ``epoch``,
        ``de_step``, ``de_gamma``); a flag given on the command line wins,
        a flag it does not name keeps the recipe's default;
      * ``label``: its name in tables and plots (the paper's, e.g. "HashNet-W").
    """
    name = None
    label = None
    recipes = ("reference",)
    uses_bank = False
    hash_lr = 1.0
    code_rule = "sign"
    Settings = NoSettings
    training = {}

    def __init__(self, settings, bit, num_class):
        self.settings, self.bit, self.num_class = settings, bit, num_class

    @classmethod
    def resolve(cls, given, bit, dataset):
        """``Settings`` from the flag values ``given`` ({field: value}, None
        where the flag was not given): ``defaults`` fills a None, else the
        field's own default."""
        return resolve_defaults(cls, given, cls.defaults(bit, dataset))

    @classmethod
    def defaults(cls, bit, dataset):
        """{field: value} of the fields whose default is the method's
        official value for this bit length or dataset (None in ``Settings``)."""
        return {}

    @abc.abstractmethod
    def criterion(self, n_train):
        """The loss layer: ``forward(z [B, bit], y [B, C], ind [B]) -> scalar``
        on the (gathered) batch of hash-layer outputs z, multi-hot labels y and
        dataset indices ind (rows of the bank, if it keeps one). Its
        parameters for the current period are attributes the recipe sets
        from ``period_parameters``."""

    def period_parameters(self, period):
        """{attribute: value} of the criterion for ``period`` (an epoch of the
        reference recipe, an iteration of the Caffe recipe): HashNet's β."""
        return {}


def method_label(cls):
    """How tables and plots name the method: its ``label``, else its name."""
    return cls.label or cls.name


def add_flags(parser):
    """Every registered method's own flags, a group each."""
    seen = set()
    for name, cls in sorted(METHODS.items()):
        if dataclasses.fields(cls.Settings):
            add_options(parser.add_argument_group(f"--method {name}"), cls.Settings, seen)


def flag_values(cls, values):
    """{field: values[field]} of ``cls.Settings`` (values: the parsed flags)."""
    return {f.name: values.get(f.name) for f in dataclasses.fields(cls.Settings)}


def foreign_flag(cls, values):
    """The first flag of another method given in ``values``, as (flag, its
    method), or None: a flag that would be silently ignored."""
    own = {f.name for f in dataclasses.fields(cls.Settings)}
    for name, other in sorted(METHODS.items()):
        for field in dataclasses.fields(other.Settings):
            if field.name not in own and values.get(field.name) is not None:
                return f"--{field.name}", name
    return None
