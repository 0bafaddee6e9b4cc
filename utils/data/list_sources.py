"""Labelled images from a user's own data, and the list files made from them.

Three sources, each giving paths relative to a root (the ``--data-path`` of
training) and a 0/1 label matrix over named classes:

* a folder with one sub-folder per class (single-label): the classes are the
  sub-folders in sorted order; images anywhere below a class folder count
  (by extension, IMAGE_EXTENSIONS); hidden files and folders are skipped;
* a CSV or TSV with a header row, the image path in the first column, then
  either 0/1 columns named by the header (multi-label), or cells holding
  class names, several in one cell separated by ``label_sep`` (several rows
  of one path add up); the classes are then the names in sorted order;
* COCO's official ``instances_<name>.json`` files: a multi-hot vector over the
  categories in category-id order (the ids have gaps: 1..90 for 80
  categories); the images of ``instances_<name>.json`` live in ``<name>/``
  under the root, as COCO unpacks. Crowd annotations (``iscrowd: 1``) count
  like any other (a crowd of people shows people), unless ``ignore_crowd``.

Every source is sorted by path before the split is drawn, so the split
depends on the images and labels only, not on the order a folder listing
or a CSV happens to have.
"""
import csv
import dataclasses
import os
import posixpath
import re
import sys

import numpy as np
from tqdm import tqdm

from utils.base.errors import UserError, one_line
from utils.base.text_files import read_json, read_lines
from utils.data.list_format import check_utf8, check_writable_path, write_lists
from utils.data.splits import SPLITS, draw_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm")
CLASSES_FILE = "classes.txt"


@dataclasses.dataclass
class LabelledImages:
    """``paths`` relative to the root (POSIX), ``labels`` uint8 [n, C] over
    ``classes``; ``notes``: what was skipped, for the user to read."""
    paths: list
    labels: np.ndarray
    classes: list
    notes: list = dataclasses.field(default_factory=list)


def progress(iterable=None, **kwargs):
    """A progress bar on stderr when it is a terminal (quiet in logs and tests)."""
    return tqdm(iterable, leave=False, disable=not sys.stderr.isatty(), **kwargs)


def relative_to_root(path, root, where):
    """``path`` (relative to ``root``, or absolute inside it) as a normalised
    POSIX path relative to ``root``; UserError if it escapes the root."""
    rel = os.path.relpath(path, root) if os.path.isabs(path) else path
    rel = posixpath.normpath(rel.replace(os.sep, "/"))
    if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        raise UserError(f"{where}: image {path} is outside the root {root} (set --data-path)")
    check_writable_path(rel)
    return rel


def require_files(paths, root, where_of):
    """UserError naming the first missing images, if any is not a file under root."""
    missing = [i for i, p in enumerate(progress(paths, desc="checking files", unit=" images"))
               if not os.path.isfile(os.path.join(root, p))]
    if missing:
        examples = "; ".join(f"{where_of(i)}: {os.path.join(root, paths[i])}" for i in missing[:3])
        raise UserError(f"{len(missing):,} of {len(paths):,} images not found under {root}, "
                        f"e.g. {examples} (check --data-path)")


