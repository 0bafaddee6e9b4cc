"""The backend registry and ``--index`` specs: ``BACKEND[:KIND][,key=value...]``.

A backend is one file with a ``CodeIndex`` subclass registered by
``@register("name")``, plus one import line in utils/retrieval/index/__init__.py."""
from utils.base.errors import UserError
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


def parse_value(text):
    try:
        return int(text)
    except ValueError:
        return text


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
        params[key] = parse_value(value)
    params["kind"] = kind
    return cls, params


def create_index(spec, bit, directory=None):
    """An empty index; ``directory`` is where an embedded milvus-lite file lives."""
    cls, params = parse_spec(spec)
    return cls(bit, directory=directory, **params)


def recreate_index(backend, params, bit, directory):
    """An empty index of a saved one's backend and parameters (index.json)."""
    if backend not in BACKENDS:
        raise UserError(f"{directory}: unknown index backend {backend!r} (known: {spec_help()})")
    return BACKENDS[backend](bit, directory=directory, **params)


def build_index(spec, packed, bit, directory=None):
    return create_index(spec, bit, directory).add(packed)

