"""Model -> binary codes of a whole data set, shared by training's
evaluation (utils/engine.py) and predict.py."""
import sys

import numpy as np
import paddle
from tqdm import tqdm

from models.hashnet import sign_codes


@paddle.no_grad()
def encode_dataset(model, loader, desc="encoding"):
    """Codes sign(z) (int8 ±1 [n, bit]), labels [n, C] and dataset indices [n]
    of every batch of ``loader``, in loader order, with the model in eval mode
    (no dropout). In one process that is dataset order."""
    model.eval()
    codes, labels, indices = [], [], []
    for x, y, ind in tqdm(loader, desc=desc, leave=False, disable=not sys.stderr.isatty()):
        codes.append(sign_codes(model(x)))
        labels.append(y.numpy())
        indices.append(ind.numpy())
    return np.concatenate(codes), np.concatenate(labels), np.concatenate(indices)
