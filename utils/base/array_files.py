"""Reading the .npy / .npz files of the caches, never more than they hold.

``numpy.load`` allocates the shape an array's header declares before it
reads the data: a file of a few bytes can declare terabytes. The code
cache, the image cache's index and the exact index read theirs through
here instead: each array's header must declare no more bytes than the file
(or the zip member) holds after it, the members of a .npz must be stored
uncompressed (np.savez's way: a compressed member could inflate beyond its
file), and nothing is unpickled. Anything else is a ValueError, which the
caches treat as a corrupt file to rebuild; OSError as numpy raises it.
"""
import io
import math
import zipfile

import numpy as np
from numpy.lib import format as npy_format

HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0,
                  (2, 0): npy_format.read_array_header_2_0}


def check_npy_header(file, size):
    """Read the .npy header at the start of ``file`` (``size`` bytes in
    all); ValueError unless it declares a plain array of at most the bytes
    that follow it."""
    version = npy_format.read_magic(file)
    if version not in HEADER_READERS:
        raise ValueError(f".npy format version {version} is not one np.save writes here")
    shape, _, dtype = HEADER_READERS[version](file)
    if dtype.hasobject:
        raise ValueError("an array of Python objects")
    declared = math.prod(shape) * dtype.itemsize
    held = size - file.tell()
    if declared > held:
        raise ValueError(f"an array of shape {list(shape)} {dtype} ({declared:,} bytes) in "
                         f"{held:,} bytes")


def load_npy(path):
    """The array of an .npy file, its header checked first."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        check_npy_header(f, size)
        f.seek(0)
        return np.load(f, allow_pickle=False)


def load_npz(source):
    """{name: array} of an .npz (a path, or its bytes), every member's
    header checked first and every array read."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f"{info.filename} is compressed (np.savez stores members)")
                with archive.open(info) as member:
                    check_npy_header(member, info.file_size)
        if hasattr(source, "seek"):
            source.seek(0)
        with np.load(source, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as err:
        raise ValueError(f"not an .npz file ({type(err).__name__}: {err})") from None
