"""Image files -> 8-bit RGB, for training, evaluation, predict.py and infer.py.

One reader, so a query photo and a dataset image of the same mode become the
same pixels. What each mode Pillow opens becomes (docs/data.md "Images" has this
table too):

    RGB                          as decoded (an RGB JPEG is bit-identical to
                                 the reference's ``img.convert("RGB")``)
    1, L, P, CMYK, YCbCr, LAB,   Pillow's conversion to RGB (grey replicated,
    HSV, RGBX                    palette looked up, CMYK/LAB/HSV converted)
    RGBA, LA, PA, P with         composited on a WHITE background (what a
    transparency, RGBa, La       viewer shows on a white page); the alpha is
                                 then dropped
    I;16, I;16L, I;16B, I;16N    16-bit grey: round(value / 257), as image
                                 viewers scale 0..65535 to 0..255
    I (32-bit integer)           values within 0..65535 (how Pillow opens
                                 many 16-bit PNG/TIFF files) scale like I;16;
                                 any other range is stretched min..max to 0..255
    F (32-bit float)             values within [0, 1] are scaled by 255 (the
                                 float-image convention); any other range is
                                 stretched min..max to 0..255; NaN/inf -> 0
    anything else                a one-line error naming the file and mode

Multi-frame files (GIF, TIFF) give their first frame. EXIF orientation is
ignored unless ``upright`` (dataset lists keep the authors' and the
reference's behaviour, so COCO numbers stay comparable; a query photo is
turned upright by default, see deploy/cli.py --ignore-exif-orientation).

A directory, an empty file, a truncated or corrupt file, or one over the
pixel limit is a UserError naming the file, which ``--skip-bad-images``
turns into a logged skip. The pixel limit replaces Pillow's
DecompressionBombError (a traceback) by a check of the header's size before
any pixel is decoded.
"""
import os

import numpy as np
from PIL import Image, ImageOps

from utils.base.errors import UserError

# 2 x Pillow's warning limit, i.e. where Pillow itself would refuse: about
# 179 Mpx (13,000 x 13,000), ~540 MB as RGB. No photo dataset comes near it.
DEFAULT_MAX_PIXELS = 2 * 89_478_485
max_pixels = DEFAULT_MAX_PIXELS
# Our check of the header's size (check_pixels) replaces Pillow's, which
# raises a DecompressionBombError traceback above 2x its limit and only warns
# between 1x and 2x.
Image.MAX_IMAGE_PIXELS = None

WHITE = (255, 255, 255, 255)
CONVERTED = {"1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
WITH_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}


def set_max_pixels(limit):
    """Largest width x height any image may have (the --max-image-pixels flag).
    A module setting, so DataLoader worker processes forked later inherit it."""
    global max_pixels
    max_pixels = int(limit)


def open_rgb(path, upright=False, resize_size=None):
    """Read ``path`` as an 8-bit RGB PIL image (see the table above); any
    problem with the file is a one-line UserError naming it. With
    ``resize_size``, the size it will have after the resize of its short side
    to that is checked too, before anything is decoded."""
    check_is_file(path)
    try:
        with Image.open(path) as img:
            check_pixels(path, *img.size, resize_size)
            img.load()   # decode now: a truncated file fails here, inside the try
            if upright:
                img = ImageOps.exif_transpose(img)
            return to_rgb(img, path)
    except UserError:
        raise
    except Exception as err:  # Pillow's decoders raise OSError, SyntaxError, EOFError,
        # struct.error … on bad data: all mean this file cannot be used
        raise UserError(f"image {path} is unreadable or corrupt ({err})")


def check_is_file(path):
    if os.path.isdir(path):
        raise UserError(f"image {path} is a directory, not an image file")
    if not os.path.exists(path):
        raise UserError(f"image {path} not found (check --data-path)")
    if os.path.getsize(path) == 0:
        raise UserError(f"image {path} is empty (0 bytes)")


def short_side_size(w, h, size):
    """(width, height) of a w x h image resized to `size` on its short side."""
    if w <= h:  # the long side is truncated, as torchvision and paddle.vision do
        return size, max(1, int(size * h / w))
    return max(1, int(size * w / h)), size


def check_pixels(path, w, h, resize_size=None):
    """Refuse a w x h image over the pixel limit, on disk or after the resize
    of its short side to ``resize_size``: a 1 x 1,000,000 px strip is tiny as
    a file but 72 x 72,000,000 px once resized (a memory bomb)."""
    sizes = [(w, h, "")]
    if resize_size:
        rw, rh = short_side_size(w, h, resize_size)
        sizes.append((rw, rh, f"{w}x{h} px, resized to "))
    for width, height, before in sizes:
        if max_pixels and width * height > max_pixels:
            raise UserError(f"image {path} is {before}{width}x{height} = {width * height:,} pixels, "
                            f"over the limit of {max_pixels:,} (pass a larger "
                            "--max-image-pixels if it is genuine)")


def to_rgb(img, path):
    mode = img.mode
    if mode == "RGB":
        return img.convert("RGB")   # a copy, as the reference's pipeline makes
    if mode in CONVERTED and not (mode == "P" and "transparency" in img.info):
        return img.convert("RGB")
    if mode in WITH_ALPHA or mode == "P":
        # Pillow has no La -> RGBA conversion; La (premultiplied) -> LA first.
        rgba = (img.convert("LA") if mode == "La" else img).convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", img.size, WHITE), rgba).convert("RGB")
    if mode.startswith("I;16"):
        return grey_to_rgb(np.rint(np.asarray(img, dtype=np.float64) / 257.0))
    if mode == "I":
        return grey_to_rgb(scale_integer(np.asarray(img, dtype=np.float64)))
    if mode == "F":
        return grey_to_rgb(scale_float(np.asarray(img, dtype=np.float64)))
    raise UserError(f"image {path} has Pillow mode {mode!r}, which this reader does not "
                    "convert: save it as 8-bit RGB (e.g. PNG or JPEG)")


def scale_integer(values):
    """32-bit integer grey -> 0..255 (rule in the module docstring)."""
    if values.size and values.min() >= 0 and values.max() <= 65535:
        return np.rint(values / 257.0)
    return stretch(values)


def scale_float(values):
    """Float grey -> 0..255 (rule in the module docstring)."""
    values = np.where(np.isfinite(values), values, 0.0)
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        return np.rint(values * 255.0)
    return stretch(values)


def stretch(values):
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros_like(values)
    return np.rint((values - low) * (255.0 / (high - low)))


def grey_to_rgb(values):
    """[H, W] values already in 0..255 -> RGB (grey in all three channels)."""
    grey = np.clip(values, 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
