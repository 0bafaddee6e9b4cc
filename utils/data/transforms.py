"""Image transforms of the reference recipe (spec §4): resize the short side,
crop (random in training, centre at test), flip, ImageNet normalisation.

The decoded-image cache (utils/data/image_cache.py) replays the same crop and
flip draws on cached pixels, so both paths give bit-identical tensors.
"""
import numpy as np
from PIL import Image

from utils.base.errors import UserError
from utils.data.images import open_rgb, short_side_size  # noqa: F401  (short_side_size: re-exported)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resize_short(img, size):
    """Resize so the short side is `size` (torchvision's Resize(int))."""
    return img.resize(short_side_size(*img.size, size), Image.BILINEAR)


def crop_origin(w, h, size, rng=None):
    """(left, top) of a size x size crop of a w x h image: drawn from `rng`
    (left first, then top) when one is given, else the centre."""
    if w < size or h < size:
        raise UserError(f"image of {w}x{h} px is smaller than crop {size} (check --crop_size/--resize_size)")
    if rng is None:
        return round((w - size) / 2), round((h - size) / 2)
    return int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))


def crop(img, size, rng=None):
    """Random crop when an rng is given, else the centre crop."""
    left, top = crop_origin(*img.size, size, rng)
    return img.crop((left, top, left + size, top + size))


def normalize(pixels):
    """Pixels in [0, 1], [..., H, W, 3] -> [..., 3, H, W] float32 normalised
    with ImageNet mean/std (what the backbone's ImageNet weights expect)."""
    x = (np.asarray(pixels, dtype=np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    return np.moveaxis(x, -1, -3).copy()


def to_normalized_array(img):
    """PIL RGB -> [3, H, W] float32, normalised."""
    return normalize(np.asarray(img, dtype=np.float32) / 255.0)


def train_transform(img, resize_size, crop_size, rng):
    img = crop(resize_short(img, resize_size), crop_size, rng)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return to_normalized_array(img)


def test_transform(img, resize_size, crop_size):
    return to_normalized_array(crop(resize_short(img, resize_size), crop_size))


def load_query_image(path, resize_size, crop_size, upright=True, pipeline=None):
    """One image file through the test transform (``pipeline``'s, when one is
    given: utils/data/caffe_pipeline.py), as a [1, 3, S, S] float32 batch;
    ``upright``: turned by its EXIF orientation (a phone photo)."""
    img = open_rgb(path, upright, resize_size)
    if pipeline is not None:
        return pipeline.test(img, resize_size, crop_size)[None]
    return test_transform(img, resize_size, crop_size)[None]


def load_rgb(path, resize_size=None):
    """A dataset image as 8-bit RGB, EXIF orientation ignored as the reference
    does (utils/data/images.py: every mode); a bad file, or one too large
    after the resize to ``resize_size``, is a UserError."""
    return open_rgb(path, resize_size=resize_size)
