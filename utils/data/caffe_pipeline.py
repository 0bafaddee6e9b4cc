"""``--input_pipeline caffe``: the inputs the authors' CaffeNet saw.

Training (their train_val.prototxt ImageData + transform_param): the image
squashed to resize x resize (new_height = new_width = 256), a random crop
(227), a random mirror, BGR 0–255 minus the ImageNet mean image at the crop's
place. Test (their predict_parallel.py, caffe.Classifier with image_dims 256
and oversample=False): squashed, centre crop, minus the per-channel mean.
The squash is Caffe's: OpenCV's ``cv::resize`` at INTER_LINEAR on the 8-bit
image (half-pixel centres, no anti-aliasing when shrinking), and the centre
crop's offset truncates, (side - crop) / 2 in integers, as DataTransformer's.
The mean image is ``imagenet_mean.binaryproto`` from the authors' repo at the
pinned commit, checked by its git blob id like the lists (scripts/get_data.py);
a mean of another size than the squash is resampled to it.
"""
import os

import numpy as np

from utils.base.caffe_proto import read_mean_file
from utils.base.download import DownloadFailed, Remote, fetch
from utils.base.errors import UserError
from utils.data.transforms import crop_origin

AUTHORS_COMMIT = "85387b814fcf95daff887bd325cbaa0e8def7323"   # scripts/get_data.py's
MEAN_REMOTE = Remote(f"https://raw.githubusercontent.com/thuml/HashNet/{AUTHORS_COMMIT}/"
                     "caffe/data/ilsvrc12/imagenet_mean.binaryproto",
                     "git-blob-sha1:af410dfe81e4446c27c1c9e4a4d57339c5c8fb68")
PIPELINES = ("auto", "reference", "caffe")


def resolve_pipeline(pipeline, arch):
    """``auto``: the Caffe pipeline for --arch caffenet (its BVLC weights
    expect BGR 0–255 minus the mean, in either recipe), else the reference's."""
    if pipeline == "auto":
        return "caffe" if arch == "caffenet" else "reference"
    return pipeline


def mean_file_path():
    from paddle.utils import download
    return os.path.join(download.WEIGHTS_HOME, "imagenet_mean.binaryproto")


def imagenet_mean():
    """The [3, H, W] BGR mean image, fetched once."""
    try:
        path = fetch(MEAN_REMOTE, mean_file_path())
    except DownloadFailed as err:
        raise UserError(f"could not download the ImageNet mean of --input_pipeline caffe: {err}")
    return read_mean_file(path)


def squash(pixels, size):
    """[H, W, C] -> [size, size, C], ignoring the aspect ratio (Caffe's
    new_height/new_width), with Caffe's own resize: OpenCV's INTER_LINEAR."""
    import cv2
    return cv2.resize(np.ascontiguousarray(pixels), (size, size),
                      interpolation=cv2.INTER_LINEAR).reshape(size, size, -1)


def bgr_255(img, size):
    """PIL RGB, squashed to size x size -> [3, size, size] float32 BGR in 0–255."""
    rgb = squash(np.asarray(img, dtype=np.uint8), size)
    return rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)


def centre_offset(side, crop_size):
    """DataTransformer's test-phase offset: (side - crop) / 2 in C++ integers."""
    return (side - crop_size) // 2


def resample_mean(mean, size):
    """A mean image of another size than the squash, squashed like the images."""
    if mean.shape[1:] == (size, size):
        return mean
    return squash(mean.astype(np.float32).transpose(1, 2, 0), size).transpose(2, 0, 1)


class CaffePipeline:
    """The train and test transforms of the Caffe pipeline, with one mean image."""

    def __init__(self, mean_image):
        self.mean_image = np.asarray(mean_image, np.float32)            # [3, H, W] BGR
        self.channel_mean = self.mean_image.mean(axis=(1, 2))[:, None, None]

    def train(self, img, resize_size, crop_size, rng):
        """Crop origin then mirror, drawn in the reference transform's order;
        Caffe subtracts the mean at the crop's place, then mirrors."""
        left, top = crop_origin(resize_size, resize_size, crop_size, rng)
        window = (slice(None), slice(top, top + crop_size), slice(left, left + crop_size))
        x = bgr_255(img, resize_size)[window] - resample_mean(self.mean_image, resize_size)[window]
        if rng.random() < 0.5:
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x)

    def test(self, img, resize_size, crop_size):
        offset = centre_offset(resize_size, crop_size)
        window = slice(offset, offset + crop_size)
        x = bgr_255(img, resize_size)[:, window, window]
        return np.ascontiguousarray(x - self.channel_mean)


def build_pipeline(name):
    """None for the reference transforms (utils/data/transforms.py), else the Caffe pipeline."""
    return CaffePipeline(imagenet_mean()) if name == "caffe" else None
