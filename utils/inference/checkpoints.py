"""A trained model for inference: which checkpoint, and the model it fills."""
import os

import models
from utils.base.checkpoint import load_weights, strip_params_suffix
from utils.base.errors import UserError


def default_checkpoint(bit):
    """``output/model_best_{bit}`` (what training writes), else the
    reference's released ``output/weights_{bit}``."""
    candidates = [f"output/model_best_{bit}", f"output/weights_{bit}"]
    for prefix in candidates:
        if os.path.isfile(prefix + ".pdparams"):
            return prefix
    raise UserError("no checkpoint given and none found at "
                    + " or ".join(c + ".pdparams" for c in candidates)
                    + ": pass --pretrained PATH (without .pdparams)")


def load_trained_model(bit, pretrained=None, arch=models.DEFAULT_ARCH):
    """An ``arch`` model in eval mode with a checkpoint's weights (default:
    ``default_checkpoint``); also returns the .pdparams path (caches
    fingerprint it)."""
    prefix = strip_params_suffix(pretrained or default_checkpoint(bit))
    model = models.build(arch, bit)
    load_weights(model, prefix, models.arch_of_state)
    model.eval()
    return model, prefix + ".pdparams"
