"""utils/retrieval/code_cache.py: the fingerprinted database code cache.

Reused only while weights, list, data root, sizes, bit, Paddle version and
device are unchanged;
rebuilt (never silently reused) when any of them changes; the reference's
±1 .npy read only when no fingerprinted cache exists; a corrupt cache is
rebuilt with a warning; read with allow_pickle=False.
"""
import json
import os

import numpy as np
import paddle
import pytest

from utils.retrieval.code_cache import DatabaseCodeCache, make_fingerprint
from utils.base.fingerprint import sha256_file
from utils.retrieval.hamming import pack_codes, unpack_codes

BIT, N, C = 16, 12, 10


@pytest.fixture
def files(tmp_path):
    """A weights file, a list file and a data root to fingerprint."""
    weights, lst, root = tmp_path / "w.pdparams", tmp_path / "database.txt", tmp_path / "images"
    weights.write_bytes(b"weights v1")
    lst.write_text("".join(f"images/{i}.jpg 1 0 0 0 0 0 0 0 0 0\n" for i in range(N)))
    root.mkdir()
    return weights, lst, root


class Encoder:
    """A stand-in for encoding the database; counts its calls."""

    def __init__(self, seed=0, bit=BIT):
        rng = np.random.default_rng(seed)
        self.codes = rng.choice(np.array([-1, 1], np.int8), size=(N, bit))
        self.labels = (rng.random((N, C)) < 0.3).astype(np.float32)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.codes, self.labels


def cache_for(tmp_path, files, lines, crop=224, resize=256, bit=BIT, legacy=True, device="cpu"):
    weights, lst, root = files
    fp = make_fingerprint([str(weights)], str(lst), str(root), bit, crop, resize, device)
    return DatabaseCodeCache(str(tmp_path / "out" / "database_code_x_16.npz"), fp,
                             legacy_path=str(tmp_path / "out" / f"database_code_{bit}.npy") if legacy
                             else None, log=lines.append)


