"""Checkpoints in the reference's two-file layout, written atomically.

``<prefix>.pdparams`` holds the model state dict only, with the reference's
keys, so released ``weights_{bit}.pdparams`` and our files are
interchangeable. ``<prefix>.pdopt`` holds {"optimizer": …, "training": …}:
the optimizer state plus what a resume needs (epoch, best mAP, the loss's
memory bank, RNG states, config, history). A plain optimizer state dict, as
the reference wrote, is accepted too.

The pair is one unit through ``<prefix>.manifest.json``, written last: it
names both files with their size and sha256. A crash (or kill) between the
two renames leaves a file that does not match the manifest, and ``--resume``
/ ``--pretrained`` say so instead of loading a mismatched pair. A
checkpoint without a manifest (the reference's released weights, older
files) loads unverified, as before.
"""
import glob
import os

import numpy as np

from utils.base.errors import UserError, one_line
from utils.base.fingerprint import is_sha256, sha256_file
from utils.base.io import atomic_save, atomic_write_json
from utils.base.safe_pickle import RefusedPickle, load_paddle_file
from utils.base.text_files import read_json


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


MANIFEST_FORMAT = "hashnet-checkpoint-manifest/1"


def save_checkpoint(prefix, model, optimizer, training):
    # .pdopt first, the manifest last: until the manifest names both new
    # files, a load finds a file that does not match it.
    atomic_save({"optimizer": portable_optimizer_state(optimizer, model),
                 "optimizer_keys": "state_dict_names", "training": training}, prefix + ".pdopt")
    atomic_save(model.state_dict(), prefix + ".pdparams")
    write_manifest(prefix, (".pdparams", ".pdopt"), arch=getattr(model, "arch", None))


def size_and_sha256(path):
    """(size in bytes, sha256 hex) of a file."""
    return os.path.getsize(path), sha256_file(path)


def manifest_path(prefix):
    return prefix + ".manifest.json"


def write_manifest(prefix, suffixes, arch=None):
    """The manifest naming ``suffixes``' files with size and sha256, and the
    ``--arch`` of the weights (the .pdparams stays a plain state dict)."""
    files = {}
    for suffix in suffixes:
        size, sha = size_and_sha256(prefix + suffix)
        files[os.path.basename(prefix + suffix)] = {"bytes": size, "sha256": sha}
    record = {"format": MANIFEST_FORMAT, "files": files}
    if arch:
        record["arch"] = arch
    atomic_write_json(record, manifest_path(prefix))


def read_manifest(manifest):
    """(the manifest's record, {file name: (bytes, sha256)}); ValueError
    when the file is not a manifest of that shape."""
    record = read_json(manifest)
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict):
        raise ValueError('not a JSON object with a "files" object')
    entries = {}
    for name, entry in files.items():
        size, sha = (entry.get("bytes"), entry.get("sha256")) if isinstance(entry, dict) else (0, 0)
        if type(size) is not int or size < 0 or not is_sha256(sha):
            raise ValueError(f"its entry for {name[:80]!r} is not {{\"bytes\": n, \"sha256\": hex}}")
        entries[name] = (size, sha)
    return record, entries


def recorded_arch(path):
    """The ``--arch`` a checkpoint's manifest records, else None (no manifest,
    an older one, or the reference's files)."""
    try:
        record, _ = read_manifest(manifest_path(os.path.splitext(path)[0]))
    except (OSError, ValueError):
        return None
    arch = record.get("arch")
    return arch if isinstance(arch, str) else None


def wrong_arch_error(path, state, model, identify):
    """The one-line error for a checkpoint of another network: which arch the
    file is (its manifest, else ``identify(keys)``) and the --arch to pass."""
    own = getattr(model, "arch", None)
    found = recorded_arch(path) or (identify(state.keys()) if identify else None)
    if found and found != own:
        return UserError(f"{path} holds --arch {found} weights, not --arch {own}: pass "
                         f"--arch {found} (or a --arch {own} checkpoint)")
    missing = next(k for k in model.state_dict() if k not in state)
    return UserError(f"{path} is not a HashNet checkpoint of --arch {own} (no {missing})")


CHECKPOINT_REMEDY = "use another checkpoint (e.g. model_best_* or an older copy)"


def verify_against_manifest(path, prefix=None, remedy=CHECKPOINT_REMEDY):
    """Refuse ``path`` (a .pdparams or .pdopt; or ``prefix``'s file of
    another unit, e.g. an export) if the unit's manifest says it is not the
    file that was saved with the others; no manifest: nothing to check (the
    reference's files, older checkpoints and exports)."""
    prefix = prefix or os.path.splitext(path)[0]
    manifest = manifest_path(prefix)
    if not os.path.isfile(manifest):
        return
    try:
        _, entries = read_manifest(manifest)
    except (OSError, ValueError) as err:
        raise UserError(f"manifest {manifest} is unreadable ({one_line(err)}): {remedy}, or "
                        "delete the manifest to load the files unverified")
    want = entries.get(os.path.basename(path))
    if want is None:
        raise UserError(f"{path} is not one of the files {manifest} lists (a file of another "
                        f"save or format): {remedy}, or delete the manifest to load the files "
                        "unverified")
    size, sha = size_and_sha256(path)
    if (size, sha) != want:
        what = f"{size} bytes, manifest says {want[0]}" if size != want[0] else "sha256 differs"
        raise UserError(f"{path} does not match {manifest} ({what}): the save was interrupted "
                        f"between its files, or the file was changed; {remedy}")


