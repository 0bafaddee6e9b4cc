"""utils/data/images.py: every image mode Pillow opens becomes the right
8-bit RGB, RGB JPEGs stay bit-identical, EXIF orientation is applied to
queries only, every bad file is a one-line error (or a logged skip) naming
it, and an image is refused by its size after the resize it will get."""
import io
import logging
import os
import zlib

import numpy as np
import pytest
from PIL import Image

from support.errors import user_error
from support.images import strip
from utils.data import images
from utils.data.images import open_rgb, to_rgb
from utils.data.loaders import ImageList
from utils.data.transforms import load_query_image
from utils.data.transforms import load_rgb


def pixels(img):
    return np.asarray(img)


def saved(tmp_path, img, name, **kwargs):
    path = str(tmp_path / name)
    img.save(path, **kwargs)
    return path


# ---------------------------------------------------------------- RGB stays as it was


def test_rgb_jpeg_is_bit_identical_to_the_reference_decode(tmp_path, demo):
    import glob
    rng = np.random.default_rng(0)
    path = saved(tmp_path, Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)),
                 "x.jpg", quality=90)
    for file in [path] + sorted(glob.glob(f"{demo.image_dir}/*.jpg"))[:5]:
        with Image.open(file) as ref:
            reference = pixels(ref.convert("RGB"))   # the reference's pipeline
        got = load_rgb(file)
        assert got.mode == "RGB" and np.array_equal(pixels(got), reference), file


# ---------------------------------------------------------------- the mode table


def test_sixteen_bit_grey_is_scaled_by_257_not_clipped_white(tmp_path):
    values = np.array([[0, 257, 257 * 100, 65535], [128, 129, 40000, 65534]], dtype=np.uint16)
    img = Image.fromarray(values)              # mode I;16
    assert img.mode == "I;16"
    expect = np.rint(values / 257.0).astype(np.uint8)
    for path in (saved(tmp_path, img, "g16.png"), saved(tmp_path, img, "g16.tif")):
        with Image.open(path) as raw:
            mode = raw.mode
        got = pixels(open_rgb(path))
        assert got.shape == (2, 4, 3), (path, mode)
        np.testing.assert_array_equal(got[..., 0], expect, err_msg=f"{path} ({mode})")
        assert np.array_equal(got[..., 0], got[..., 2])
    # the old convert("RGB") made this a blank (white) image
    assert len(np.unique(expect)) > 2


@pytest.mark.parametrize("mode, dtype", [("I;16B", ">u2"), ("I;16L", "<u2"), ("I;16N", "=u2")])
def test_sixteen_bit_byte_orders(mode, dtype):
    values = np.array([[0, 257, 65535, 30000]], dtype=dtype)
    img = Image.frombytes(mode, (4, 1), values.tobytes())
    got = pixels(to_rgb(img, "x"))[..., 1]
    np.testing.assert_array_equal(got, [[0, 1, 255, round(30000 / 257)]])


def test_int32_within_16_bit_range_scales_like_16_bit_and_otherwise_stretches():
    sixteen = Image.fromarray(np.array([[0, 257, 65535]], dtype=np.int32))
    assert sixteen.mode == "I"
    np.testing.assert_array_equal(pixels(to_rgb(sixteen, "x"))[..., 0], [[0, 1, 255]])
    wide = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))
    np.testing.assert_array_equal(pixels(to_rgb(wide, "x"))[..., 0], [[0, 128, 255]])


