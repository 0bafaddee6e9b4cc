"""utils/data/caffe_pipeline.py against a numpy transcription of what Caffe
does to an image: ImageDataLayer's squash (OpenCV's ``cv::resize`` at
INTER_LINEAR on the 8-bit image) and DataTransformer's crop, mirror and mean,
on photo-like inputs, shrinking and enlarging. The transcription uses no
OpenCV: it is written from the two algorithms, so it checks the pipeline's
use of cv2 as much as its crop arithmetic."""
import numpy as np
import pytest
from PIL import Image

from utils.data.caffe_pipeline import CaffePipeline, centre_offset

# float32 Paddle (or OpenCV) kernels against a numpy reference: run again on
# other kernels by .ci/run
pytestmark = pytest.mark.float_sensitive

# OpenCV resizes 8-bit images with 11-bit fixed-point weights and rounds once
# at the end; the float transcription rounds the exact value: the pixels
# differ by at most 1 on the 0-255 scale. Caffe (Dtype float) and the
# pipeline then subtract the mean in float32, each rounding once more (half
# an ulp of a value below 256 each).
EIGHT_BIT_ROUNDING = 1.0 + float(np.spacing(np.float32(256)))


def linear_taps(src, dst):
    """OpenCV INTER_LINEAR along one axis: for each output index, the two
    source indices and the weight of the second. Half-pixel centres,
    fx = (d + 0.5) * src / dst - 0.5, clamped at the borders; one tap pair
    per output whatever the scale, so no anti-aliasing when shrinking."""
    f = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    lo = np.floor(f).astype(int)
    frac = f - lo
    frac[lo < 0], lo[lo < 0] = 0.0, 0
    at_end = lo >= src - 1
    frac[at_end], lo[at_end] = 0.0, src - 1
    return lo, np.minimum(lo + 1, src - 1), frac


def cv_resize_linear(pixels, height, width):
    """[H, W, C] uint8 -> [height, width, C] uint8, as cv::resize INTER_LINEAR."""
    y0, y1, fy = linear_taps(pixels.shape[0], height)
    x0, x1, fx = linear_taps(pixels.shape[1], width)
    p = pixels.astype(np.float64)
    rows = p[y0] * (1 - fy)[:, None, None] + p[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def caffe_transform(rgb, side, crop_size, mean, h_off=None, w_off=None, mirror=False):
    """ImageDataLayer (new_height = new_width = side) then DataTransformer::
    Transform on a BGR cv::Mat: out[c, h, w'] = pixel[h_off + h, w_off + w, c]
    - mean[c, h_off + h, w_off + w], with w' = crop - 1 - w when mirrored;
    no offsets given: the TEST phase's (img - crop) / 2 in integers. ``mean``
    is [3, side, side] (mean_file) or [3] (predict script's channel mean)."""
    bgr = cv_resize_linear(rgb, side, side)[:, :, ::-1].astype(np.float32)
    if h_off is None:
        h_off = w_off = int((side - crop_size) / 2)   # C++ int division of non-negatives
    mean = np.asarray(mean, np.float32)
    if mean.ndim == 1:
        mean = np.broadcast_to(mean[:, None, None], (3, side, side))
    h = np.arange(crop_size)[:, None]                     # the loops over h, w of Transform
    w = np.arange(crop_size)[None, :]
    top_w = crop_size - 1 - w if mirror else w
    out = np.empty((3, crop_size, crop_size), np.float32)
    for c in range(3):
        out[c, h, top_w] = bgr[h_off + h, w_off + w, c] - mean[c, h_off + h, w_off + w]
    return out


def photo_like(height, width, seed):
    """Smooth light, shapes with hard edges and fine texture: a photo's mix
    of what resampling treats differently (flat areas, edges, aliasing)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([60 + 120 * x, 80 + 100 * y, 150 - 90 * x * y], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.random() * height, rng.random() * width, 5 + rng.random() * height / 4
        disc = (np.mgrid[0:height, 0:width][0] - cy) ** 2 + (np.mgrid[0:height, 0:width][1] - cx) ** 2
        img[disc < r * r] = rng.integers(0, 256, 3)
    img += 25 * np.sin(2 * np.pi * (x * width / 3.1))[..., None]   # stripes near the pixel pitch
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# (source height, width) -> squashed side: shrinking (unequal factors, one
# above 2x), enlarging, and the sizes whose truncating centre offset differs
# from a rounding one (258 -> 227 and 255 -> 224: 15, not 16)
CASES = [((480, 640), 256, 227), ((375, 500), 256, 227), ((90, 120), 256, 227),
         ((300, 200), 258, 227), ((200, 260), 255, 224), ((64, 48), 40, 32)]


@pytest.fixture(scope="module")
def mean_image():
    return np.random.default_rng(7).random((3, 64, 64), dtype=np.float32) * 255


@pytest.mark.parametrize("shape,side,crop", CASES)
def test_test_transform_is_caffes(shape, side, crop):
    rgb = photo_like(*shape, seed=side + crop)
    channel_mean = np.array([104.0, 117.0, 123.0], np.float32)
    got = CaffePipeline(np.broadcast_to(channel_mean[:, None, None], (3, side, side))).test(
        Image.fromarray(rgb), side, crop)
    want = caffe_transform(rgb, side, crop, channel_mean)
    assert got.shape == want.shape == (3, crop, crop)
    assert np.abs(got - want).max() <= EIGHT_BIT_ROUNDING


@pytest.mark.parametrize("shape,side,crop", CASES[:3])
def test_train_transform_is_caffes(shape, side, crop, mean_image):
    """Random crop and mirror with the pipeline's draws (left, top, then the
    mirror coin); the mean image, resampled to the squash, is subtracted at
    the crop's place before mirroring."""
    from utils.data.caffe_pipeline import resample_mean
    rgb = photo_like(*shape, seed=side)
    pipe = CaffePipeline(mean_image)
    mean = resample_mean(mean_image, side)
    for seed in range(4):
        draw = np.random.default_rng(seed)
        w_off, h_off = int(draw.integers(0, side - crop + 1)), int(draw.integers(0, side - crop + 1))
        mirror = draw.random() < 0.5
        got = pipe.train(Image.fromarray(rgb), side, crop, np.random.default_rng(seed))
        want = caffe_transform(rgb, side, crop, mean, h_off, w_off, mirror)
        assert np.abs(got - want).max() <= EIGHT_BIT_ROUNDING, (seed, mirror)


def test_the_check_tells_a_resize_that_anti_aliases():
    """PIL's BILINEAR (a filter wider than two taps when shrinking) is far
    from Caffe's squash on the same photo: the bound above can fail."""
    rgb = photo_like(480, 640, seed=1)
    pil = np.asarray(Image.fromarray(rgb).resize((256, 256), Image.BILINEAR), np.float64)
    assert np.abs(pil - cv_resize_linear(rgb, 256, 256)).max() > 10 * EIGHT_BIT_ROUNDING


def test_centre_offset_truncates():
    assert [centre_offset(s, c) for s, c in [(256, 227), (258, 227), (255, 224), (224, 224)]] \
        == [14, 15, 15, 0]
