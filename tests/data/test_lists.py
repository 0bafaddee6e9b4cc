"""Lists for your own images: the line rule every reader follows
(utils/data/list_format.py: paths with spaces, list files as editors write
them, all-zero label rows counted and warned), making lists from folders,
CSVs and COCO JSON, the presets, the check, and a training run on lists
made from a folder tree."""
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from support.cli import TINY, run_python, run_tiny
from support.demo_set import CROP, RESIZE
from support.errors import assert_cli_error, user_error
from support.threads import THREADS
from utils.data.list_check import check_lists, split_fingerprint
from utils.data.list_format import (format_line, label_count, list_num_class, parse_list,
                                    write_list)
from utils.data.list_sources import (images_from_coco, images_from_csv, images_from_folder,
                                     make_lists)
from utils.data.splits import PROTOCOLS, Protocol, draw_split


COLOURS = {"red car": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def save_image(path, colour, seed, size=40):
    """A small JPEG: the class colour plus noise (``colour`` None: grey)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    base = np.array(colour or (128, 128, 128), float)
    pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)


def folder_tree(root, per_class=6, size=40):
    """root/<class>/<n>.jpg for the classes of COLOURS, some nested, with spaces."""
    for c, (name, colour) in enumerate(sorted(COLOURS.items())):
        for i in range(per_class):
            sub = "more shots/" if i % 3 == 0 else ""
            save_image(os.path.join(root, name, f"{sub}img {i}.jpg"), colour, 100 * c + i, size)
    return root


def lines(path):
    return open(path, encoding="utf-8").read().splitlines()


# ---------------------------------------------------------------- the line rule


def test_paths_with_spaces_round_trip(tmp_path):
    paths = ["a b/c  d.jpg", "x\ty.png", "plain.jpg", "2019 trip/1 0.jpg"]
    labels = [[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 0]]
    list_file = str(tmp_path / "train.txt")
    write_list(list_file, paths, labels)
    got_paths, got_labels = parse_list(list_file, 3)
    assert got_paths == paths
    np.testing.assert_array_equal(got_labels, labels)
    assert list_num_class(list_file) == 3


def test_label_count_is_the_trailing_run_of_0_1_fields():
    assert label_count("a b.jpg 0 1 1") == 3
    assert label_count("1 0 1") == 2          # the first field is always the path
    assert label_count("photo 1.jpg 1") == 1
    assert label_count("x.jpg") == 0


@pytest.mark.parametrize("text, fragment", [
    ("a b.jpg 0 1 0\nc d.jpg 0 1\n", ":2: 2 labels, expected 3"),     # short, path has a space
    ("a.jpg 0 1 0\nb c.jpg 0 1 0 1\n", ":2: 4 labels, expected 3"),   # one too many
    ("a.jpg 0 1 0\nmy b.jpg 0 2 0\n", ":2: labels must be 0 or 1, got 0 2 0"),
])
def test_bad_lines_name_file_and_line(tmp_path, text, fragment):
    path = tmp_path / "test.txt"
    path.write_text(text)
    assert f"{path}{fragment}" in user_error(parse_list, str(path), 3)


@pytest.mark.parametrize("bad", [" lead.jpg", "trail.jpg ", "two\nlines.jpg", "dir/b 1", ""])
def test_writers_refuse_paths_the_rule_cannot_hold(bad):
    assert "rename the file" in user_error(format_line, bad, [0, 1])


def test_path_with_a_space_is_read_as_one_path(tmp_path):
    """The list-line rule (utils/data/list_format.py): the labels are the
    last C fields, so a path may hold spaces."""
    (tmp_path / "l.txt").write_text("ok.jpg 0 1 0\nmy photos/a b.jpg 1 0 0\n")
    paths, labels = parse_list(str(tmp_path / "l.txt"), 3)
    assert paths == ["ok.jpg", "my photos/a b.jpg"] and labels.tolist() == [[0, 1, 0], [1, 0, 0]]


def test_extra_label_columns_are_not_called_a_space(tmp_path):
    (tmp_path / "l.txt").write_text("a.jpg 0 1 0 1\n")
    message = user_error(parse_list, str(tmp_path / "l.txt"), 3)
    assert "4 labels, expected 3" in message and "space" not in message


def test_all_zero_label_rows_are_counted_and_warned(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("hashnet"), "propagate", True)  # a run's logger may not
    (tmp_path / "l.txt").write_text("a.jpg 0 1\nb.jpg 0 0\nc.jpg 1 0\nd.jpg 0 0\n")
    with caplog.at_level(logging.WARNING, logger="hashnet"):
        parse_list(str(tmp_path / "l.txt"), 2)
    warned = [r.getMessage() for r in caplog.records if "all-zero" in r.getMessage()]
    assert len(warned) == 1 and "2 of 4 lines have all-zero labels (first: b.jpg)" in warned[0]


LIST = ["a.jpg 0 1 0", "b/c.jpg 1 0 0"]


@pytest.mark.parametrize("name, data", [
    ("plain", ("\n".join(LIST) + "\n").encode()),
    ("utf8 BOM", b"\xef\xbb\xbf" + ("\n".join(LIST) + "\n").encode()),
    ("CRLF", ("\r\n".join(LIST) + "\r\n").encode()),
    ("tabs", "\n".join(line.replace(" ", "\t") for line in LIST).encode()),
    ("blank lines, no final newline", ("\n\n" + "\n".join(LIST) + "\n\n  \n").encode().rstrip(b"\n")),
    ("UTF-16 LE (Notepad)", ("\r\n".join(LIST) + "\r\n").encode("utf-16")),
    ("UTF-16 BE", b"\xfe\xff" + ("\r\n".join(LIST)).encode("utf-16-be")),
])
def test_list_files_as_editors_write_them_are_read(tmp_path, name, data):
    from utils.data.list_format import parse_list
    path = tmp_path / "train.txt"
    path.write_bytes(data)
    paths, labels = parse_list(str(path), 3)
    assert paths == ["a.jpg", "b/c.jpg"], name
    np.testing.assert_array_equal(labels, [[0, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("data, fragment", [
    (("\n".join(LIST)).encode("utf-16-le"), "train.txt:1: NUL bytes: the file looks like UTF-16 "
                                            "without a byte-order mark"),
    ("a.jpg 0 1 0\nb/caf\u00e9.jpg 1 0 0\n".encode("cp1252"),
     "train.txt:2: byte 0xe9 is not UTF-8 (saved in a legacy code page?)"),
])
def test_list_files_in_other_encodings_are_refused_naming_the_cause(tmp_path, data, fragment):
    from utils.data.list_format import parse_list
    path = tmp_path / "train.txt"
    path.write_bytes(data)
    assert fragment in user_error(parse_list, str(path), 3)


def test_image_list_reads_an_image_whose_path_has_spaces(tmp_path):
    from utils.data.loaders import ImageList
    save_image(str(tmp_path / "my photos" / "cat 1.jpg"), (200, 0, 0), 0, size=80)
    write_list(str(tmp_path / "train.txt"), ["my photos/cat 1.jpg"], [[1, 0]])
    data = ImageList(str(tmp_path / "train.txt"), str(tmp_path), 2, train=False,
                     resize_size=RESIZE, crop_size=CROP)
    data.check_files()
    image, label, index = data[0]
    assert image.shape == (3, CROP, CROP) and label.tolist() == [1, 0] and index == 0


def test_other_readers_follow_the_rule(tmp_path):
    """get_data's reading of the authors' lists, the retrieval's query lookup
    and the demo report's class count read spaced paths like parse_list."""
    import types
    from deploy.database import query_label
    from scripts.get_data import authors_entries
    src = tmp_path / "raw.txt"
    src.write_text("/their/prefix/a b.jpg 0 1\n/their/prefix/c.jpg 1 0\n")
    dst = str(tmp_path / "lists" / "database.txt")
    write_list(dst, *authors_entries(str(src), "/their/prefix/", 2))
    assert lines(dst) == ["a b.jpg 0 1", "c.jpg 1 0"]
    save_image(str(tmp_path / "a b.jpg"), None, 0)
    db = types.SimpleNamespace(root=str(tmp_path), paths=parse_list(dst, 2)[0],
                               labels=parse_list(dst, 2)[1])
    label, where = query_label(str(tmp_path / "a b.jpg"), db, str(tmp_path / "lists"), 2)
    assert label.tolist() == [0, 1] and where == f"{tmp_path / 'lists' / 'database.txt'}:1"
    assert list_num_class(dst) == 2


# ---------------------------------------------------------------- sources


def test_folder_source_labels_by_sorted_sub_folder(tmp_path):
    root = folder_tree(str(tmp_path / "photos"), per_class=3)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / "blue" / "info.txt").write_text("not an image")
    (tmp_path / "photos" / ".hidden").mkdir()
    save_image(str(tmp_path / "photos" / ".hidden" / "x.jpg"), None, 0)
    images = images_from_folder(root, root)
    assert images.classes == ["blue", "green", "red car"]
    assert sorted(images.paths) == sorted(
        f"{c}/{'more shots/' if i == 0 else ''}img {i}.jpg" for c in COLOURS for i in range(3))
    for path, row in zip(images.paths, images.labels):
        assert row.tolist() == [int(path.startswith(c)) for c in images.classes]
    assert any("notes.txt" in note for note in images.notes)


