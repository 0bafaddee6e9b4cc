"""Checkpoints in the reference's two-file layout, written atomically.

``<prefix>.pdparams`` holds the model state dict only, with the reference's
keys, so released ``weights_{bit}.pdparams`` and our files are
interchangeable. ``<prefix>.pdopt`` holds {"optimizer": …, "training": …}:
the optimizer state plus what a resume needs (epoch, best mAP, the loss's
memory bank, RNG states, config, history). A plain optimizer state dict, as
the reference wrote, is accepted too.
"""
import glob
import os

import paddle

from utils.errors import UserError
from utils.io import atomic_save


def save_checkpoint(prefix, model, optimizer, training):
    # .pdopt first: a crash between the two renames leaves the newer
    # optimizer with older weights, never the reverse pair of a best file.
    atomic_save({"optimizer": optimizer.state_dict(), "training": training}, prefix + ".pdopt")
    atomic_save(model.state_dict(), prefix + ".pdparams")


def read_params(prefix):
    """Load ``<prefix>.pdparams`` (``prefix`` may carry the suffix already)."""
    if prefix.endswith(".pdparams"):
        prefix = prefix[: -len(".pdparams")]
    path = prefix + ".pdparams"
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} not found (--pretrained/--resume take the path "
                        "without .pdparams)")
    try:
        state = paddle.load(path)
    except Exception as err:
        raise UserError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err})")
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} is not a state dict")
    return path, state


def load_weights(model, prefix):
    """Load HashNet weights, refusing a file of another bit length or another model."""
    path, state = read_params(prefix)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise UserError(f"{path} is not a HashNet checkpoint (no {missing[0]})")
    hash_key = "classifier_plus.6.weight"
    bit = list(state[hash_key].shape)[-1]
    if bit != own[hash_key].shape[-1]:
        raise UserError(f"{path} holds {bit}-bit weights but --bit is {own[hash_key].shape[-1]}")
    for key, value in own.items():
        if list(state[key].shape) != list(value.shape):
            raise UserError(f"{path}: {key} has shape {list(state[key].shape)}, expected {list(value.shape)}")
    model.set_state_dict({k: state[k] for k in own})


def load_training_state(prefix, optimizer):
    """Restore the optimizer from ``<prefix>.pdopt``; return the training
    state dict saved with it ({} for a reference-format file)."""
    path = prefix + ".pdopt"
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: --resume needs both .pdparams and .pdopt")
    try:
        saved = paddle.load(path)
    except Exception as err:
        raise UserError(f"{path} is unreadable ({type(err).__name__}: {err})")
    if isinstance(saved, dict) and "optimizer" in saved and "training" in saved:
        optimizer.set_state_dict(saved["optimizer"])
        return saved["training"]
    optimizer.set_state_dict(saved)
    return {}


def newest_checkpoint(output_dir, bit):
    """The most recently written ``{last,model_best}_{bit}`` prefix in output_dir."""
    found = glob.glob(os.path.join(output_dir, f"*_{bit}.pdparams"))
    if not found:
        raise UserError(f"--resume: no *_{bit}.pdparams checkpoint in {output_dir} "
                        "(pass --resume PATH or set --output-dir)")
    return max(found, key=os.path.getmtime)[: -len(".pdparams")]
