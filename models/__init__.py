"""The networks, found by ``--arch`` name through the registry (models/registry.py).

Importing this package registers every backbone: one import line per file.
"""
import utils  # noqa: F401  (silences Paddle's import-time ccache warning)
from models import hashnet  # noqa: F401  registers "alexnet"
from models import caffenet, resnet50, vgg16  # noqa: F401  register "caffenet", "resnet50", "vgg16"
from models.registry import ARCHS, arch_of_state, build, model_class, register, unregister

__all__ = ["ARCHS", "arch_of_state", "build", "model_class", "register", "unregister"]