def test_built_then_reused(tmp_path, files):
    lines, enc = [], Encoder()
    packed, labels, source = cache_for(tmp_path, files, lines).get(enc, N)
    assert source == "built" and enc.calls == 1
    np.testing.assert_array_equal(packed, pack_codes(enc.codes))
    np.testing.assert_array_equal(labels, enc.labels)
    packed2, labels2, source2 = cache_for(tmp_path, files, lines).get(enc, N)
    assert source2 == "cache" and enc.calls == 1, lines
    np.testing.assert_array_equal(packed2, packed)
    np.testing.assert_array_equal(labels2, enc.labels)
    # written atomically: no temp file left beside it
    assert sorted(os.listdir(tmp_path / "out")) == ["database_code_x_16.npz"]
    with np.load(tmp_path / "out" / "database_code_x_16.npz", allow_pickle=False) as data:
        assert data["packed"].dtype == np.uint8 and data["packed"].shape == (N, BIT // 8)


@pytest.mark.parametrize("change, expect", [
    ("weights", "the weights changed"),
    ("list", "the database list changed"),
    ("crop", "--crop_size changed"),
    ("root", "--data_path changed"),
    ("device", "the device changed (CPU/GPU)"),
    ("paddle", "the Paddle version changed"),
    ("resize", "--resize_size changed"),
    ("bit", "--bit changed"),
])
def test_stale_cache_is_rebuilt(tmp_path, files, change, expect, monkeypatch):
    lines, enc = [], Encoder()
    cache_for(tmp_path, files, lines).get(enc, N)
    weights, lst, root = files
    crop, resize, bit, device = 224, 256, BIT, "cpu"
    if change == "weights":
        weights.write_bytes(b"weights v2")
    elif change == "list":
        lst.write_text(lst.read_text().replace("images/0.jpg", "images/other.jpg"))
    elif change == "crop":
        crop = 200
    elif change == "resize":
        resize = 240
    elif change == "bit":
        bit = 32
    elif change == "device":  # codes encoded on the CPU, now the GPU encodes
        device = "gpu"
    elif change == "paddle":
        monkeypatch.setattr(paddle, "__version__", paddle.__version__ + ".post1")
    else:
        os.rename(root, str(root) + "2")
        files = (weights, lst, type(root)(str(root) + "2"))
    sizes = dict(crop=crop, resize=resize, bit=bit, device=device)
    new = Encoder(seed=1, bit=bit)
    packed, _, source = cache_for(tmp_path, files, lines, **sizes).get(new, N)
    assert source == "built" and new.calls == 1
    assert any("stale" in line and expect in line for line in lines), lines
    np.testing.assert_array_equal(packed, pack_codes(new.codes))   # not the old codes
    # and the rebuilt cache is reused next time
    again = Encoder(seed=2, bit=bit)
    assert cache_for(tmp_path, files, lines, **sizes).get(again, N)[2] == "cache"
    assert again.calls == 0


def test_legacy_npy_is_read_only_without_a_fingerprinted_cache(tmp_path, files):
    lines, enc = [], Encoder()
    os.makedirs(tmp_path / "out")
    legacy = enc.codes.astype(np.float32)
    legacy[0, 0] = 0.0   # the reference's sign() could give 0: counted as +1
    np.save(tmp_path / "out" / "database_code_16.npy", legacy)
    packed, labels, source = cache_for(tmp_path, files, lines).get(enc, N)
    assert source == "legacy" and labels is None and enc.calls == 0
    expected = enc.codes.copy()
    expected[0, 0] = 1
    np.testing.assert_array_equal(unpack_codes(packed, BIT), expected)
    assert any("LEGACY" in line and "UNVERIFIED" in line for line in lines), lines
    # once a fingerprinted cache exists (here: forced rebuild) it wins
    cache_for(tmp_path, files, lines).get(enc, N, rebuild=True)
    assert cache_for(tmp_path, files, lines).get(enc, N)[2] == "cache"
    # a stale fingerprinted cache is rebuilt, not replaced by the legacy file
    files[0].write_bytes(b"weights v2")
    assert cache_for(tmp_path, files, lines).get(enc, N)[2] == "built"


@pytest.mark.parametrize("shape", [(N - 1, BIT), (N, 32)])
def test_legacy_npy_that_does_not_fit_is_ignored(tmp_path, files, shape):
    lines, enc = [], Encoder()
    os.makedirs(tmp_path / "out")
    np.save(tmp_path / "out" / "database_code_16.npy", np.ones(shape, np.float32))
    assert cache_for(tmp_path, files, lines).get(enc, N)[2] == "built"
    assert enc.calls == 1
    assert any("legacy" in line and "does not fit" in line for line in lines), lines


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickled", "wrong_shape"])
def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, files, damage):
    lines, enc = [], Encoder()
    cache = cache_for(tmp_path, files, lines)
    cache.get(enc, N)
    path = tmp_path / "out" / "database_code_x_16.npz"
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "pickled":   # an object array needs allow_pickle: refused
        with open(path, "wb") as f:
            np.savez(f, packed=np.array([object()], dtype=object), labels=enc.labels,
                     fingerprint=np.array("{}"))
    else:
        with open(path, "wb") as f:
            np.savez(f, packed=np.zeros((N, 5), np.uint8), labels=enc.labels,
                     fingerprint=np.array(json.dumps(cache.fingerprint)))
    lines.clear()
    packed, _, source = cache_for(tmp_path, files, lines).get(enc, N)
    assert source == "built" and enc.calls == 2
    assert lines[0].startswith("warning: database code cache") and "rebuilding" in lines[0], lines
    np.testing.assert_array_equal(packed, pack_codes(enc.codes))
    assert cache_for(tmp_path, files, lines).get(enc, N)[2] == "cache"


def test_cache_of_another_database_size_is_not_used(tmp_path, files):
    lines, enc = [], Encoder()
    cache_for(tmp_path, files, lines).get(enc, N)
    # same fingerprint, but the caller's list has another length: never trust it
    assert cache_for(tmp_path, files, lines).get(enc, N + 1)[2] == "built"


def test_fingerprint_hashes_file_contents(tmp_path, files):
    weights, lst, root = files
    fp = make_fingerprint([str(weights)], str(lst), str(root), BIT, 64, 72)
    assert fp["model_sha256"] == sha256_file(str(weights))
    assert fp["list_sha256"] == sha256_file(str(lst))
    assert (fp["bit"], fp["crop_size"], fp["resize_size"]) == (BIT, 64, 72)
    two = make_fingerprint([str(weights), str(lst)], str(lst), str(root), BIT, 64, 72)
    assert two["model_sha256"] != fp["model_sha256"]   # every model file counts
    # by default the device is Paddle's current one, without its index
    assert (fp["paddle"], fp["device"]) == (paddle.__version__, paddle.get_device().split(":")[0])


class GrowingEncoder:
    """Encodes entries start..n-1 of a fixed code table; records each start."""

    def __init__(self, n, seed=0):
        rng = np.random.default_rng(seed)
        self.codes = rng.choice(np.array([-1, 1], np.int8), size=(n, BIT))
        self.labels = (rng.random((n, C)) < 0.3).astype(np.float32)
        self.n, self.starts = n, []

    def __call__(self, start=0):
        self.starts.append(start)
        return self.codes[start:self.n], self.labels[start:self.n]


def list_entries(lst):
    from utils.data.list_format import parse_list
    return parse_list(str(lst), C)


