"""The backend registry and ``--index`` specs: ``BACKEND[:KIND][,key=value...]``.

Every parameter has a stated range or shape (a backend's ``valid``: a
utils/base/flags.py Range for a number, a Pattern for text), checked when
the spec is parsed, before any work, and again when a saved index.json is
read: a value outside it never reaches the library (faiss aborts the process
on some) nor a saved index.

A backend is one file with a ``CodeIndex`` subclass registered by
``@register("name")``, plus one import line in utils/retrieval/index/__init__.py."""
import re

from utils.base.errors import UserError
from utils.base.flags import Range
from utils.base.registry import Registry

BACKENDS = Registry("--index", "backend")   # name -> CodeIndex subclass
DEFAULT_SPEC = "exact"
register = BACKENDS.register


def spec_help():
    return "; ".join(f"{name}:{'|'.join(cls.kinds)}" for name, cls in BACKENDS.items())


def index_help():
    """The --index help of predict.py and infer.py, from the registered backends."""
    backends = " | ".join(f"{name}:{'|'.join(cls.kinds)}" + (f" ({cls.requires})"
                                                             if cls.requires else "")
                          for name, cls in BACKENDS.items())
    return (f"search index: BACKEND[:KIND][,key=value...] with BACKEND:KIND one of {backends}; "
            "built once under --save_path and reused while the code cache's fingerprint "
            "matches; or the folder of a saved index (docs/retrieval.md: Retrieval at scale)")


def parse_value(rule, text):
    """A spec's value as its rule (``valid``) wants it: an int for a Range
    (written as digits), else the text."""
    if isinstance(rule, Range):
        return int(text) if re.fullmatch(r"[+-]?[0-9]{1,19}", text) else text
    return text


def params_problem(cls, params):
    """What is wrong with ``params`` (a kind's, ``kind`` included) for
    backend ``cls``: a missing or unknown key, a value outside its stated
    range or shape; None when nothing is."""
    kind = params.get("kind")
    if kind not in cls.kinds:
        return f"{cls.backend} has no kind {str(kind)[:40]!r} (known: {', '.join(cls.kinds)})"
    want = set(cls.defaults.get(kind, {}))
    if set(params) - {"kind"} != want:
        return f"{cls.backend}:{kind} takes the parameters {', '.join(sorted(want)) or 'none'}"
    for key in sorted(want):
        rule, value = cls.valid[key], params[key]
        number = isinstance(rule, Range)
        if type(value) is not (int if number else str):
            return f"{key}={str(value)[:80]} must be {'an integer ' if number else ''}{rule.describe()}"
        wanted = rule.violation(value)
        if wanted:
            return f"{key}={str(value)[:80]} must be {wanted}"
    return None


def check_params(cls, params, spec):
    problem = params_problem(cls, params)
    if problem:
        raise UserError(f"--index {spec}: {problem}")


def parse_spec(spec):
    """``"faiss:ivf,nprobe=32"`` -> (backend class, params with every default
    filled in, ``kind`` among them); UserError naming what is wrong."""
    head, _, rest = str(spec).strip().partition(",")
    name, _, kind = head.partition(":")
    cls = BACKENDS.get(name)
    if cls is None:
        raise UserError(f"--index {spec}: unknown backend {name!r} (known: {spec_help()}; "
                        "or the folder of a saved index)")
    kind = kind or cls.kinds[0]
    if kind not in cls.kinds:
        raise UserError(f"--index {spec}: {name} has no kind {kind!r} "
                        f"(known: {', '.join(cls.kinds)})")
    params = dict(cls.defaults.get(kind, {}))
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in params:
            known = ", ".join(sorted(params)) or "none"
            raise UserError(f"--index {spec}: {item!r} is not a {name}:{kind} parameter "
                            f"(key=value with key in: {known})")
        params[key] = parse_value(cls.valid[key], value)
    params["kind"] = kind
    check_params(cls, params, spec)
    return cls, params


def create_index(spec, bit, directory=None):
    """An empty index; ``directory`` is where an embedded milvus-lite file lives."""
    cls, params = parse_spec(spec)
    return cls(bit, directory=directory, **params)


def recreate_index(backend, params, bit, directory):
    """An empty index of a saved one's backend and parameters (index.json,
    checked by utils/retrieval/index/saved.py)."""
    return BACKENDS[backend](bit, directory=directory, **params)


def build_index(spec, packed, bit, directory=None):
    return create_index(spec, bit, directory).add(packed)

