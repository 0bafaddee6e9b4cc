"""Ranges of numeric flags: stated in the help, checked once at startup.

Every entry point declares each numeric flag with ``add(parser, ..., valid=
Range(...))``: the range is appended to the flag's help and kept on the
argparse action, and ``check_ranges(parser, args)`` (called where the
entry point parses) turns a value outside it into one line,
``error: <flag> must be <range>, got <value>``, before any work starts.
tests/base/test_flags.py walks every parser and requires a range on every
numeric flag.
"""
import dataclasses
import math
import os
import re

from utils.base.errors import UserError

# AlexNet's five stride/pool stages leave nothing of a crop under 63 px
# (Paddle Inference then dies with SIGFPE instead of an error).
MIN_CROP = 63             # AlexNet's (models/alexnet.py AlexNetHash.min_crop), the default arch
MAX_SIDE = 4096          # a crop/resize side beyond this is a typo, not a setting


def _number(x):
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclasses.dataclass(frozen=True)
class Range:
    """low <= value <= high, finite (``open_low``/``open_high``: strict);
    ``also``: extra allowed values (``--topK -1``); ``text`` overrides the
    wording of the help and of the error; ``high_note`` says where the
    upper bound comes from ("the machine's cores")."""
    low: float = None
    high: float = None
    open_low: bool = False
    open_high: bool = False
    also: tuple = ()
    text: str = None
    high_note: str = None

    def lower(self):
        return f"{'>' if self.open_low else '>='} {_number(self.low)}"

    def upper(self):
        note = f" ({self.high_note})" if self.high_note else ""
        return f"{'<' if self.open_high else '<='} {_number(self.high)}{note}"

    def below(self, value):
        return self.low is not None and (value <= self.low if self.open_low else value < self.low)

    def above(self, value):
        return self.high is not None and (value >= self.high if self.open_high else value > self.high)

    def violation(self, value):
        """What ``value`` fails to be ("must be <this>"), or None if it is in range."""
        if value in self.also:
            return None
        finite = not (isinstance(value, float) and not math.isfinite(value))
        if finite and not self.below(value) and not self.above(value):
            return None
        if self.text:
            return self.text
        if not finite:
            return "finite and " + self.describe()
        return self.lower() if self.below(value) else self.upper()

    def describe(self):
        """The whole range, for the help."""
        if self.text:
            return self.text
        return " and ".join(([self.lower()] if self.low is not None else []) +
                            ([self.upper()] if self.high is not None else []))

    def out_of_range_example(self):
        """A value this range refuses (for the test that walks every flag)."""
        if self.low is not None:
            return self.low if self.open_low else self.low - 1
        return self.high + 1


@dataclasses.dataclass(frozen=True)
class Pattern:
    """The Range of a text value: a full match of ``regex``, which ``text``
    describes (in the help and the error)."""
    regex: str
    text: str

    def violation(self, value):
        return None if isinstance(value, str) and re.fullmatch(self.regex, value) else self.text

    def describe(self):
        return self.text


def machine_cores():
    return os.cpu_count() or 1


AT_LEAST_1 = Range(low=1)
AT_LEAST_0 = Range(low=0)
POSITIVE_FLOAT = Range(low=0.0, open_low=True)      # NaN/inf: "must be finite and > 0"
NON_NEGATIVE_FLOAT = Range(low=0.0)
SIDE = Range(low=1, high=MAX_SIDE)
SEED = Range(low=0, high=2**32 - 1)          # what numpy's seeding accepts
BATCH = Range(low=1, high=65536)
NUM_CLASS = Range(low=1, high=100_000)
THREADS = Range(low=1, high=machine_cores(), high_note="this machine's cores")
# Loader workers mostly wait on disk, so a few per core pay (the recipe
# scripts use 4 on a 2-core machine); beyond that they only cost memory.
WORKERS = Range(low=0, high=4 * machine_cores(), high_note="4 x this machine's cores")


def add(parser, *names, valid=None, **kwargs):
    """``parser.add_argument(*names, **kwargs)``; ``valid``: the Range of a
    numeric flag, appended to its help and checked by check_ranges."""
    if valid is not None:
        kwargs["help"] = (kwargs.get("help", "") + f" [{valid.describe()}]").strip()
    action = parser.add_argument(*names, **kwargs)
    action.valid_range = valid
    return action


def flag_name(action):
    """``-ee/--eval_epoch``: the short spelling and the first long one."""
    short = [o for o in action.option_strings if not o.startswith("--")]
    long = [o for o in action.option_strings if o.startswith("--")]
    return "/".join(short[:1] + long[:1])


def check_ranges(parser, args):
    """A UserError for the first flag whose value is outside its Range."""
    for action in parser._actions:
        valid = getattr(action, "valid_range", None)
        value = getattr(args, action.dest, None)
        wanted = valid.violation(value) if valid is not None and value is not None else None
        if wanted:
            raise UserError(f"{flag_name(action)} must be {wanted}, got {value}")
    return args


def check_sizes(crop, resize=None, flag="--crop_size", min_crop=MIN_CROP, label="AlexNet"):
    """What the network (``min_crop``, named ``label`` in the message: a
    registered model's attributes) and the transforms need of a crop and a
    resize side."""
    if crop < min_crop:
        raise UserError(f"{flag} {crop} is too small: {label} needs at least {min_crop} px")
    if resize is not None:
        check_resize(crop, resize)


def check_resize(crop, resize):
    if resize < crop:
        raise UserError(f"--resize_size {resize} is smaller than --crop_size {crop}")


def option(default, help, valid=None, kind=None):
    """A field of a plug-in's settings dataclass that is also a flag
    (``--<field name>``): its default, help and Range. ``kind`` (the flag's
    type) defaults to the default's type; a bool is a switch."""
    kind = kind or (default.__class__ if default is not None else str)
    return dataclasses.field(default=default,
                             metadata={"help": help, "valid": valid, "type": kind})


def add_options(group, settings_cls, seen):
    """Add ``settings_cls``'s option fields to ``group`` as flags with default
    None (so the plug-in that is chosen fills in its own default); a name in
    ``seen`` (another plug-in's flag of the same name) is not added twice."""
    for field in dataclasses.fields(settings_cls):
        if field.name in seen:
            continue
        seen.add(field.name)
        meta, default = field.metadata, field.default
        text = f"{meta['help']} (default {default})" if default is not None else meta["help"]
        if meta["type"] is bool:
            group.add_argument(f"--{field.name}", action="store_true", default=None, help=text)
        else:
            add(group, f"--{field.name}", type=meta["type"], default=None, valid=meta["valid"],
                help=text)