# ---------------------------------------------------------------- a folder per class
def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def images_below(folder, bar):
    """Image files anywhere below ``folder`` (absolute paths), sorted; hidden
    folders skipped."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if is_image_file(name):
                found.append(os.path.join(parent, name))
                bar.update(1)
    return found


def images_from_folder(folder, root, classes=None):
    """One sub-folder per class. ``classes``: the class list to label with
    (a query folder labelled like its training folder); default: the
    sub-folders, sorted."""
    if not os.path.isdir(folder):
        raise UserError(f"folder {folder} not found")
    folder, root = os.path.abspath(folder), os.path.abspath(root)
    subfolders = sorted(d for d in os.listdir(folder)
                        if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
    if not subfolders:
        raise UserError(f"folder {folder} has no sub-folders: put each class's images in "
                        "a sub-folder named after the class")
    classes = list(classes) if classes is not None else subfolders
    unknown = sorted(set(subfolders) - set(classes))
    if unknown:
        raise UserError(f"{folder}: class folders {', '.join(unknown[:5])} are not classes of "
                        f"the training source ({len(classes)} classes)")
    paths, ids, notes = [], [], []
    with progress(desc=f"scanning {folder}", unit=" images") as bar:
        for name in subfolders:
            files = images_below(os.path.join(folder, name), bar)
            if not files:
                notes.append(f"class folder {name} holds no image: it gets no images")
            paths += [relative_to_root(f, root, folder) for f in files]
            ids += [classes.index(name)] * len(files)
    loose = [n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))]
    if loose:
        notes.append(f"{len(loose)} files directly in {folder} are in no class folder: "
                     f"skipped (e.g. {sorted(loose)[0]})")
    if not paths:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) below {folder}")
    labels = np.zeros((len(paths), len(classes)), np.uint8)
    labels[np.arange(len(paths)), ids] = 1
    return LabelledImages(paths, labels, classes, notes)


# ---------------------------------------------------------------- CSV / TSV
def csv_rows(csv_file):
    """(line number, cells) of the non-blank rows; tab-separated when the
    header holds a tab, else comma-separated. A row is one line: a quoted
    cell may hold the delimiter, not a line break."""
    if not os.path.isfile(csv_file):
        raise UserError(f"CSV file {csv_file} not found")
    lines = read_lines(csv_file)
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise UserError(f"CSV file {csv_file} is empty")
    delimiter = "\t" if "\t" in numbered[0][1] else ","
    rows = []
    for n, line in numbered:
        try:
            cells = next(csv.reader([line], delimiter=delimiter, strict=True))
        except csv.Error as err:
            raise UserError(f"{csv_file}:{n}: not a {'TSV' if delimiter == chr(9) else 'CSV'} "
                            f"row ({err}): quote cells that hold the delimiter, on one line")
        rows.append((n, [c.strip() for c in cells]))
    return rows


def is_zero_one_table(rows):
    return all(all(c in ("0", "1") for c in cells[1:]) for _, cells in rows)


def is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def check_numeric_labels(csv_file, header, rows):
    """A table whose label cells are all numbers is a 0/1 table: refuse
    one that is not (decimals such as 1.0, counts, -1, an empty cell), rather
    than reading its numbers as class names. One label column of whole
    numbers stays a column of class names (ids)."""
    numeric = [c for _, cells in rows for c in cells[1:] if c]
    if not numeric or not all(is_number(c) for c in numeric):
        return
    if len(header) == 2 and all(c.isdigit() for c in numeric):
        return
    for lineno, cells in rows:
        bad = next((c for c in cells[1:] if c not in ("0", "1")), None)
        if bad is not None:
            raise UserError(f"{csv_file}:{lineno}: labels must be 0 or 1, got {bad!r} (a table of "
                            "numbers is read as one 0/1 column per class; write class names as "
                            "names)")


def images_from_csv(csv_file, root, label_sep=";"):
    """Path in the first column; 0/1 columns named by the header, or class
    names (``label_sep`` between several in one cell)."""
    (_, header), *rows = csv_rows(csv_file)
    if len(header) < 2 or not rows:
        raise UserError(f"{csv_file}: needs a header row (path, then label columns) and at "
                        "least one image row")
    check_numeric_labels(csv_file, header, rows)
    where = {}   # path -> "file:line" of its first row
    if is_zero_one_table(rows):
        classes, table = header[1:], {}
        for lineno, cells in rows:
            if len(cells) != len(header):
                raise UserError(f"{csv_file}:{lineno}: {len(cells)} cells, the header has "
                                f"{len(header)}")
            path = relative_to_root(cells[0], root, f"{csv_file}:{lineno}")
            if path in table:
                raise UserError(f"{csv_file}:{lineno}: {path} again (first at {where[path]})")
            where[path], table[path] = f"{csv_file}:{lineno}", [int(c) for c in cells[1:]]
        paths = list(table)
        labels = np.asarray([table[p] for p in paths], np.uint8).reshape(len(paths), len(classes))
    else:
        names = {}
        for lineno, cells in rows:
            path = relative_to_root(cells[0], root, f"{csv_file}:{lineno}")
            where.setdefault(path, f"{csv_file}:{lineno}")
            found = names.setdefault(path, set())
            for cell in cells[1:]:
                found.update(n.strip() for n in cell.split(label_sep) if n.strip())
        classes = sorted(set().union(*names.values()))
        if not classes:
            raise UserError(f"{csv_file}: no class names in the label columns")
        paths = list(names)
        labels = np.zeros((len(paths), len(classes)), np.uint8)
        column = {c: i for i, c in enumerate(classes)}
        for row, path in enumerate(paths):
            labels[row, [column[n] for n in names[path]]] = 1
    require_files(paths, root, lambda i: where[paths[i]])
    return LabelledImages(paths, labels, classes)


# ---------------------------------------------------------------- COCO
def coco_image_folder(json_file):
    """``instances_train2014.json`` -> ``train2014`` (where COCO unpacks its images)."""
    m = re.fullmatch(r"instances_(.+)\.json", os.path.basename(json_file))
    if not m:
        raise UserError(f"{json_file}: expected COCO's instances_<name>.json (its images in "
                        "<root>/<name>/); rename the file after its image folder")
    return m.group(1)


def load_coco(json_file):
    """The images, annotations and categories of a COCO instances file,
    each record checked for the fields and types the lists need."""
    if not os.path.isfile(json_file):
        raise UserError(f"COCO annotation file {json_file} not found")
    try:
        data = read_json(json_file)
    except ValueError as err:
        raise UserError(f"{json_file} is not valid JSON ({one_line(err)})")
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise UserError(f"{json_file} has no list of {', '.join(missing)}: not a COCO instances "
                        "file")
    check_records(json_file, "images", data["images"], {"id": int, "file_name": str})
    check_records(json_file, "annotations", data["annotations"],
                  {"image_id": int, "category_id": int})
    check_records(json_file, "categories", data["categories"], {"id": int, "name": str})
    if not data["categories"]:
        raise UserError(f"{json_file} lists no categories: not a COCO instances file")
    for kind, key in (("images", "id"), ("images", "file_name"), ("categories", "id"),
                      ("categories", "name")):
        check_unique(json_file, kind, key, data[kind])
    return data


def check_records(json_file, kind, records, fields):
    """UserError naming the first record of ``kind`` that is not an object
    with ``fields`` {name: type} (a bool is not an int here)."""
    for i, record in enumerate(records):
        bad = [name for name, type_ in fields.items() if not isinstance(record, dict)
               or type(record.get(name)) is not type_]
        if bad:
            raise UserError(f"{json_file}: {kind}[{i}] has no {' / '.join(bad)} of type "
                            f"{' / '.join(fields[n].__name__ for n in bad)}: not a COCO "
                            "instances file")


def check_unique(json_file, kind, key, records):
    """One record per ``key`` value: an image file under two ids would
    otherwise be two images (and could land in two splits)."""
    first = {}
    for i, record in enumerate(records):
        value = record[key]
        if value in first:
            raise UserError(f"{json_file}: {kind}[{i}] has the {key} {value!r} of "
                            f"{kind}[{first[value]}]: each must be listed once")
        first[value] = i


def coco_labels(data, json_file, column, ignore_crowd):
    """Multi-hot rows of ``data["images"]`` in their order."""
    row_of = {img["id"]: i for i, img in enumerate(data["images"])}
    labels = np.zeros((len(row_of), len(column)), np.uint8)
    for ann in progress(data["annotations"], desc=f"annotations of {os.path.basename(json_file)}",
                        unit=" annotations"):
        if ignore_crowd and ann.get("iscrowd", 0):
            continue
        if ann["image_id"] not in row_of or ann["category_id"] not in column:
            raise UserError(f"{json_file}: annotation {str(ann.get('id'))[:40]} names image "
                            f"{ann['image_id']} / category {ann['category_id']}, which the "
                            "file does not list")
        labels[row_of[ann["image_id"]], column[ann["category_id"]]] = 1
    return labels


def images_from_coco(json_files, root, ignore_crowd=False):
    """COCO instances files (e.g. train2014 and val2014 together)."""
    categories, paths, blocks, wheres = None, [], [], []
    for json_file in json_files:
        folder = coco_image_folder(json_file)
        data = load_coco(json_file)
        cats = sorted((c["id"], c["name"]) for c in data["categories"])
        if categories is None:
            categories = cats
        elif cats != categories:
            raise UserError(f"{json_file}: its categories differ from those of {json_files[0]}")
        column = {cid: i for i, (cid, _) in enumerate(categories)}
        blocks.append(coco_labels(data, json_file, column, ignore_crowd))
        paths += [relative_to_root(f"{folder}/{img['file_name']}", root, json_file)
                  for img in data["images"]]
        wheres += [f"{json_file}: image id {img['id']}" for img in data["images"]]
    check_one_path_per_image(paths, wheres)
    require_files(paths, root, wheres.__getitem__)
    labels = np.concatenate(blocks)
    crowd = "crowd annotations ignored" if ignore_crowd else "crowd annotations counted"
    return LabelledImages(paths, labels, [name for _, name in categories],
                          [f"{len(categories)} COCO categories (ids {categories[0][0]}.."
                           f"{categories[-1][0]}, in id order); {crowd}"])


def check_one_path_per_image(paths, wheres):
    """File names that normalise to one path (``a.jpg``, ``./a.jpg``) are one image."""
    first = {}
    for i, path in enumerate(paths):
        if path in first:
            raise UserError(f"{wheres[i]} is the file {path} of {wheres[first[path]]}: each "
                            "image must be listed once")
        first[path] = i


def default_root(kind, source):
    """Where list paths start when --root is not given: the folder itself; the
    CSV's folder; for COCO the folder above ``annotations/``."""
    if kind == "folder":
        return source
    if kind == "csv":
        return os.path.dirname(os.path.abspath(source))
    folder = os.path.dirname(os.path.abspath(source[0]))
    return os.path.dirname(folder) if os.path.basename(folder) == "annotations" else folder