def test_csv_of_zero_one_columns(tmp_path):
    for name in ("a.jpg", "sub dir/b.jpg", "c.jpg"):
        save_image(str(tmp_path / name), None, 0)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("path,cat,dog,bird\na.jpg,1,0,1\n\"sub dir/b.jpg\",0,1,0\nc.jpg,0,0,0\n")
    images = images_from_csv(str(csv_file), str(tmp_path))
    assert images.classes == ["cat", "dog", "bird"]
    assert images.paths == ["a.jpg", "sub dir/b.jpg", "c.jpg"]
    np.testing.assert_array_equal(images.labels, [[1, 0, 1], [0, 1, 0], [0, 0, 0]])


def test_tsv_of_class_names_merges_rows_of_one_image(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        save_image(str(tmp_path / "img" / name), None, 0)
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("image\tlabels\nimg/a.jpg\tdog;traffic light\nimg/b.jpg\tcat\n"
                   "img/a.jpg\tcat\n")
    images = images_from_csv(str(tsv), str(tmp_path))
    assert images.classes == ["cat", "dog", "traffic light"]
    assert dict(zip(images.paths, images.labels.tolist())) == {
        "img/a.jpg": [1, 1, 1], "img/b.jpg": [1, 0, 0]}


@pytest.mark.parametrize("text, fragment", [
    ("path,label\na.jpg,cat\nmissing.jpg,dog\n", "labels.csv:3: "),
    ("path,label\n../outside.jpg,cat\n", "labels.csv:2: image ../outside.jpg is outside the root"),
    ("path,x,y\na.jpg,1,0\na.jpg,0,1\n", "labels.csv:3: a.jpg again (first at"),
    ("path,x,y\na.jpg,1,0,1\n", "labels.csv:2: 4 cells, the header has 3"),
])
def test_csv_errors_name_file_and_line(tmp_path, text, fragment):
    save_image(str(tmp_path / "a.jpg"), None, 0)
    (tmp_path / "labels.csv").write_text(text)
    assert fragment in user_error(images_from_csv, str(tmp_path / "labels.csv"), str(tmp_path))


# ---------------------------------------------------------------- COCO


CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"},
              {"id": 3, "name": "car"}, {"id": 7, "name": "train"}]


