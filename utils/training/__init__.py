"""The training layer: the one run skeleton (engine.py), its recipes as plug-ins
(recipes.py registry, reference.py, caffe.py) and the training figures.

Importing the package registers every recipe: one import line per recipe file.
"""
from utils.training import caffe, reference  # noqa: F401  (register "caffe", "reference")