# ---------------------------------------------------------------- the lists
def drop_unlabelled(images, mask=None):
    """(images without all-zero rows, with a note; ``mask`` kept to their rows)."""
    keep = images.labels.any(axis=1)
    dropped = int((~keep).sum())
    notes = images.notes + ([f"{dropped:,} images without any label dropped"] if dropped else [])
    kept = LabelledImages([p for p, k in zip(images.paths, keep) if k], images.labels[keep],
                          images.classes, notes)
    return kept, (None if mask is None else mask[keep])


def with_queries(images, queries):
    """One pool of ``images`` then ``queries``; returns (pool, is_query mask)."""
    overlap = set(images.paths) & set(queries.paths)
    if overlap:
        raise UserError(f"{len(overlap):,} images are in both sources, e.g. {min(overlap)}")
    pool = LabelledImages(images.paths + queries.paths,
                          np.concatenate([images.labels, queries.labels]), images.classes,
                          images.notes + queries.notes)
    return pool, np.r_[np.zeros(len(images.paths), bool), np.ones(len(queries.paths), bool)]


def check_class_names(classes):
    """classes.txt holds one name a line: refuse what it cannot hold."""
    for name in classes:
        check_utf8(name, "class name")
        if not name.strip() or len(name.splitlines()) != 1:
            raise UserError(f"class name {name!r} is empty or holds a line break")


def make_lists(images, protocol, seed, out_dir, queries=None):
    """Draw the split and write ``out_dir/{train,test,database}.txt`` and
    ``classes.txt``; returns {split: (paths, labels)} and the notes."""
    check_class_names(images.classes)
    is_query = None
    if queries is not None:
        images, is_query = with_queries(images, queries)
    order = sorted(range(len(images.paths)), key=images.paths.__getitem__)
    images = LabelledImages([images.paths[i] for i in order], images.labels[order],
                            images.classes, images.notes)
    is_query = None if is_query is None else is_query[order]
    if protocol.unlabelled == "drop":
        images, is_query = drop_unlabelled(images, is_query)
    parts = draw_split(images.labels, protocol, seed, is_query, images.classes)
    made = {split: ([images.paths[i] for i in idx], images.labels[idx])
            for split, idx in parts.items()}
    write_lists(out_dir, {split: made[split] for split in SPLITS},
                {CLASSES_FILE: "".join(f"{name}\n" for name in images.classes)})
    return made, images.notes