def coco_set(root):
    """Two instances files, category ids with gaps (listed out of order), one
    image without annotations and one with only a crowd annotation; returns
    {path: set of category ids counting crowds, set without crowds}."""
    rng = np.random.default_rng(0)
    truth = {}
    ann_id = 0
    for part, count in (("train2014", 24), ("val2014", 12)):
        images, annotations = [], []
        for i in range(count):
            image_id = 1000 * (part == "val2014") + 7 * i + 1
            name = f"COCO_{part}_{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": name, "width": 40, "height": 40})
            save_image(os.path.join(root, part, name), None, image_id)
            anns = [] if i == 0 else [(int(rng.choice([1, 3, 7, 90])), 0)
                                      for _ in range(int(rng.integers(1, 4)))]
            if i == 1:
                anns = [(7, 1)]                 # a crowd-only image
            if i == 2:
                anns.append((90, 1))            # a crowd annotation beside others
            for category, crowd in anns:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": category,
                                    "iscrowd": crowd, "bbox": [0, 0, 5, 5], "area": 25})
            truth[f"{part}/{name}"] = ({c for c, _ in anns}, {c for c, crowd in anns if not crowd})
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        with open(os.path.join(root, "annotations", f"instances_{part}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES,
                       "info": {}, "licenses": []}, f)
    return truth


