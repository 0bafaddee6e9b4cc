"""The networks, found by ``--arch`` name through the registry (models/registry.py).

Importing this package registers every backbone: one import line per file.
"""
import utils  # noqa: F401  (silences Paddle's import-time ccache warning)
from models import alexnet, caffenet, resnet50, vgg16  # noqa: F401  (each registers its --arch)
from models.registry import (ARCHS, BITS, DEFAULT_ARCH, DEFAULT_CROP, arch_of_state, build,
                             model_class, register, unregister)

__all__ = ["ARCHS", "BITS", "DEFAULT_ARCH", "DEFAULT_CROP", "arch_of_state", "build",
           "model_class", "register", "unregister"]
