"""Image files with a given shape on disk."""
from PIL import Image


def strip(tmp_path, height, name="strip.png"):
    """A 1-pixel-wide PNG: tiny on disk, enormous once its short side is resized."""
    path = str(tmp_path / name)
    Image.new("L", (1, height), 128).save(path)
    return path