def expected_coco_lists(truth, crowd, n_test, n_train, seed):
    """The lists as README describes them, computed without the library: rows
    multi-hot over the sorted category ids, unlabelled images dropped, sorted
    by path; one permutation of the rows, queries first, then training; the
    database every image but the training ones."""
    ids = sorted(c["id"] for c in CATEGORIES)
    rows = sorted((path, [int(i in cats[0 if crowd else 1]) for i in ids])
                  for path, cats in truth.items() if cats[0 if crowd else 1])
    order = np.random.default_rng(seed).permutation(len(rows))
    test, train = sorted(order[:n_test]), sorted(order[n_test:n_test + n_train])
    database = sorted(set(range(len(rows))) - set(train))
    as_lines = lambda idx: [f"{rows[i][0]} {' '.join(map(str, rows[i][1]))}" for i in idx]
    return {"train": as_lines(train), "test": as_lines(test), "database": as_lines(database)}


@pytest.mark.parametrize("crowd", [True, False])
def test_coco_lists_equal_an_independent_computation(tmp_path, crowd):
    root = str(tmp_path / "coco")
    truth = coco_set(root)
    flags = [] if crowd else ["--ignore_crowd"]
    out = str(tmp_path / "lists")
    proc = run_python("-m", "scripts.lists", "make", "--coco",
                      f"{root}/annotations/instances_train2014.json",
                      f"{root}/annotations/instances_val2014.json", "--list-dir", out,
                      "--preset", "coco", "--test", "5", "--train", "10", "--split_seed", "3",
                      *flags)
    assert proc.returncode == 0, proc.stderr
    expected = expected_coco_lists(truth, crowd, 5, 10, 3)
    for split in ("train", "test", "database"):
        assert lines(os.path.join(out, f"{split}.txt")) == expected[split], split
    assert lines(os.path.join(out, "classes.txt")) == ["person", "car", "train", "toothbrush"]
    crowd_only = "train2014/COCO_train2014_000000000008.jpg"
    kept = [line.rsplit(None, 4)[0] for s in expected.values() for line in s]
    assert (crowd_only in kept) == crowd
    assert "train2014/COCO_train2014_000000000001.jpg" not in kept     # no annotation
    assert f"paths relative to {root}" in proc.stdout


def test_coco_lists_check_clean_with_the_protocol(tmp_path):
    root = str(tmp_path / "coco")
    coco_set(root)
    images = images_from_coco([f"{root}/annotations/instances_train2014.json"], root)
    assert images.classes == ["person", "car", "train", "toothbrush"]
    protocol = Protocol(4, 8, "rest+queries")
    make_lists(images, protocol, 0, str(tmp_path / "lists"))
    report = check_lists(str(tmp_path / "lists"), root, protocol=None)
    assert report["usable"] and not report["errors"] and report["num_class"] == 4
    assert report["overlaps"] == {"train&test": 0, "train&database": 0, "test&database": 4}


# ---------------------------------------------------------------- splits and presets


def test_presets_draw_the_papers_splits():
    rng = np.random.default_rng(0)
    multi = (rng.random((20000, 8)) < 0.3).astype(np.uint8)
    coco = draw_split(multi, PROTOCOLS["coco"], 0)
    assert (len(coco["test"]), len(coco["train"]), len(coco["database"])) == (5000, 10000, 10000)
    assert not set(coco["train"]) & set(coco["database"])
    assert set(coco["test"]) <= set(coco["database"])
    nus = draw_split(multi, PROTOCOLS["nuswide"], 0)
    assert len(nus["database"]) == 15000 and set(nus["train"]) <= set(nus["database"])
    assert not set(nus["test"]) & set(nus["database"])
    onehot = np.eye(10, dtype=np.uint8)[np.repeat(np.arange(10), 6000)]
    sizes = {"cifar10": (500, 100, 54000), "cifar10-1": (500, 100, 59000),
             "cifar10-2": (5000, 1000, 50000)}
    for name, (train, test, database) in sizes.items():
        parts = draw_split(onehot, PROTOCOLS[name], 0)
        per_class = {s: np.bincount(onehot[parts[s]].argmax(1), minlength=10) for s in parts}
        assert per_class["train"].tolist() == [train] * 10, name
        assert per_class["test"].tolist() == [test] * 10, name
        assert len(parts["database"]) == database, name
        assert not set(parts["train"]) & set(parts["test"]), name
    queries = np.r_[np.zeros(100 * 300, bool), np.ones(100 * 50, bool)]
    labels = np.eye(100, dtype=np.uint8)[np.r_[np.repeat(np.arange(100), 300),
                                                np.repeat(np.arange(100), 50)]]
    imagenet = draw_split(labels, PROTOCOLS["imagenet100"], 0, fixed_queries=queries)
    assert np.array_equal(imagenet["test"], np.flatnonzero(queries))
    assert len(imagenet["train"]) == 13000 and len(imagenet["database"]) == 30000
    assert set(imagenet["train"]) <= set(imagenet["database"])


