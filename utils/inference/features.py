"""The backbone's features of a data set: the input of the hash layer
(AlexNet's fc7 after its ReLU, ResNet50's pooled 2048-d...), what the
shallow hashing baselines (utils/methods/shallow/) learn from.

They are the features of the *pretrained* backbone, the weights every deep
method starts from (``--backbone``), computed in eval mode (no dropout) on
the test transform (resize, centre crop) for every split, the training one
included. A data set's features do not depend on the bit length, so they
are computed once and cached: ``<cache dir>/features_<split>.npz`` holds
``features`` float32 [n, d], ``labels`` uint8 [n, C] and a ``fingerprint``
(JSON) of what produced them; a cache whose fingerprint differs from the
current one is rebuilt, with a line saying why.
"""
import json
import os
import zipfile

import numpy as np
import paddle

from models.backbone import backbone_path
from utils.base.fingerprint import CacheError, check_fingerprint, sha256_file
from utils.base.io import atomic_write
from utils.data.loaders import build_datasets, build_loader

FORMAT = 1
CHANGES = {  # fingerprint key -> what a difference means
    "format": "the cache format changed",
    "arch": "--arch changed",
    "backbone": "the backbone weights changed",
    "list_sha256": "the list changed",
    "data_path": "--data-path changed",
    "crop_size": "--crop_size changed",
    "resize_size": "--resize_size changed",
    "pipeline": "the input pipeline changed",
    "paddle": "the Paddle version changed",
    "device": "the device changed (CPU/GPU)",
}


def hash_layer_inputs(model, loader):
    """(features float32 [n, d], labels [n, C]) of every image of
    ``loader``, in its order: what ``model`` feeds its hash layer, eval mode."""
    captured = []
    hook = model.hash_layer.register_forward_pre_hook(
        lambda layer, inputs: captured.append(inputs[0].numpy()))
    labels = []
    model.eval()
    try:
        with paddle.no_grad():
            for x, y, _ in loader:
                model(x)
                labels.append(y.numpy())
    finally:
        hook.remove()
    return np.concatenate(captured).astype(np.float32), np.concatenate(labels)


def features_fingerprint(model, backbone, data, split):
    """What determines the features of ``split``: the arch, its backbone
    weights (a file's sha256; ``random`` with the seed that drew them), the
    list, the data root, the transform and the kernels (Paddle, device)."""
    path = backbone_path(model, backbone)
    weights = sha256_file(path) if path else f"random, seed {data.seed}"
    list_file = os.path.join(data.list_dir, f"{split}.txt")
    return {"format": FORMAT, "arch": model.arch, "backbone": weights,
            "list_sha256": sha256_file(list_file) if os.path.isfile(list_file) else data.dataset,
            "data_path": os.path.realpath(data.data_path), "crop_size": data.crop_size,
            "resize_size": data.resize_size, "pipeline": data.pipeline,
            "paddle": paddle.__version__, "device": paddle.get_device().split(":")[0]}


def read_cache(path, fingerprint):
    """(features, labels) of a cache made with ``fingerprint``; CacheError
    if unreadable, StaleCache if made from other inputs."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            features, labels = saved["features"], saved["labels"].astype(np.float32)
            made_with = json.loads(str(saved["fingerprint"][()]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CacheError(f"{type(err).__name__}: {err}") from None
    check_fingerprint(made_with, fingerprint, CHANGES)
    return features, labels


def write_cache(path, features, labels, fingerprint):
    def save(tmp):
        with open(tmp, "wb") as f:   # a file object: np.savez would add ".npz" to a name
            np.savez(f, features=features, labels=np.asarray(labels > 0, dtype=np.uint8),
                     fingerprint=np.array(json.dumps(fingerprint, sort_keys=True)))
    atomic_write(path, save)


def backbone_features(model, backbone, data, splits, cache_dir, batch_size, log=print):
    """{split: (features, labels)} of ``data`` (DataSettings) through
    ``model``, whose backbone weights are ``backbone`` (as ``--backbone``
    names them: already loaded into it), read from ``cache_dir`` where a
    matching cache exists, else computed and cached there."""
    found, missing = {}, []
    for split in splits:
        path = os.path.join(cache_dir, f"features_{split}.npz")
        fingerprint = features_fingerprint(model, backbone, data, split)
        if not os.path.isfile(path):
            missing.append((split, path, fingerprint))
            continue
        try:
            found[split] = read_cache(path, fingerprint)
            log(f"features of {split}: {path} (cached, {found[split][0].shape})")
        except CacheError as err:   # StaleCache included
            log(f"features of {split}: rebuilding {path} ({err})")
            missing.append((split, path, fingerprint))
    if missing:
        datasets = build_datasets(data, [split for split, _, _ in missing], augment=False)
        for split, path, fingerprint in missing:
            loader = build_loader(datasets[split], batch_size, shuffle=False)
            found[split] = hash_layer_inputs(model, loader)
            write_cache(path, *found[split], fingerprint)
            log(f"features of {split}: {found[split][0].shape} computed, saved to {path}")
    return found
