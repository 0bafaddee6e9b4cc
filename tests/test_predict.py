"""predict.py on the tiny demo set with a randomly initialised HashNet.

A random AlexNet maps every image to nearly the same hash-layer output, so
all codes would tie. ``make_checkpoint`` keeps the random weights but
centres the hash layer on the median output over the database (every bit
then splits the database in half and codes differ between images) and
scales it to unit spread, so that z is large next to float rounding.
"""
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import paddle
import pytest

from conftest import CROP, GUARD_DIR, REPO, RESIZE, TINY, assert_cli_error, run_in_process
import models
from utils.retrieval.codes import sign_codes
from utils.data.loaders import ImageList
from utils.retrieval.hamming import unpack_codes

BIT = 16


def database(demo):
    return ImageList(os.path.join(demo.list_dir, "database.txt"), demo.image_dir, 10,
                     train=False, resize_size=RESIZE, crop_size=CROP)


def database_batch(demo):
    db = database(demo)
    return np.stack([db[i][0] for i in range(len(db))])


def make_checkpoint(prefix, demo, bit=BIT, seed=0, arch="alexnet"):
    """Save a random HashNet (hash layer centred and scaled on the demo database) at
    ``prefix``.pdparams; returns the model (eval mode)."""
    paddle.seed(seed)
    model = models.build(arch, bit)
    model.eval()
    with paddle.no_grad():
        z = model(paddle.to_tensor(database_batch(demo))).numpy()
        # centred on the median, then scaled to unit spread per bit: the same
        # codes, but |z| ~ 1 (unscaled it is ~1e-4, the export check's tolerance)
        centre = np.median(z, axis=0)
        scale = 1.0 / np.maximum((z - centre).std(axis=0), 1e-12)
        hash_layer = model.hash_layer
        hash_layer.weight.set_value((hash_layer.weight.numpy() * scale).astype("float32"))
        hash_layer.bias.set_value((-centre * scale).astype("float32"))
    paddle.save(model.state_dict(), prefix + ".pdparams")
    return model


def codes_of(model, x):
    with paddle.no_grad():
        return sign_codes(model(paddle.to_tensor(x)))


def brute_topk(codes, q, k):
    """Reference ranking: Hamming distance, ties by database index."""
    dist = (codes.shape[1] - codes.astype(np.int64) @ codes[q].astype(np.int64)) // 2
    order = np.argsort(dist, kind="stable")[:k]
    return order.tolist(), dist[order].tolist()