def test_cifar_in_memory_split_is_the_list_preset():
    from utils.data.loaders import cifar10_split
    classes = np.random.default_rng(1).permutation(np.repeat(np.arange(10), 6000))
    train, test, database = cifar10_split(classes, "cifar10", 5)
    parts = draw_split(np.eye(10, dtype=np.uint8)[classes], PROTOCOLS["cifar10"], 5)
    assert [a.tolist() for a in (train, test, database)] == \
        [parts[s].tolist() for s in ("train", "test", "database")]


def test_split_depends_on_seed_and_content_not_on_source_order(tmp_path):
    root = folder_tree(str(tmp_path / "photos"))
    images = images_from_folder(root, root)
    protocol = Protocol(1, 2, "rest", per_class=True)
    first, _ = make_lists(images, protocol, 7, str(tmp_path / "a"))
    order = np.random.default_rng(0).permutation(len(images.paths))
    shuffled = type(images)([images.paths[i] for i in order], images.labels[order],
                            images.classes)
    again, _ = make_lists(shuffled, protocol, 7, str(tmp_path / "b"))
    other, _ = make_lists(images, protocol, 8, str(tmp_path / "c"))
    for split in ("train", "test", "database"):
        assert lines(tmp_path / "a" / f"{split}.txt") == lines(tmp_path / "b" / f"{split}.txt")
    assert first["test"][0] != other["test"][0]


def test_per_class_counts_beyond_a_class_are_refused(tmp_path):
    root = folder_tree(str(tmp_path / "photos"), per_class=3)
    images = images_from_folder(root, root)
    message = user_error(make_lists, images, Protocol(2, 2, "rest", per_class=True), 0,
                         str(tmp_path / "lists"))
    assert "class blue has 3 images, fewer than the 2 queries + 2 training images" in message
    assert not os.path.exists(tmp_path / "lists" / "train.txt")


def test_imagenet100_queries_come_from_the_validation_folder(tmp_path):
    train_dir = folder_tree(str(tmp_path / "imagenet" / "train"), per_class=6)
    val_dir = folder_tree(str(tmp_path / "imagenet" / "val"), per_class=2)
    out = str(tmp_path / "lists")
    proc = run_python("-m", "scripts.lists", "make", "--folder", train_dir, "--queries_from",
                      val_dir, "--data-path", str(tmp_path / "imagenet"), "--list-dir", out,
                      "--preset", "imagenet100", "--train", "3")
    assert proc.returncode == 0, proc.stderr
    test = [line.rsplit(None, 3)[0] for line in lines(os.path.join(out, "test.txt"))]
    train = [line.rsplit(None, 3)[0] for line in lines(os.path.join(out, "train.txt"))]
    database = [line.rsplit(None, 3)[0] for line in lines(os.path.join(out, "database.txt"))]
    assert len(test) == 6 and all(p.startswith("val/") for p in test)
    assert len(train) == 9 and set(train) <= set(database) and len(database) == 18
    proc = run_python("-m", "scripts.lists", "make", "--folder", train_dir, "--list-dir", out,
                      "--preset", "imagenet100")
    assert_cli_error(proc, "--preset imagenet100 takes every query from --queries_from")


# ---------------------------------------------------------------- the check


