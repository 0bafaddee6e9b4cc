"""``--backbone imagenet``: each arch's ImageNet weights, fetched once and
converted to the arch's keys once.

* alexnet, vgg16, resnet50: paddle.vision's weights through Paddle's own
  downloader (``get_path_from_url`` checks the md5 paddle.vision records in
  its ``model_urls`` and caches in ``paddle.utils.download.WEIGHTS_HOME``,
  ~/.cache/paddle/hapi/weights);
* caffenet: BVLC's bvlc_reference_caffenet.caffemodel from the Caffe model
  zoo through the project's downloader (utils/base/download.py), checked
  against the sha1 the model zoo publishes, into the same folder.
The converted file is written beside the download, named after its checksum
(AlexNet: ``alexnet.hashnet-<md5[:8]>.pdparams``), and reused.
``HASHNET_DOWNLOAD_BASE`` / ``HASHNET_CHECKSUMS`` (utils/base/download.py) point
the URL and checksum at a local server, as for every other download.
"""
import os

from models.registry import DEFAULT_ARCH
from utils.base.download import Remote, fetch, mirrored, through_paddle

IMAGENET = "imagenet"
CAFFENET_REMOTE = Remote("http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",
                         "sha1:4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46")


def paddle_vision_remote(arch=DEFAULT_ARCH):
    import importlib
    module = "resnet" if arch.startswith("resnet") else arch.rstrip("0123456789")
    url, md5 = importlib.import_module(f"paddle.vision.models.{module}").model_urls[arch]
    return Remote(url, f"md5:{md5}")


def cached_paths(remote):
    """(where the download is cached, where the converted file goes)."""
    from paddle.utils import download
    digest = mirrored(remote).checksum.split(":", 1)[1]
    name = os.path.basename(remote.url)
    converted = f"{os.path.splitext(name)[0]}.hashnet-{digest[:8]}.pdparams"
    return os.path.join(download.WEIGHTS_HOME, name), os.path.join(download.WEIGHTS_HOME, converted)


def fetch_weights(remote):
    """Paddle's cached, md5-checked download of ``remote``; DownloadFailed with
    nothing left behind when it gives up."""
    from paddle.utils import download
    cached, _ = cached_paths(remote)
    return through_paddle(lambda url, md5: download.get_path_from_url(
        url, download.WEIGHTS_HOME, md5, decompress=False), remote, cached)


def fetch_caffemodel(remote):
    return fetch(remote, cached_paths(remote)[0])


def convert_paddle_vision(arch):
    """paddle.vision's ``arch`` file -> the arch's backbone state (models/convert.py)."""
    def convert_file(path):
        from models.convert import BACKBONES, read_state
        return BACKBONES[arch](read_state(path))
    return convert_file


def convert_caffenet(path):
    from models.caffe_convert import convert_caffemodel
    return convert_caffemodel(path)


# arch -> (its Remote, how to fetch it, how to convert it)
SOURCES = {
    "alexnet": (lambda: paddle_vision_remote("alexnet"), fetch_weights,
                convert_paddle_vision("alexnet")),
    "vgg16": (lambda: paddle_vision_remote("vgg16"), fetch_weights, convert_paddle_vision("vgg16")),
    "resnet50": (lambda: paddle_vision_remote("resnet50"), fetch_weights,
                 convert_paddle_vision("resnet50")),
    "caffenet": (lambda: CAFFENET_REMOTE, fetch_caffemodel, convert_caffenet),
}


def imagenet_backbone(arch=DEFAULT_ARCH):
    """Path of the converted ImageNet backbone of ``arch``, fetching and
    converting it on first use."""
    remote_of, fetch_source, convert = SOURCES[arch]
    remote = remote_of()
    _, converted = cached_paths(remote)
    if os.path.exists(converted):
        return converted
    state = convert(fetch_source(remote))
    import paddle
    from utils.base.io import atomic_save
    atomic_save({k: paddle.to_tensor(v) for k, v in state.items()}, converted)
    return converted