def load_state_file(path, what, hint=""):
    """The state dict in ``path`` (a .pdparams / .pdopt), read as
    ``paddle.load`` would but without running code from the file
    (utils/base/safe_pickle.py), or a one-line UserError naming ``what`` it
    is, the path and ``hint`` (how to get a good one). Every load of weights
    or training state in the project comes through here."""
    hint = f" ({hint})" if hint else ""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} not found{hint}")
    verify_against_manifest(path)
    try:
        state = load_paddle_file(path)
    except RefusedPickle as refused:
        raise UserError(f"{what} {path} refused: {refused}: use weights saved by paddle.save "
                        "of a state dict") from None
    except Exception as err:  # not a pickle, truncated, …: bad input
        raise UserError(f"{what} {path} is unreadable ({one_line(err)}){hint}")
    if not isinstance(state, dict):
        raise UserError(f"{what} {path} is not a state dict{hint}")
    return state


WEIGHT_DTYPES = ("float32",)   # what the layers hold
CONVERTED_DTYPES = ("float64",)  # converted to float32 on load (numpy's default float)


def checked_weight(path, key, value):
    """``value`` (a tensor or array) as a float32 array, or a one-line
    UserError: another dtype than float32/float64, or a NaN/inf (weights
    of a diverged run would be evaluated and searched without a word)."""
    array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    dtype = str(array.dtype)
    if dtype not in WEIGHT_DTYPES + CONVERTED_DTYPES:
        raise UserError(f"{path}: {key} is {dtype}, expected float32 (float64 is converted): "
                        "not weights of this model, or convert them to float32")
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        raise UserError(f"{path}: {key} has {array.size - int(finite.sum())} NaN/inf value(s) of "
                        f"{array.size}: the run that saved it diverged; use another checkpoint "
                        "(e.g. an earlier model_best_*)")
    return array


def checked_weights(path, state, expected):
    """{key: float32 array} of ``state``'s entries named in ``expected``
    {key: shape}, each checked by ``checked_weight`` and for its shape."""
    out = {}
    for key, shape in expected.items():
        got = list(state[key].shape)
        if got != list(shape):
            raise UserError(f"{path}: {key} has shape {got}, expected {list(shape)}")
        out[key] = checked_weight(path, key, state[key])
    return out


def strip_params_suffix(prefix):
    """Checkpoint flags take the path without ``.pdparams``; accept it with, too."""
    return prefix[: -len(".pdparams")] if prefix.endswith(".pdparams") else prefix


def read_params(prefix):
    """``(path, state)`` of ``<prefix>.pdparams``."""
    path = strip_params_suffix(prefix) + ".pdparams"
    return path, load_state_file(path, "checkpoint", "--pretrained/--resume take the path "
                                                     "without .pdparams")


def hash_weight_key(model):
    """The state-dict key of ``model.hash_layer``'s weight (for AlexNet the
    reference's ``classifier_plus.6.weight``), whose last dimension is the
    bit length."""
    names = {id(p): k for k, p in model.named_parameters()}
    return names[id(model.hash_layer.weight)]


def load_weights(model, prefix, identify=None):
    """Load HashNet weights, refusing a file of another bit length or another
    model; ``identify(keys)`` names the arch of a file whose manifest does not
    (models.arch_of_state)."""
    path, state = read_params(prefix)
    own = model.state_dict()
    if any(k not in state for k in own):
        raise wrong_arch_error(path, state, model, identify)
    hash_key = hash_weight_key(model)
    bit = list(state[hash_key].shape)[-1]
    if bit != own[hash_key].shape[-1]:
        raise UserError(f"{path} holds {bit}-bit weights but --bit is {own[hash_key].shape[-1]}")
    model.set_state_dict(checked_weights(path, state, {k: v.shape for k, v in own.items()}))


def load_training_state(prefix, model, optimizer, check=None):
    """Restore the optimizer from ``<prefix>.pdopt``; return the training
    state dict saved with it ({} for a reference-format file, whose optimizer
    keys are the reference process's parameter names). ``check(training)``
    may refuse the checkpoint before the optimizer is touched."""
    saved = load_state_file(prefix + ".pdopt", "optimizer state",
                            "--resume needs both .pdparams and .pdopt")
    if isinstance(saved, dict) and "optimizer" in saved and "training" in saved:
        if check is not None:
            check(saved["training"])
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