def good_lists(tmp_path):
    root = folder_tree(str(tmp_path / "photos"))
    images = images_from_folder(root, root)
    make_lists(images, Protocol(1, 2, "rest+queries", per_class=True), 0,
               str(tmp_path / "lists"))
    return root, str(tmp_path / "lists")


def test_check_finds_every_kind_of_problem(tmp_path):
    root, list_dir = good_lists(tmp_path)
    train = lines(os.path.join(list_dir, "train.txt"))
    test = lines(os.path.join(list_dir, "test.txt"))
    (tmp_path / "photos" / "blue" / "broken.jpg").write_bytes(b"not a jpeg at all")
    train += [train[0],                                  # the same image twice
              test[0],                                   # a query used for training
              "blue/gone.jpg 1 0 0",                     # missing
              "blue/broken.jpg 1 0 0",                   # unreadable
              "../photos/blue/img 1.jpg 1 0 0",          # outside the root
              "green/img 2.jpg 0 0 0",                   # all-zero labels
              "green/img 4.jpg 0 1"]                     # a label short
    (tmp_path / "lists" / "train.txt").write_text("\n".join(train) + "\n")
    proc = run_python("-m", "scripts.lists", "check", "--list-dir", list_dir, "--data-path", root)
    error = assert_cli_error(proc, "the lists are not usable")
    report = json.load(open(os.path.join(list_dir, "check.json")))
    kinds = {p["kind"]: p for p in report["errors"] + report["warnings"]}
    assert {"label count", "forbidden overlap", "image missing", "image unreadable",
            "outside the root", "all-zero labels", "duplicate images",
            "conflicting labels"} <= set(kinds), sorted(kinds)
    assert f"{list_dir}/train.txt:{len(train)}: 2 labels, expected 3" in \
        kinds["label count"]["examples"][0]
    assert kinds["all-zero labels"]["severity"] == "warning"
    assert "lists usable: NO" in proc.stdout and "images per class:" in proc.stdout
    assert f"{list_dir}/train.txt:{len(train)}: 2 labels, expected 3" in error
    assert not report["usable"]


def test_check_passes_clean_lists_and_the_fingerprint_follows_the_split(tmp_path):
    root, list_dir = good_lists(tmp_path)
    proc = run_python("-m", "scripts.lists", "check", "--list-dir", list_dir, "--data-path", root,
                      "--json", str(tmp_path / "report.json"), "--decode")
    assert proc.returncode == 0, proc.stderr
    assert "lists usable: yes" in proc.stdout
    report = json.load(open(tmp_path / "report.json"))
    assert report["usable"] and report["num_class_from"] == "classes.txt"
    assert [report["splits"][s]["histogram"] for s in ("train", "test")] == [[2, 2, 2], [1, 1, 1]]
    database = os.path.join(list_dir, "database.txt")
    text = lines(database)
    with open(database, "w") as f:                        # reordered: the same split
        f.write("\n".join(reversed(text)) + "\n")
    assert check_lists(list_dir, root)["fingerprint"] == report["fingerprint"]
    with open(database, "w") as f:                        # one label changed: another split
        path, first, *rest = text[-1].rsplit(None, 3)
        f.write("\n".join(text[:-1] + [" ".join([path, str(1 - int(first)), *rest])]) + "\n")
    changed = check_lists(list_dir, root)
    assert changed["fingerprint"] != report["fingerprint"]
    assert changed["splits"]["train"]["fingerprint"] == report["splits"]["train"]["fingerprint"]


def test_split_fingerprint_ignores_order_and_dot_segments():
    a = [("x/a.jpg", (0, 1)), ("b.jpg", (1, 0))]
    assert split_fingerprint(a) == split_fingerprint(a[::-1])
    assert split_fingerprint(a) != split_fingerprint([("x/a.jpg", (1, 1)), ("b.jpg", (1, 0))])


