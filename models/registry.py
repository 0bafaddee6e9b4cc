"""The model registry: every network the project trains, by its ``--arch`` name.

A backbone is one file that defines a ``HashModel`` subclass
(models/backbone.py: the interface) and registers it here with
``@register("name")``; ``models/__init__.py`` imports that file.
The engine, the export, predict, infer and the GPU check all get their model
from ``build(arch, bit)``, so a new backbone never touches them, and a test
registers a small model instead of patching a module global.

A registered class is built as ``cls(bit)``; what it provides is written
down in ``HashModel``.
"""

from utils.base.registry import Registry

ARCHS = Registry("--arch", "arch")   # name -> model class; argparse takes --arch's choices from it
DEFAULT_ARCH = "alexnet"    # the reference's network, the default of every --arch
DEFAULT_CROP = 224          # the reference's crop; an arch may declare its own default_crop
BITS = (16, 32, 48, 64)     # the code lengths of the paper's tables (--bit choices)
register, unregister, model_class = ARCHS.register, ARCHS.unregister, ARCHS.lookup


def build(arch, bit):
    """A fresh ``arch`` model with a ``bit``-bit hash layer (random init)."""
    return model_class(arch)(bit)


def arch_of_state(keys):
    """The registered arch whose ``signature`` key is among ``keys`` (the
    first registered, so AlexNet before a test's AlexNet subclass), else None."""
    keys = set(keys)
    return next((name for name, cls in ARCHS.items()
                 if getattr(cls, "signature", None) in keys), None)
