"""The training layer: the one run skeleton (engine.py), its recipes as plug-ins
(recipes.py registry, reference.py, caffe.py) and the training figures."""