def test_check_protocol_database_rule_and_decode(tmp_path):
    root, list_dir = good_lists(tmp_path)
    database = lines(os.path.join(list_dir, "database.txt"))
    train = lines(os.path.join(list_dir, "train.txt"))
    with open(os.path.join(list_dir, "database.txt"), "w") as f:
        f.write("\n".join(database + train[:1]) + "\n")   # COCO: no training image in the database
    report = check_lists(list_dir, root, protocol="coco")
    assert any(p["kind"] == "forbidden overlap" for p in report["errors"])
    assert any(p["kind"] == "size differs from the protocol" for p in report["warnings"])
    assert check_lists(list_dir, root, protocol="nuswide")["errors"][0]["kind"] == \
        "forbidden overlap"                                  # nuswide: queries not in the database
    # a truncated JPEG passes the header check and fails the full decode
    path = os.path.join(root, train[1].rsplit(None, 3)[0])
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    same = os.path.join(root, train[2].rsplit(None, 3)[0])
    open(os.path.join(root, "blue", "copy.jpg"), "wb").write(open(same, "rb").read())
    with open(os.path.join(list_dir, "database.txt"), "a") as f:
        f.write("blue/copy.jpg 1 0 0\n")
    assert not any(p["kind"] == "image unreadable" for p in check_lists(list_dir, root)["errors"])
    decoded = check_lists(list_dir, root, decode=True)
    assert any(p["kind"] == "image unreadable" for p in decoded["errors"])
    assert any(p["kind"] == "identical files" for p in decoded["warnings"])


def test_make_without_counts_is_one_error_line(tmp_path):
    root = folder_tree(str(tmp_path / "photos"), per_class=1)
    proc = run_python("-m", "scripts.lists", "make", "--folder", root, "--list-dir",
                      str(tmp_path / "lists"))
    assert_cli_error(proc, "give --preset, or --train with --test")


def test_out_of_range_counts_are_refused_before_any_work(tmp_path):
    proc = run_python("-m", "scripts.lists", "make", "--folder", str(tmp_path), "--list-dir",
                      str(tmp_path / "lists"), "--test", "0", "--train", "5")
    assert_cli_error(proc, "--test must be >= 1, got 0")
    assert not os.path.exists(tmp_path / "lists")


def test_every_numeric_flag_of_both_jobs_has_a_range():
    from scripts.lists import build_parser
    _, jobs = build_parser()
    for name, parser in jobs.items():
        for action in parser._actions:
            if action.type in (int, float):
                assert action.valid_range.describe() in action.help, (name, action.dest)


# ---------------------------------------------------------------- end to end


def test_training_on_lists_made_from_a_folder_tree(tmp_path):
    """make -> check -> a 1-epoch training run (in this process) -> predict."""
    from utils.training.config import parse_args
    from utils.training import engine
    root = folder_tree(str(tmp_path / "my photos"), per_class=8, size=RESIZE)
    list_dir = str(tmp_path / "lists")
    proc = run_python("-m", "scripts.lists", "make", "--folder", root, "--list-dir", list_dir,
                      "--test", "2", "--train", "4", "--per_class")
    assert proc.returncode == 0, proc.stderr
    assert "train with: --dataset custom" in proc.stdout
    proc = run_python("-m", "scripts.lists", "check", "--list-dir", list_dir, "--data-path", root)
    assert proc.returncode == 0, proc.stderr
    argv = ["--dataset", "custom", "--num_class", "3", "--data-path", root, "--list-dir",
            list_dir, "--bit", "16", "--crop_size", str(CROP), "--resize_size", str(RESIZE),
            "--backbone", "random", "--num_threads", str(THREADS), "--seed", "0", "-e", "1", "-bs", "4",
            "--output-dir", str(tmp_path / "output"), "--log_path", str(tmp_path / "logs"),
            *TINY]   # the lists are the point here, not the network
    state = engine.run(parse_args(argv))
    assert [h["epoch"] for h in state["history"]] == [1]
    assert 0.0 <= state["history"][0]["map"] <= 1.0
    query = os.path.join(root, "red car", "img 1.jpg")
    proc = run_tiny("predict.py", *TINY, "--bit", "16", "--dataset", "custom", "--num_class", "3",
                    "--data_path", root, "--list-dir", list_dir, "--crop_size", str(CROP),
                    "--resize_size", str(RESIZE), "--pretrained",
                    str(tmp_path / "output" / "model_best_16"), "--img", query,
                    "--save_path", str(tmp_path / "predict"), "--topk", "3",
                    "--num_threads", str(THREADS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "red car/img" in proc.stdout, proc.stdout
    assert_cli_error(run_python("predict.py", "--dataset", "custom", "--img", query),
                     "--dataset custom has no class count: pass --num_class")
