"""utils/data/list_sources.py and the list writers on what careless or
hostile input brings: CSV labels that are not 0/1, CSV rows the csv module
chokes on, COCO files of the wrong shape, one image under two ids, file
names that are not UTF-8; every case one line, and the lists written as a
unit or not at all. The CSV, COCO and list-file readers are fuzzed."""
import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.cli import run_in_process
from support.errors import assert_cli_error, user_error
from support.fuzz import FUZZ, edited_text, json_like, mutated, one_line_or_result
from utils.data.list_check import check_lists
from utils.data.list_format import parse_list, write_lists
from utils.data.list_sources import (check_class_names, images_from_coco, images_from_csv,
                                     images_from_folder)

IMAGES = ("a.jpg", "b.jpg", "sub dir/c.jpg")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Empty files where the sources' images are: the readers check that
    they exist, not their pixels."""
    folder = tmp_path_factory.mktemp("root")
    for name in IMAGES + tuple(f"train2014/{n}" for n in IMAGES):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    return folder


def csv_error(root, text):
    path = root / "labels.csv"
    path.write_text(text)
    return user_error(images_from_csv, str(path), str(root))


# ---------------------------------------------------------------- CSV
@pytest.mark.parametrize("text, fragment", [
    ("path,cat,dog\na.jpg,1.0,0.0\n", "labels.csv:2: labels must be 0 or 1, got '1.0'"),
    ("path,cat,dog\na.jpg,1,0\nb.jpg,2,0\n", "labels.csv:3: labels must be 0 or 1, got '2'"),
    ("path,cat,dog\na.jpg,1,\n", "labels.csv:2: labels must be 0 or 1, got ''"),
    ("path,label\na.jpg,0.5\n", "labels.csv:2: labels must be 0 or 1, got '0.5'"),
    ("path,label\na.jpg,-1\n", "labels.csv:2: labels must be 0 or 1, got '-1'"),
], ids=["decimals", "out of range", "empty cell", "one decimal column", "negative"])
def test_numeric_labels_other_than_0_1_are_refused(root, text, fragment):
    assert fragment in csv_error(root, text)


def test_a_column_of_whole_numbers_is_class_ids(root):
    (root / "ids.csv").write_text("path,label\na.jpg,3\nb.jpg,12\n")
    images = images_from_csv(str(root / "ids.csv"), str(root))
    assert images.classes == ["12", "3"] and images.labels.tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("text, fragment", [
    ('path,label\n"a.jpg,cat\nb.jpg,dog\n', "labels.csv:2: not a CSV row"),
    ("path,label\n" + "a.jpg," + "x" * 140_000 + "\n", "labels.csv:2: not a CSV row (field larger"),
], ids=["unclosed quote", "cell over the csv limit"])
def test_rows_the_csv_module_refuses_are_one_line(root, text, fragment):
    assert fragment in csv_error(root, text)


# ---------------------------------------------------------------- COCO
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def coco(images=None, annotations=None, categories=None):
    images = [{"id": 10, "file_name": "a.jpg"}, {"id": 11, "file_name": "b.jpg"}] \
        if images is None else images
    annotations = [{"id": 1, "image_id": 10, "category_id": 3},
                   {"id": 2, "image_id": 11, "category_id": 1}] \
        if annotations is None else annotations
    return {"images": images, "annotations": annotations,
            "categories": CATEGORIES if categories is None else categories}


def coco_file(root, data):
    path = root / "instances_train2014.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("data, fragment", [
    ([], "has no list of images, annotations, categories"),
    ({"images": {}, "annotations": [], "categories": []}, "has no list of images"),
    (coco(images=[5]), "images[0] has no id / file_name"),
    (coco(images=[{"id": True, "file_name": "a.jpg"}]), "images[0] has no id of type int"),
    (coco(images=[{"id": 10, "file_name": ["a.jpg"]}]), "images[0] has no file_name of type str"),
    (coco(annotations=[{"image_id": "10", "category_id": 3}]), "annotations[0] has no image_id"),
    (coco(categories=[{"id": 1}]), "categories[0] has no name"),
    (coco(categories=[]), "lists no categories"),
    (coco(images=[{"id": 10, "file_name": "a.jpg"}, {"id": 10, "file_name": "b.jpg"}]),
     "images[1] has the id 10 of images[0]"),
    (coco(images=[{"id": 10, "file_name": "a.jpg"}, {"id": 11, "file_name": "a.jpg"}]),
     "images[1] has the file_name 'a.jpg' of images[0]"),
    (coco(images=[{"id": 10, "file_name": "a.jpg"}, {"id": 11, "file_name": "./a.jpg"}]),
     "image id 11 is the file train2014/a.jpg of"),
    ("[" * 100_000, "is not valid JSON (ValueError: JSON nested too deeply)"),
], ids=["a list", "images not a list", "image not an object", "id a bool", "name a list",
        "image id a string", "category without name", "no categories", "two images one id",
        "one file two ids", "one file two spellings", "nested too deeply"])
def test_malformed_coco_is_one_line(root, data, fragment):
    path = root / "instances_train2014.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    assert fragment in user_error(images_from_coco, [str(path)], str(root))


# ---------------------------------------------------------------- names that are not UTF-8
NOT_UTF8 = os.fsdecode(b"caf\xe9.jpg")   # Latin-1 bytes, as an old camera or zip tool names them


def test_a_file_name_that_is_not_utf8_is_refused_before_any_list_is_written(tmp_path):
    import scripts.lists
    tree = tmp_path / "photos"
    for cls in ("cat", "dog"):
        for i in range(3):
            (tree / cls).mkdir(parents=True, exist_ok=True)
            (tree / cls / f"{i}.jpg").write_bytes(b"")
    argv = ["make", "--folder", str(tree), "--list-dir", str(tmp_path / "lists"), "--test", "1",
            "--train", "1", "--per_class"]
    assert run_in_process(scripts.lists.main, *argv).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "lists").iterdir()}
    (tree / "dog" / NOT_UTF8).write_bytes(b"")
    message = assert_cli_error(run_in_process(scripts.lists.main, *argv), "is not UTF-8")
    assert "caf\\udce9.jpg" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "lists").iterdir()} == before


def test_lists_are_written_all_or_none(tmp_path):
    """A path the list rule cannot hold, in the last list, leaves every old
    list as it was (and no temp file)."""
    lists = tmp_path / "lists"
    write_lists(str(lists), {"train": (["a.jpg"], [[1]]), "test": (["b.jpg"], [[1]])})
    before = {p.name: p.read_bytes() for p in lists.iterdir()}
    message = user_error(write_lists, str(lists), {"train": (["new.jpg"], [[1]]),
                                                   "test": (["bad 1"], [[1]])})
    assert "ends with a field '0' or '1'" in message
    assert {p.name: p.read_bytes() for p in lists.iterdir()} == before


def test_a_class_folder_or_name_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "tree" / NOT_UTF8).mkdir(parents=True)
    (tmp_path / "tree" / NOT_UTF8 / "1.jpg").write_bytes(b"")
    assert "image path 'caf\\udce9.jpg/1.jpg' is not UTF-8" in user_error(
        images_from_folder, str(tmp_path / "tree"), str(tmp_path / "tree"))
    assert "class name 'caf\\udce9.jpg' is not UTF-8" in user_error(check_class_names, [NOT_UTF8])


# ---------------------------------------------------------------- fuzzed
CSV_SEED = "path,cat,dog\na.jpg,1,0\n\"sub dir/c.jpg\",0,1\nb.jpg,1,1\n"
NAMES_SEED = "path\tlabels\na.jpg\tcat;dog\nb.jpg\tdog\n"
LIST_SEED = "a.jpg 1 0\nsub dir/c.jpg 0 1\nb.jpg 1 1\n"


def fuzzed_file(root, name, text_or_bytes):
    path = root / name
    if isinstance(text_or_bytes, str):
        path.write_bytes(text_or_bytes.encode("utf-8", "surrogatepass"))
    else:
        path.write_bytes(text_or_bytes)
    return str(path)


@FUZZ
@given(text=edited_text(CSV_SEED) | edited_text(NAMES_SEED)
       | mutated([CSV_SEED.encode(), NAMES_SEED.encode()]))
def test_fuzzed_csv_is_read_or_refused_in_one_line(root, text):
    images = one_line_or_result(images_from_csv, fuzzed_file(root, "fuzzed.csv", text), str(root))
    assert images is None or images.labels.shape == (len(images.paths), len(images.classes))


@FUZZ
@given(data=st.one_of(json_like(coco()).map(json.dumps), mutated([json.dumps(coco()).encode()])))
def test_fuzzed_coco_is_read_or_refused_in_one_line(root, data):
    path = fuzzed_file(root, "instances_train2014.json", data)
    images = one_line_or_result(images_from_coco, [path], str(root))
    assert images is None or len(set(images.paths)) == len(images.paths)


@FUZZ
@given(text=edited_text(LIST_SEED) | mutated([LIST_SEED.encode(), "a.jpg 1 0\n".encode("utf-16")]))
def test_fuzzed_list_file_is_read_or_refused_in_one_line(root, text):
    read = one_line_or_result(parse_list, fuzzed_file(root, "fuzzed.txt", text), 2)
    assert read is None or read[1].shape == (len(read[0]), 2)


@FUZZ
@given(text=edited_text(LIST_SEED) | mutated([LIST_SEED.encode()]))
def test_fuzzed_lists_are_checked_or_refused_in_one_line(root, text):
    lists = root / "lists"
    lists.mkdir(exist_ok=True)
    for split in ("test", "database"):
        (lists / f"{split}.txt").write_text(LIST_SEED)
    fuzzed_file(lists, "train.txt", text)
    report = one_line_or_result(check_lists, str(lists), str(root), workers=1)
    assert report is None or isinstance(report["usable"], bool)


def test_the_seeds_are_valid_inputs(root):
    """The fuzzers start from inputs the readers accept."""
    assert len(images_from_csv(fuzzed_file(root, "seed.csv", CSV_SEED), str(root)).paths) == 3
    assert images_from_csv(fuzzed_file(root, "seed.tsv", NAMES_SEED), str(root)).classes == \
        ["cat", "dog"]
    assert images_from_coco([coco_file(root, coco())], str(root)).labels.tolist() == [[0, 1],
                                                                                    [1, 0]]
    assert np.array_equal(parse_list(fuzzed_file(root, "seed.txt", LIST_SEED), 2)[1],
                          [[1, 0], [0, 1], [1, 1]])
