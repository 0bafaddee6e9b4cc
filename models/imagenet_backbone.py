"""``--backbone imagenet``: paddle.vision's ImageNet AlexNet, fetched with
Paddle's own downloader and converted to the HashNet layout once.

Paddle's ``get_path_from_url`` checks the file's md5 against the value
paddle.vision records (``paddle.vision.models.alexnet.model_urls``) and caches
it in ``paddle.utils.download.WEIGHTS_HOME`` (~/.cache/paddle/hapi/weights);
the converted file is written beside it, named after that md5, and reused.
``HASHNET_DOWNLOAD_BASE`` / ``HASHNET_CHECKSUMS`` (utils/base/download.py) point
the URL and md5 at a local server, as for every other download.
"""
import os

from utils.base.download import Remote, mirrored, through_paddle

IMAGENET = "imagenet"


def paddle_vision_remote():
    from paddle.vision.models.alexnet import model_urls
    url, md5 = model_urls["alexnet"]
    return Remote(url, f"md5:{md5}")


def cached_paths(remote):
    """(where Paddle caches the download, where the converted file goes)."""
    from paddle.utils import download
    md5 = mirrored(remote).checksum.split(":", 1)[1]
    name = os.path.basename(remote.url)
    converted = f"{os.path.splitext(name)[0]}.hashnet-{md5[:8]}.pdparams"
    return os.path.join(download.WEIGHTS_HOME, name), os.path.join(download.WEIGHTS_HOME, converted)


def fetch_weights(remote):
    """Paddle's cached, md5-checked download of ``remote``; DownloadFailed with
    nothing left behind when it gives up."""
    from paddle.utils import download
    cached, _ = cached_paths(remote)
    return through_paddle(lambda url, md5: download.get_path_from_url(
        url, download.WEIGHTS_HOME, md5, decompress=False), remote, cached)


def imagenet_backbone():
    """Path of the converted ImageNet backbone, fetching and converting it on first use."""
    remote = paddle_vision_remote()
    _, converted = cached_paths(remote)
    if os.path.exists(converted):
        return converted
    source = fetch_weights(remote)
    import paddle
    from models.convert import convert, read_state
    from utils.base.io import atomic_save
    state = convert(read_state(source))
    atomic_save({k: paddle.to_tensor(v) for k, v in state.items()}, converted)
    return converted
