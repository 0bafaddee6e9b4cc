"""predict.py on the tiny demo set with a centred random HashNet
(support/centred_model.py): the query comes first at distance 0 and the
top-k is the exact ranking; the code cache is reused, rebuilt after the
weights or the list change, and read in the reference's legacy format;
bad inputs are one-line errors, --save_path checked before the model is
loaded; Ctrl-C is one line and exit 130.
"""
import json
import os
import shutil

import numpy as np
import pytest

from support.centred_model import BIT, brute_topk, centred_checkpoint, codes_of, make_checkpoint
from support.cli import (TINY, check_interrupted, interrupted, run_in_process,
                         run_predict_inprocess, run_python, run_script)
from support.demo_set import CROP, RESIZE, database, database_batch, predict_argv, query_path
from support.errors import assert_cli_error
from utils.retrieval.hamming import unpack_codes


@pytest.fixture(scope="module")
def tiny_trained(demo, tmp_path_factory):
    """The tiny test net, for the code cache's invariants (whatever the net)."""
    return centred_checkpoint(demo, tmp_path_factory.mktemp("tiny_ckpt"), arch=TINY[1])


def test_query_in_database_comes_first_at_distance_zero(demo, trained, tmp_path):
    prefix, codes, q = trained.prefix, trained.codes, trained.query
    img = query_path(demo, q)
    proc = run_script("predict.py", *predict_argv(demo, prefix, img, tmp_path / "out", "--show"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    stem = os.path.splitext(os.path.basename(img))[0]
    with open(tmp_path / "out" / f"retrieval_{stem}_16.json") as f:
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


def test_a_query_whose_name_is_not_utf8_is_looked_up(demo, tiny_trained, tmp_path):
    """A name saved in another encoding (bytes that are not UTF-8) is a query
    like any other: ranked, reported in JSON and drawn in the montage."""
    import predict
    img = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"caf\xe9.jpg"))
    shutil.copy(query_path(demo, tiny_trained.query), img)
    proc = run_in_process(predict.main, *predict_argv(demo, tiny_trained.prefix, img,
                                                      tmp_path / "out", *TINY))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stem = os.path.splitext(os.path.basename(img))[0]
    with open(tmp_path / "out" / f"retrieval_{stem}_16.json") as f:
        result = json.load(f)
    assert result["topk"][0]["distance"] == 0   # the query's own image, in the database
    with open(result["montage"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


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


def test_predict_save_path_checked_before_the_model(demo, tmp_path, a_file):
    img = os.path.join(demo.image_dir, "images", sorted(os.listdir(
        os.path.join(demo.image_dir, "images")))[0])
    result = run_python("predict.py", "--bit", "16", "--dataset", "demo", "--data_path",
                        demo.image_dir, "--list-dir", demo.list_dir, "--pretrained",
                        str(tmp_path / "none"), "--crop_size", str(CROP), "--img", img,
                        "--save_path", os.path.join(a_file, "out"), "--num_threads", "1")
    assert_cli_error(result, "--save_path", "Not a directory")


def test_ctrl_c_in_predict_is_one_line_and_130(demo, weights, long_lists, tmp_path):
    img = os.path.join(demo.image_dir, "images", sorted(os.listdir(
        os.path.join(demo.image_dir, "images")))[0])
    check_interrupted(*interrupted(
        ["predict.py", "--bit", "16", "--dataset", "demo", "--data_path", demo.image_dir,
         "--list-dir", long_lists, "--pretrained", weights, "--crop_size", str(CROP),
         "--resize_size", str(RESIZE), "--img", img, "--save_path", str(tmp_path / "out"),
         "--num_threads", "1"], "weights:"))
    assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".tmp")]