def centred_checkpoint(demo, folder, arch="alexnet"):
    """The checkpoint ``prefix``, its ``model``, the database ``codes`` and a
    ``query`` index: a test image (so also in the database) whose code no
    other image has."""
    prefix = str(folder / "hashnet_16")
    model = make_checkpoint(prefix, demo, arch=arch)
    codes = codes_of(model, database_batch(demo))
    unique = [i for i in range(1, demo.counts["test"])
              if (codes == codes[i]).all(axis=1).sum() == 1]
    assert unique, "the centred random model should give most images their own code"
    return types.SimpleNamespace(prefix=prefix, model=model, codes=codes, query=unique[0])


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """AlexNet, for predict.py's and infer.py's end-to-end tests."""
    return centred_checkpoint(demo, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def tiny_trained(demo, tmp_path_factory):
    """The tiny test net, for the code cache's invariants (whatever the net)."""
    return centred_checkpoint(demo, tmp_path_factory.mktemp("tiny_ckpt"), arch=TINY[1])


def query_path(demo, index):
    return os.path.join(demo.image_dir, database(demo).paths[index])


def predict_argv(demo, prefix, img, save, *extra, bit=BIT):
    return ["--bit", str(bit), "--dataset", "demo", "--data_path", demo.image_dir,
            "--list-dir", demo.list_dir, "--pretrained", prefix, "--crop_size", str(CROP),
            "--resize_size", str(RESIZE), "--img", img, "--save_path", str(save),
            "--num_threads", "2", *extra]


def run_script(script, *argv, timeout=300):
    """Run a script of the repo headless (no display: --show must not block)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = os.pathsep.join([REPO, GUARD_DIR])
    return subprocess.run([sys.executable, script, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_predict_inprocess(capsys, argv):
    import predict
    result = predict.main(argv)
    return result, capsys.readouterr().out


def test_query_in_database_comes_first_at_distance_zero(demo, trained, tmp_path):
    prefix, codes, q = trained.prefix, trained.codes, trained.query
    img = query_path(demo, q)
    proc = run_script("predict.py", *predict_argv(demo, prefix, img, tmp_path / "out", "--show"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    with open(tmp_path / "out" / f"retrieval_{os.path.splitext(os.path.basename(img))[0]}_16.json") as f:
        result = json.load(f)
    top = result["topk"]
    assert len(top) == 10
    assert (top[0]["index"], top[0]["distance"], top[0]["path"]) == (q, 0, img)
    assert top[0]["relevant"] is True and top[0]["is_query"]   # its label is known: in the list
    assert not any(t["is_query"] for t in top[1:])
    # the whole top-10 is the exact ranking (ties in index order)
    order, dist = brute_topk(codes, q, 10)
    assert [t["index"] for t in top] == order and [t["distance"] for t in top] == dist
    # printed: the table row, the nearest image, the montage; --show headless -> a note
    assert f"   1     0           yes  {q:>7}  {img}  (the query itself)" in out, out
    assert "codes: built" in out and "in " + os.path.join(demo.list_dir, "database.txt") in out
    assert "--show: no display available" in out
    # the nearest image copied into --save_path, and the montage PNG
    with open(img, "rb") as a, open(tmp_path / "out" / os.path.basename(img), "rb") as b:
        assert a.read() == b.read()
    with open(result["montage"], "rb") as f:
        png = f.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
    # relevance column = shares a label, from the list
    labels = database(demo).labels
    for t in top:
        assert t["relevant"] is bool((labels[t["index"]] * labels[q]).sum() > 0)


def test_cache_reused_then_rebuilt_after_weights_or_list_change(demo, tiny_trained, tmp_path,
                                                                capsys):
    shared, q = tiny_trained.prefix, tiny_trained.query
    img = query_path(demo, q)
    save = tmp_path / "out"
    prefix = str(tmp_path / "weights")        # a copy this test may overwrite
    shutil.copyfile(shared + ".pdparams", prefix + ".pdparams")
    first, out = run_predict_inprocess(capsys, predict_argv(demo, prefix, img, save, *TINY))
    assert first["codes"] == "built" and "no cache at" in out
    second, out = run_predict_inprocess(capsys, predict_argv(demo, prefix, img, save, *TINY))
    assert second["codes"] == "cache" and "fingerprint matches" in out
    assert second["topk"] == first["topk"]

    # other weights under the same file name: rebuilt, and the ranking follows them
    other = make_checkpoint(prefix, demo, seed=1, arch=TINY[1])
    third, out = run_predict_inprocess(capsys, predict_argv(demo, prefix, img, save, *TINY))
    assert third["codes"] == "built" and "stale (the weights changed)" in out, out
    other_codes = codes_of(other, database_batch(demo))
    order, dist = brute_topk(other_codes, q, 10)
    assert [t["index"] for t in third["topk"]] == order
    assert [t["distance"] for t in third["topk"]] == dist

    # a changed list (one image dropped): rebuilt too
    lists = tmp_path / "lists"
    shutil.copytree(demo.list_dir, lists)
    lines = (lists / "database.txt").read_text().splitlines(keepends=True)
    (lists / "database.txt").write_text("".join(lines[:-1]))
    argv = predict_argv(demo, prefix, img, save, *TINY)
    argv[argv.index("--list-dir") + 1] = str(lists)
    fourth, out = run_predict_inprocess(capsys, argv)
    assert fourth["codes"] == "built" and "the database list changed" in out, out
    assert fourth["database_size"] == len(lines) - 1


def test_legacy_npy_cache_is_read(demo, tiny_trained, tmp_path, capsys):
    prefix, codes, q = tiny_trained.prefix, tiny_trained.codes, tiny_trained.query
    img = query_path(demo, q)
    built, _ = run_predict_inprocess(capsys, predict_argv(demo, prefix, img, tmp_path / "a",
                                                          *TINY))
    # the reference's format: a ±1 float array [n, bit], no fingerprint
    with np.load(tmp_path / "a" / "database_code_demo_16.npz", allow_pickle=False) as data:
        legacy = unpack_codes(data["packed"], BIT).astype(np.float32)
    np.testing.assert_array_equal(legacy, codes)
    os.makedirs(tmp_path / "b")
    np.save(tmp_path / "b" / "database_code_16.npy", legacy)
    result, out = run_predict_inprocess(capsys, predict_argv(demo, prefix, img, tmp_path / "b",
                                                            *TINY))
    assert result["codes"] == "legacy" and "LEGACY" in out and "UNVERIFIED" in out, out
    assert result["topk"] == built["topk"]


@pytest.mark.parametrize("case", ["missing_image", "unreadable_image", "bit_mismatch",
                                  "missing_list", "missing_checkpoint", "tiny_crop"])
def test_bad_input_is_a_one_line_error(demo, trained, tmp_path, case):
    prefix, q = trained.prefix, trained.query
    img = query_path(demo, q)
    argv = predict_argv(demo, prefix, img, tmp_path / "out")
    expect = {"missing_image": "not found", "unreadable_image": "unreadable",
              "bit_mismatch": "holds 16-bit weights but --bit is 32",
              "missing_list": "database.txt not found", "missing_checkpoint": "not found",
              "tiny_crop": "too small"}[case]
    if case == "missing_image":
        argv[argv.index("--img") + 1] = str(tmp_path / "nope.jpg")
    elif case == "unreadable_image":
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
        argv[argv.index("--img") + 1] = str(tmp_path / "broken.jpg")
    elif case == "bit_mismatch":
        argv[argv.index("--bit") + 1] = "32"
    elif case == "missing_list":
        os.makedirs(tmp_path / "empty")
        argv[argv.index("--list-dir") + 1] = str(tmp_path / "empty")
    elif case == "missing_checkpoint":
        argv[argv.index("--pretrained") + 1] = str(tmp_path / "none")
    else:
        argv[argv.index("--crop_size") + 1] = "32"
    import predict   # in-process: test_query_in_database_comes_first... runs its __main__
    assert_cli_error(run_in_process(predict.main, *argv), expect)
