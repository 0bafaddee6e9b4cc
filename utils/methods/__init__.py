"""The methods layer: hashing objectives as plug-ins (registry.py), found by
``--method`` name. Importing the package registers every method: one import
line per method file (each registers its --method)."""
from utils.methods import hashnet  # noqa: F401
from utils.methods import hashnet_ablations  # noqa: F401
from utils.methods import hashnet_caffe  # noqa: F401
from utils.methods import csq  # noqa: F401
from utils.methods import dhn  # noqa: F401
from utils.methods import dpsh  # noqa: F401
from utils.methods import dsh  # noqa: F401
from utils.methods.registry import (METHODS, Method, add_flags, method_class, register,  # noqa: F401
                                    unregister)