def test_grown_list_encodes_only_the_new_entries(tmp_path, files):
    """Images appended to the list: only they are encoded, and the cache then
    equals a rebuild's; a list changed otherwise is re-encoded whole."""
    weights, lst, root = files
    lines, enc = [], GrowingEncoder(N + 5)
    enc.n = N
    cache_for(tmp_path, files, lines).get(enc, N, entries=list_entries(lst))
    lst.write_text(lst.read_text() + "".join(f"images/new{i}.jpg 0 1 0 0 0 0 0 0 0 0\n"
                                             for i in range(5)))
    enc.n = N + 5
    packed, labels, source = cache_for(tmp_path, files, lines).get(enc, N + 5,
                                                                   entries=list_entries(lst))
    assert source == "extended" and enc.starts == [0, N], (enc.starts, lines)
    assert any(f"the list adds 5 images to the {N} cached" in line for line in lines), lines
    np.testing.assert_array_equal(packed, pack_codes(enc.codes))
    np.testing.assert_array_equal(labels, enc.labels)
    # reused as it is next time
    assert cache_for(tmp_path, files, lines).get(enc, N + 5, entries=list_entries(lst))[2] == "cache"
    # an old entry changed: everything is encoded again
    lst.write_text(lst.read_text().replace("images/0.jpg", "images/zero.jpg"))
    source = cache_for(tmp_path, files, lines).get(enc, N + 5, entries=list_entries(lst))[2]
    assert source == "built" and enc.starts[-1] == 0
    # other weights and a grown list: encoded whole as well
    weights.write_bytes(b"weights v2")
    lst.write_text(lst.read_text() + "images/more.jpg 1 0 0 0 0 0 0 0 0 0\n")
    enc.codes, enc.labels = np.concatenate([enc.codes, enc.codes[:1]]), np.concatenate(
        [enc.labels, enc.labels[:1]])
    enc.n = N + 6
    source = cache_for(tmp_path, files, lines).get(enc, N + 6, entries=list_entries(lst))[2]
    assert source == "built" and enc.starts[-1] == 0


# ---------------------------------------------------------------- images changed on disk
def with_images(files):
    """Real files at the list's paths under the data root."""
    weights, lst, root = files
    for i in range(N):
        (root / "images").mkdir(exist_ok=True)
        (root / "images" / f"{i}.jpg").write_bytes(bytes([i]) * 100)
    return list_entries(lst)


@pytest.mark.parametrize("how", ["rewritten", "renamed over"])
def test_an_image_replaced_in_place_is_re_encoded(tmp_path, files, how):
    """Same path, same list, same size: the cache notices the new file by its
    mtime or inode and encodes again (it kept the old code before)."""
    lines, enc = [], Encoder()
    entries = with_images(files)
    cache_for(tmp_path, files, lines).get(enc, N, entries=entries)
    image = files[2] / "images" / "5.jpg"
    old = os.stat(image)
    if how == "rewritten":
        image.write_bytes(b"\xff" * 100)
        os.utime(image, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))
    else:
        (files[2] / "new.jpg").write_bytes(b"\xff" * 100)
        os.utime(files[2] / "new.jpg", ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(files[2] / "new.jpg", image)
    new = Encoder(seed=1)
    packed, _, source = cache_for(tmp_path, files, lines).get(new, N, entries=entries)
    assert source == "built" and new.calls == 1
    assert any("stale (1 of 12 images changed on disk" in line and "images/5.jpg" in line
               for line in lines), lines
    np.testing.assert_array_equal(packed, pack_codes(new.codes))


def test_fuzzed_cache_file_is_read_or_rebuilt(tmp_path_factory):
    """Any bytes in the cache's place: reused if they are a cache of these
    inputs, else rebuilt with a line saying why; never an exception, never
    an allocation the file does not hold."""
    from hypothesis import given
    from support.fuzz import FUZZ, mutated, one_line_or_result
    tmp_path = tmp_path_factory.mktemp("fuzzed_code_cache")
    weights, lst, root = tmp_path / "w.pdparams", tmp_path / "database.txt", tmp_path / "images"
    weights.write_bytes(b"weights v1")
    lst.write_text("".join(f"images/{i}.jpg 1 0 0 0 0 0 0 0 0 0\n" for i in range(N)))
    root.mkdir()
    files = (weights, lst, root)
    entries = with_images(files)
    cache_for(tmp_path, files, []).get(Encoder(), N, entries=entries)
    path = tmp_path / "out" / "database_code_x_16.npz"
    seed = path.read_bytes()

    @FUZZ
    @given(data=mutated([seed]))
    def fuzz(data):
        path.write_bytes(data)
        enc = Encoder()
        got = one_line_or_result(cache_for(tmp_path, files, []).get, enc, N, entries=entries)
        packed, labels, source = got
        assert packed.shape == (N, BIT // 8) and source in ("cache", "built")
        if source == "cache":
            assert enc.calls == 0
    fuzz()