def test_float_in_unit_range_times_255_else_stretched_and_nan_is_black(tmp_path):
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.2]], dtype=np.float32))
    assert unit.mode == "F"
    path = saved(tmp_path, unit, "f.tif")
    np.testing.assert_array_equal(pixels(open_rgb(path))[..., 0], [[0, 128, 255, 51]])
    wide = Image.fromarray(np.array([[0.0, 500.0, 1000.0, np.nan]], dtype=np.float32))
    np.testing.assert_array_equal(pixels(to_rgb(wide, "x"))[..., 0], [[0, 128, 255, 0]])
    flat = Image.fromarray(np.full((2, 2), 7.0, dtype=np.float32))
    assert pixels(to_rgb(flat, "x")).max() == 0


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "RGBa", "La"])
def test_alpha_is_composited_on_white(mode):
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    img = Image.fromarray(rgba, "RGBA")
    if mode == "La":   # premultiplied grey; Pillow's RGBA -> La conversion drops the alpha
        img = Image.frombytes("La", (3, 1), bytes([76, 255, 0, 0, 0, 128]))
    elif mode != "RGBA":
        img = img.convert(mode)
    got = pixels(to_rgb(img, "x")).astype(int)
    assert got[0, 1].tolist() == [255, 255, 255], mode   # fully transparent -> the background
    assert got[0, 2].min() >= 120 and got[0, 2].max() <= 135, (mode, got[0, 2])  # half black
    if mode in ("RGBA", "RGBa"):
        assert got[0, 0].tolist() == [255, 0, 0]


def test_palette_with_transparency_is_composited(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((1, 0), 1)
    path = saved(tmp_path, img, "p.png", transparency=0)
    assert pixels(open_rgb(path)).tolist() == [[[255, 255, 255], [10, 200, 30]]]


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"])
def test_colour_modes_use_pillows_conversion(mode):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).convert(
        "RGB" if mode in ("LAB", "HSV") else mode)
    if mode in ("LAB", "HSV"):
        img = Image.frombytes(mode, img.size, img.tobytes())
    got = to_rgb(img, "x")
    assert got.mode == "RGB"
    assert np.array_equal(pixels(got), pixels(img.convert("RGB")))


def test_unknown_mode_is_a_one_line_error():
    img = Image.new("L", (2, 2))
    img._mode = "BGR;15"          # a mode no list image should have
    assert "mode 'BGR;15'" in user_error(to_rgb, img, "odd.bmp")


# ---------------------------------------------------------------- EXIF orientation


def exif_rotated_jpeg(tmp_path):
    """A 40x20 (w x h) JPEG, left half black, tagged 'rotate 90 CW to view' (6)."""
    arr = np.full((20, 40, 3), 255, np.uint8)
    arr[:, :20] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    return saved(tmp_path, Image.fromarray(arr), "phone.jpg", exif=exif, quality=95)


def test_dataset_images_ignore_exif_and_queries_are_turned_upright(tmp_path):
    path = exif_rotated_jpeg(tmp_path)
    assert load_rgb(path).size == (40, 20)                    # as stored: the reference
    upright = open_rgb(path, upright=True)
    assert upright.size == (20, 40)
    top, bottom = pixels(upright)[:20].mean(), pixels(upright)[20:].mean()
    assert top < 50 and bottom > 200                          # black half on top after rotation
    as_stored = load_query_image(path, 64, 64, upright=False)
    turned = load_query_image(path, 64, 64)
    assert not np.array_equal(as_stored, turned)


def test_predict_and_infer_have_the_flag_to_keep_stored_orientation():
    import predict
    args = predict.build_parser().parse_args(["--img", "q.jpg", "--ignore-exif-orientation"])
    assert args.ignore_exif_orientation
    assert not predict.build_parser().parse_args(["--img", "q.jpg"]).ignore_exif_orientation


# ---------------------------------------------------------------- bad files


def bad_files(tmp_path):
    good = Image.fromarray(np.random.default_rng(2).integers(0, 256, (80, 80, 3), np.uint8))
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "empty.jpg").write_bytes(b"")
    full = io.BytesIO()
    good.crop((0, 0, 50, 50)).save(full, format="PNG")     # under the limit: truncation speaks
    (tmp_path / "cut.png").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    good.save(str(tmp_path / "big.png"))
    return {"folder.jpg": "is a directory, not an image file",
            "empty.jpg": "is empty (0 bytes)",
            "cut.png": "is unreadable or corrupt",
            "big.png": "80x80 = 6,400 pixels, over the limit of 5,000 (pass a larger "
                       "--max-image-pixels"}


