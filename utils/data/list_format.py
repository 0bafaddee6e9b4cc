"""The one rule of a list line, for every reader and writer of list files.

A line is ``<path> <c_1> … <c_C>``: **the labels are the last C
whitespace-separated fields, each 0 or 1, and the path is everything before
them**, so a path may contain spaces (``my photos/cat 1.jpg 0 1 0``). The
path is the line's text up to the labels, trimmed at both ends: two spaces
inside it stay two spaces.

Three paths cannot be written by this rule and are refused by the writers
(rename the file): a path that starts or ends with whitespace, one with a
line break, and one whose last field is a bare ``0`` or ``1`` (``a/b 1``),
which would read as one more label. That last case is also what keeps the
rule unambiguous: the label count of a line is the length of its run of
trailing 0/1 fields, so C can be read off any line, and a line with a label
too many or too few is reported as such, never taken as a path with a space.
"""
import logging
import os

import numpy as np

from utils.base.errors import UserError
from utils.base.io import atomic_write, atomic_write_all
from utils.base.text_files import read_lines

LABEL_VALUES = ("0", "1")


def label_count(line):
    """How many labels ``line`` holds: its trailing run of 0/1 fields (the
    first field is always path, never label)."""
    fields = line.split()
    count = 0
    for field in reversed(fields[1:]):
        if field not in LABEL_VALUES:
            break
        count += 1
    return count


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def split_line(line, num_class, where):
    """(path, labels [C] of 0/1 ints) of one non-blank list line; a malformed
    line is a UserError starting with ``where`` (``file:line``)."""
    count = label_count(line)
    fields = line.split()
    tail = fields[-num_class:] if len(fields) > num_class else []
    if count != num_class:
        # a non-0/1 number among the last C fields is a bad label value, not a short line
        if (tail and all(_is_number(v) for v in tail)
                and any(v not in LABEL_VALUES for v in tail)):
            raise UserError(f"{where}: labels must be 0 or 1, got {' '.join(tail)}")
        raise UserError(f"{where}: {count} labels, expected {num_class} "
                        "(check --num_class / --dataset)")
    path = line.strip().rsplit(None, num_class)[0].strip()
    return path, [int(v) for v in tail]


def check_utf8(text, what):
    """UserError unless ``text`` can be written to a UTF-8 list file: a file
    name in another encoding reaches Python with its bad bytes as lone
    surrogates (os.fsdecode), which no list line can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{what} {text!r} is not UTF-8 (a name saved in another encoding): list "
                        "files are UTF-8; rename it") from None


def check_writable_path(path):
    """UserError unless ``path`` reads back as itself under the rule above."""
    check_utf8(path, "image path")
    if not path or path != path.strip() or len(path.splitlines()) != 1:
        raise UserError(f"image path {path!r} starts or ends with whitespace or holds a line "
                        "break: list files cannot hold it; rename the file")
    if path.split()[-1] in LABEL_VALUES and len(path.split()) > 1:
        raise UserError(f"image path {path!r} ends with a field '0' or '1', which a list "
                        "line would read as a label: rename the file")


def format_line(path, labels):
    """The list line of one image (no line end)."""
    check_writable_path(path)
    return f"{path} {' '.join(str(int(v)) for v in labels)}"


def list_text(paths, labels):
    """The text of a list file (every line checked by ``format_line``)."""
    return "".join(format_line(p, row) + "\n" for p, row in zip(paths, labels))


def text_writer(text):
    """A ``write(tmp)`` for utils/base/io.py's atomic writes of UTF-8 ``text``."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return write


def write_list(list_file, paths, labels):
    """Write a list file atomically (a temp file renamed into place)."""
    atomic_write(list_file, text_writer(list_text(paths, labels)))


def write_lists(list_dir, splits, extra=None):
    """A data set's lists as one unit: {split: (paths, labels)} ->
    ``<list_dir>/<split>.txt``, and ``extra`` {file name: text} (classes.txt).
    Every line is checked before any file is written, and the files replace
    the old ones together (utils/base/io.py ``atomic_write_all``): a path
    the rule cannot hold never leaves a new train.txt beside an old test.txt."""
    texts = {os.path.join(list_dir, f"{split}.txt"): list_text(*entries)
             for split, entries in splits.items()}
    texts.update({os.path.join(list_dir, name): text for name, text in (extra or {}).items()})
    atomic_write_all({path: text_writer(text) for path, text in texts.items()})


def numbered_lines(list_file):
    """(line number, text) of the non-blank lines of a list file."""
    if not os.path.isfile(list_file):
        raise UserError(f"list file {list_file} not found (see docs/data.md)")
    # BOM, CRLF, UTF-16: utils/base/text_files.py
    return [(n, line) for n, line in enumerate(read_lines(list_file), 1) if line.strip()]


def parse_list(list_file, num_class):
    """Read a list file -> (relative paths, labels [n, C] float32).

    Any malformed line is a UserError naming the file and line number."""
    paths, labels = [], []
    for lineno, line in numbered_lines(list_file):
        path, row = split_line(line, num_class, f"{list_file}:{lineno}")
        paths.append(path)
        labels.append(row)
    if not paths:
        raise UserError(f"list file {list_file} is empty")
    labels = np.asarray(labels, dtype=np.float32).reshape(len(paths), num_class)
    warn_unlabelled(list_file, paths, labels)
    return paths, labels


def unlabelled_rows(labels):
    """Indices of all-zero label rows: images similar to no other image."""
    return np.flatnonzero(labels.sum(axis=1) == 0)


def warn_unlabelled(list_file, paths, labels):
    """Count all-zero label rows and say so (the first one named)."""
    empty = unlabelled_rows(labels)
    if len(empty):
        logging.getLogger("hashnet").warning(
            f"warning: {list_file}: {len(empty)} of {len(labels)} lines have all-zero labels "
            f"(first: {paths[empty[0]]}): those images are similar to no other image")


def list_num_class(list_file):
    """C as the first line of ``list_file`` holds it (readers without a
    --num_class: the rule makes it readable from any line)."""
    lines = numbered_lines(list_file)
    if not lines:
        raise UserError(f"list file {list_file} is empty")
    lineno, line = lines[0]
    count = label_count(line)
    if count == 0:
        raise UserError(f"{list_file}:{lineno}: no 0/1 labels at the end of the line")
    return count
