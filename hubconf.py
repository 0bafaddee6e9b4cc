"""paddle.hub entry points (paddle.hub looks for ``hubconf.py`` at the repo root).

    import paddle
    paddle.hub.list("path/to/this/repo", source="local")        # ['hashnet']
    model = paddle.hub.load("path/to/this/repo", "hashnet", source="local",
                            bit=64, pretrained="output/model_best_64")
    z = model(x)    # x: [N, 3, 224, 224] normalised like utils.data.transforms.normalize;
                    # z: [N, bit] in (-1, 1), sign(z) is the hash code

paddle.hub lists every public callable of this module as an entry point, so
the imports below live inside the function or under private names. It
imports this file with the repository on sys.path only while importing it,
so the entry point puts it back to import the project's packages (a
``paddle.hub.load`` from another folder otherwise fails: no module models).
"""
import os as _os
import sys as _sys

dependencies = ["paddle", "numpy", "PIL"]
_REPO = _os.path.dirname(_os.path.abspath(__file__))


def hashnet(bit=64, pretrained=None, arch=None):
    """HashNet with a ``bit``-bit hash layer on the ``arch`` backbone (default
    ``models.DEFAULT_ARCH``, AlexNet), in eval mode. ``pretrained``: a checkpoint path (with or without .pdparams, as
    written by main_single_gpu.py or the reference's released weights_<bit>);
    None returns the untrained network (random init, for fine-tuning elsewhere)."""
    if _REPO not in _sys.path:
        _sys.path.insert(0, _REPO)
    import models
    from utils.inference.checkpoints import load_trained_model
    arch = arch or models.DEFAULT_ARCH
    if pretrained is None:
        model = models.build(arch, bit)
        model.eval()
        return model
    model, _ = load_trained_model(bit, pretrained, arch=arch)
    return model
