"""Shallow hashing on fixed features (registry.py): one import line per
method file (each registers itself)."""
from utils.methods.shallow import itq  # noqa: F401
from utils.methods.shallow import itq_cca  # noqa: F401
from utils.methods.shallow import lsh  # noqa: F401
from utils.methods.shallow import sh  # noqa: F401
from utils.methods.shallow.registry import SHALLOW_METHODS, ShallowMethod  # noqa: F401
