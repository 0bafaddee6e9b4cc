"""The methods layer: hashing objectives as plug-ins (registry.py), found by
``--method`` name. Importing the package registers every method: one import
line per method file."""
from utils.methods import hashnet, hashnet_caffe  # noqa: F401  (each registers its --method)
from utils.methods.registry import (METHODS, Method, add_flags, method_class, register,  # noqa: F401
                                    unregister)
