"""The model registry: every network the project trains, by its ``--arch`` name.

A backbone is one file that defines a HashNet model class and registers it
here with ``@register("name")``; ``models/__init__.py`` imports that file.
The engine, the export, predict, infer and the GPU check all get their model
from ``build(arch, bit)``, so a new backbone never touches them, and a test
registers a small model instead of patching a module global.

A registered class is built as ``cls(bit)`` and provides
  * ``forward(x [N, 3, S, S]) -> z [N, bit]`` and ``hash_layer`` (the Linear
    that makes z; its learning-rate multipliers differ from the backbone's);
  * ``arch`` (its registry name), ``min_crop`` (the smallest input side it
    takes) and ``label`` (its name in messages);
  * ``signature``: a state-dict key no other arch has (``arch_of_state``
    names the arch of a checkpoint loaded with the wrong ``--arch``);
  * ``load_backbone(path)``: ImageNet (``"imagenet"``), a local file or
    ``"random"`` initialisation of everything but the hash layer.
"""

ARCHS = {}   # name -> model class; argparse takes its choices from this dict


def register(name):
    """Class decorator: make ``name`` an ``--arch`` choice."""
    def add(cls):
        if name in ARCHS and ARCHS[name] is not cls:
            raise ValueError(f"--arch {name} is registered twice ({ARCHS[name].__name__}, "
                             f"{cls.__name__})")
        cls.arch = name
        ARCHS[name] = cls
        return cls
    return add


def unregister(name):
    """Remove ``name`` (tests that register a model of their own)."""
    ARCHS.pop(name, None)


def model_class(arch):
    if arch not in ARCHS:
        raise KeyError(f"unknown --arch {arch!r} (choose from {', '.join(sorted(ARCHS))})")
    return ARCHS[arch]


def build(arch, bit):
    """A fresh ``arch`` model with a ``bit``-bit hash layer (random init)."""
    return model_class(arch)(bit)



def arch_of_state(keys):
    """The registered arch whose ``signature`` key is among ``keys`` (the
    first registered, so AlexNet before a test's AlexNet subclass), else None."""
    keys = set(keys)
    return next((name for name, cls in ARCHS.items()
                 if getattr(cls, "signature", None) in keys), None)
