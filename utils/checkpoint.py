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


def rename_accumulators(optimizer_state, names):
    """Rename the optimizer's per-parameter entries ("<param>_velocity_0" …)
    by ``names`` {old param name: new}; other entries pass through."""
    longest_first = sorted(names, key=len, reverse=True)
    out = {}
    for key, value in optimizer_state.items():
        old = next((n for n in longest_first if key.startswith(n + "_")), None)
        out[key if old is None else names[old] + key[len(old):]] = value
    return out


def portable_optimizer_state(optimizer, model):
    """Optimizer state keyed by state-dict names (features.0.weight_velocity_0)
    rather than Paddle's parameter names (conv2d_0.w_0_velocity_0), which
    depend on how many layers the process had built before: a checkpoint must
    resume in any process."""
    names = {p.name: k for k, p in model.named_parameters()}
    return rename_accumulators(optimizer.state_dict(), names)


def save_checkpoint(prefix, model, optimizer, training):
    # .pdopt first: a crash between the two renames leaves the newer
    # optimizer with older weights, never the reverse pair of a best file.
    atomic_save({"optimizer": portable_optimizer_state(optimizer, model),
                 "optimizer_keys": "state_dict_names", "training": training}, prefix + ".pdopt")
    atomic_save(model.state_dict(), prefix + ".pdparams")


def load_state_file(path, what, hint=""):
    """``paddle.load(path)`` of a state file, or a one-line UserError naming
    ``what`` it is, the path and ``hint`` (how to get a good one)."""
    hint = f" ({hint})" if hint else ""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} not found{hint}")
    try:
        state = paddle.load(path)
    except Exception as err:  # a file paddle cannot read is bad input
        raise UserError(f"{what} {path} is unreadable ({type(err).__name__}: {err}){hint}")
    if not isinstance(state, dict):
        raise UserError(f"{what} {path} is not a state dict{hint}")
    return state


def strip_params_suffix(prefix):
    """Checkpoint flags take the path without ``.pdparams``; accept it with, too."""
    return prefix[: -len(".pdparams")] if prefix.endswith(".pdparams") else prefix


def read_params(prefix):
    """``(path, state)`` of ``<prefix>.pdparams``."""
    path = strip_params_suffix(prefix) + ".pdparams"
    return path, load_state_file(path, "checkpoint", "--pretrained/--resume take the path "
                                                     "without .pdparams")


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


def load_training_state(prefix, model, optimizer):
    """Restore the optimizer from ``<prefix>.pdopt``; return the training
    state dict saved with it ({} for a reference-format file, whose optimizer
    keys are the reference process's parameter names)."""
    saved = load_state_file(prefix + ".pdopt", "optimizer state",
                            "--resume needs both .pdparams and .pdopt")
    if isinstance(saved, dict) and "optimizer" in saved and "training" in saved:
        state = saved["optimizer"]
        if saved.get("optimizer_keys") == "state_dict_names":
            state = rename_accumulators(state, {k: p.name for k, p in model.named_parameters()})
        optimizer.set_state_dict(state)
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
