"""Fuzzing the readers of input formats with Hypothesis.

The property every reader keeps (``one_line_or_result``): on any input it
returns a result or raises the project's one-line UserError, never another
exception, within ``SECONDS`` and ``PEAK_BYTES`` of Python allocations
(numpy's and Paddle's host buffers included: both report to tracemalloc).

The inputs start from the real formats (``mutated`` bytes of a real file,
``json_like`` variants of a real JSON document, ``edited_text`` of real
lines), so that most examples get past the first check of a reader. The
runs are derandomized: CI sees the same EXAMPLES inputs per reader every
time, and a failure names the input that reproduces it.
"""
import json
import time
import tracemalloc

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from utils.base.errors import UserError

EXAMPLES = 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SECONDS = 5.0            # per example; the readers take milliseconds
PEAK_BYTES = 64 << 20    # a crafted size must not make a reader allocate more


def one_line_or_result(read, *args, **kwargs):
    """``read(*args, **kwargs)``'s result, or None after a one-line
    UserError; any other exception propagates (the example fails), as does
    a run over SECONDS or an allocation peak over PEAK_BYTES."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        return read(*args, **kwargs)
    except UserError as err:
        message = str(err)
        assert message.strip() and len(message.splitlines()) == 1, repr(message)
        return None
    finally:
        took = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert took < SECONDS, f"{read.__name__} took {took:.1f} s"
        assert peak < PEAK_BYTES, f"{read.__name__} allocated {peak / 2**20:.0f} MiB"


# ---------------------------------------------------------------- bytes
@st.composite
def mutated(draw, seeds):
    """One of ``seeds`` (bytes) with up to five edits: a byte set, bytes
    inserted, a run deleted, the end cut off."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(("set", "insert", "delete", "cut")))
        at = draw(st.integers(0, len(data)))
        if kind == "set" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "cut":
            del data[at:]
    return bytes(data)


# ---------------------------------------------------------------- JSON
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))


def json_values():
    """Any JSON value, small."""
    return st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)


@st.composite
def json_like(draw, seed):
    """``seed`` (a JSON value) with some parts replaced by any JSON value,
    some dict keys dropped: the wrong shapes a reader must refuse."""
    def vary(value):
        if draw(st.integers(0, 7)) == 0:
            return draw(json_values())
        if isinstance(value, dict):
            return {k: vary(v) for k, v in value.items() if draw(st.integers(0, 11))}
        if isinstance(value, list):
            return [vary(v) for v in value]
        return value
    return vary(seed)


def json_bytes(seed):
    """The text of ``json_like(seed)`` documents, and raw edits of it."""
    valid = json_like(seed).map(lambda v: json.dumps(v).encode())
    return valid | mutated([json.dumps(seed).encode()])


# ---------------------------------------------------------------- text lines
TEXT_PIECES = st.sampled_from([" ", "\t", "0", "1", "2", "1.0", "-1", ",", ";", "\"", "'", "\n",
                               "\r\n", "../", "/", "a b", "é", "\u00a0", "\ufeff", "\x00"])


@st.composite
def edited_text(draw, seed):
    """``seed`` (text) with up to five pieces inserted or runs deleted, as a
    careless editor or a foreign tool would leave it."""
    text = draw(st.just(seed))
    for _ in range(draw(st.integers(0, 5))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(TEXT_PIECES | st.text(max_size=4)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 8)):]
    return text