def test_each_bad_file_is_a_one_line_error_naming_it(tmp_path, small_limit):
    for name, fragment in bad_files(tmp_path).items():
        message = user_error(load_rgb, str(tmp_path / name))
        assert str(tmp_path / name) in message and fragment in message, message
        assert "\n" not in message


def test_pillows_own_bomb_check_is_replaced_by_ours(tmp_path):
    assert Image.MAX_IMAGE_PIXELS is None     # no DecompressionBombError traceback, ever
    images.set_max_pixels(images.DEFAULT_MAX_PIXELS)
    path = saved(tmp_path, Image.new("1", (1, 1)), "tiny.png")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")  # IHDR w, h: 400 Mpx
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")         # its CRC
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    message = user_error(load_rgb, str(tmp_path / "bomb.png"))
    assert "20000x20000 = 400,000,000 pixels, over the limit of 178,956,970" in message


def test_skip_bad_images_skips_every_kind_with_a_logged_line(tmp_path, small_limit):
    cases = bad_files(tmp_path)
    good = tmp_path / "good.png"
    Image.new("RGB", (60, 60), (10, 20, 30)).save(good)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{n} 1 0\n" for n in [*cases, "good.png"]))
    data = ImageList(str(listing), str(tmp_path), 2, resize_size=64, crop_size=64, train=False,
                     skip_bad_images=True)
    data.check_files()                    # a directory is not "not found": the reader says what
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("hashnet")
    logger.addHandler(handler)
    try:
        samples = [data[i] for i in range(len(data))]
    finally:
        logger.removeHandler(handler)
    assert samples[:-1] == [None] * len(cases) and samples[-1] is not None
    lines = [r.getMessage() for r in records]
    assert len(lines) == len(cases)
    for line, (name, fragment) in zip(lines, cases.items()):
        assert line.startswith("skipped: image ") and name in line and fragment in line, line


# ---------------------------------------------------------------- the size after the resize


def test_a_one_pixel_wide_strip_is_refused_by_its_size_after_resize(tmp_path):
    """1 x 1,000,000 px (a few KB, far under the pixel limit) resized to 72 px
    is 72 x 72,000,000: refused before it is decoded or resized."""
    path = strip(tmp_path, 1_000_000)
    assert os.path.getsize(path) < 100_000
    message = user_error(load_rgb, path, 72)
    assert ("is 1x1000000 px, resized to 72x72000000 = 5,184,000,000 pixels, over the limit of "
            "178,956,970 (pass a larger --max-image-pixels if it is genuine)") in message
    assert "\n" not in message


def test_query_image_is_checked_after_resize(tmp_path, small_limit):
    path = strip(tmp_path, 100)
    assert "resized to 72x7200 = 518,400 pixels" in user_error(load_query_image, path, 72, 64)


def test_skip_bad_images_skips_a_strip(tmp_path, small_limit, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("hashnet"), "propagate", True)  # a run's logger may not
    folder = tmp_path / "images"
    folder.mkdir()
    strip(folder, 100, "strip.png")
    Image.new("RGB", (40, 40), (10, 20, 30)).save(folder / "ok.png")
    (tmp_path / "list.txt").write_text("strip.png 1 0\nok.png 0 1\n")
    data = ImageList(str(tmp_path / "list.txt"), str(folder), 2, resize_size=64, crop_size=64,
                     train=False, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="hashnet"):
        assert data[0] is None
        assert data[1] is not None
    assert any("strip.png" in r.getMessage() and "resized to" in r.getMessage()
               for r in caplog.records)
    refusing = ImageList(str(tmp_path / "list.txt"), str(folder), 2, resize_size=64,
                         crop_size=64, train=False)
    assert "resized to 64x6400" in user_error(refusing.__getitem__, 0)
