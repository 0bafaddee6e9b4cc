"""Check a set of list files (ours or anyone's) and fingerprint the split.

Reads ``train.txt``, ``test.txt`` and ``database.txt`` of a folder as
training would (utils/data/list_format.py), but reports every problem
instead of stopping at the first:

* errors (the lists are not usable): a list missing or empty, a malformed
  line, a line whose label count differs from the others' (or from
  --num_class / classes.txt), an image path outside the root, an image
  missing or unreadable, an image in two splits where the protocol forbids
  it (a query never is a training image; the protocol's database rule says
  the rest), one image with two different label rows;
* warnings: rows with all-zero labels (such a query has no relevant item:
  AP 0), an image twice in one list, split sizes other than the protocol's,
  and with ``decode`` identical files under different paths.

The fingerprint of a split is the sha256 of its sorted ``path<TAB>labels``
lines (paths normalised, ``./a//b`` = ``a/b``): the same images with the same
labels give the same fingerprint whatever the line order; the fingerprint
of the lists hashes the three. Compare it with the canonical lists' to know
that two copies hold one split.
"""
import collections
import concurrent.futures
import hashlib
import os
import posixpath

import numpy as np
from PIL import Image

from utils.base.errors import UserError
from utils.base.fingerprint import sha256_file
from utils.data.images import check_is_file, check_pixels, open_rgb
from utils.data.list_format import label_count, numbered_lines, split_line
from utils.data.list_sources import CLASSES_FILE, progress
from utils.data.splits import PROTOCOLS, SPLITS

EXAMPLES = 20          # messages kept per kind of problem
REPORT_FILE = "check.json"   # the report's default name, in the lists' folder
# the overlaps a protocol's database rule forbids, besides train & test
FORBIDDEN = {"rest": {("train", "database"), ("test", "database")},
             "rest+train": {("test", "database")}, "rest+queries": {("train", "database")},
             "train": {("test", "database")}}
PAIRS = (("train", "test"), ("train", "database"), ("test", "database"))


class Problems:
    """Problems by kind: severity, count, the first EXAMPLES messages."""

    def __init__(self):
        self.kinds = collections.OrderedDict()

    def add(self, severity, kind, message):
        entry = self.kinds.setdefault(kind, {"severity": severity, "kind": kind, "count": 0,
                                             "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(message)

    def of(self, severity):
        return [k for k in self.kinds.values() if k["severity"] == severity]


def normalised(path):
    return posixpath.normpath(path)


def read_classes(list_dir):
    path = os.path.join(list_dir, CLASSES_FILE)
    if not os.path.isfile(path):
        return None
    return [line.strip() for _, line in numbered_lines(path)]


def choose_num_class(files, num_class, classes):
    """C and where it comes from: --num_class, classes.txt, or the first line
    of the first list (the list rule makes any line tell)."""
    if num_class:
        return num_class, "--num_class"
    if classes:
        return len(classes), CLASSES_FILE
    for list_file in files.values():
        if os.path.isfile(list_file):
            lines = numbered_lines(list_file)
            if lines and label_count(lines[0][1]):
                return label_count(lines[0][1]), f"{list_file}:{lines[0][0]}"
    raise UserError("no list with a readable first line: pass --num_class")


def read_split(list_file, num_class, problems):
    """[(path, labels tuple, "file:line")] of the lines that parse; the
    others become problems."""
    if not os.path.isfile(list_file):
        problems.add("error", "list missing", f"{list_file} not found")
        return []
    entries = []
    for lineno, line in numbered_lines(list_file):
        where = f"{list_file}:{lineno}"
        try:
            path, labels = split_line(line, num_class, where)
        except UserError as err:
            kind = "label count" if "labels, expected" in str(err) else "malformed line"
            problems.add("error", kind, str(err))
            continue
        entries.append((normalised(path), tuple(labels), where))
    if not entries:
        problems.add("error", "list empty", f"{list_file} has no usable line")
    return entries


def split_stats(entries, num_class):
    labels = np.asarray([e[1] for e in entries], np.int64).reshape(len(entries), num_class)
    counts = collections.Counter(e[0] for e in entries)
    return {"images": len(entries), "unique_images": len(counts),
            "labels_per_image": float(labels.sum(1).mean()) if len(entries) else 0.0,
            "all_zero_rows": int((labels.sum(1) == 0).sum()),
            "duplicate_paths": sum(n - 1 for n in counts.values() if n > 1),
            "histogram": labels.sum(0).tolist(), "fingerprint": split_fingerprint(entries)}


def split_fingerprint(entries):
    """sha256 of the sorted ``path<TAB>labels`` lines (see the module docstring)."""
    lines = sorted(f"{path}\t{''.join(map(str, labels))}\n" for path, labels, *_ in entries)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def lists_fingerprint(split_fingerprints):
    text = "".join(f"{s}:{split_fingerprints[s]}\n" for s in SPLITS)
    return hashlib.sha256(text.encode()).hexdigest()


def escapes_root(path):
    return path == ".." or path.startswith("../") or posixpath.isabs(path)


def image_problem(path, decode):
    """("missing" | "unreadable", message) of one image, or None."""
    if not os.path.exists(path):
        return "image missing", f"image {path} not found"
    try:
        check_is_file(path)
        if decode:
            open_rgb(path)
        else:
            with Image.open(path) as img:   # the header: format and size
                check_pixels(path, *img.size)
    except UserError as err:
        return "image unreadable", str(err)
    except Exception as err:   # Pillow: not an image it knows
        return "image unreadable", f"image {path} is unreadable ({err})"
    return None


def check_images(paths, root, decode, workers, problems, where):
    """Every image once: outside the root, missing, unreadable (header, or
    a full decode with ``decode``)."""
    inside = []
    for path in paths:
        if escapes_root(path):
            problems.add("error", "outside the root", f"{where[path]}: {path} is outside "
                         f"the root {root}")
        else:
            inside.append(path)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        found = pool.map(lambda p: image_problem(os.path.join(root, p), decode), inside)
        for path, problem in zip(inside, progress(found, total=len(inside), unit=" images",
                                                 desc="checking images")):
            if problem:
                problems.add("error", problem[0], f"{where[path]}: {problem[1]}")
    return inside


def identical_files(paths, root, problems):
    """Files with the same bytes under different paths (hashes only files
    whose size another file shares)."""
    by_size = collections.defaultdict(list)
    for path in paths:
        full = os.path.join(root, path)
        if os.path.isfile(full):
            by_size[os.path.getsize(full)].append(path)
    by_digest = collections.defaultdict(list)
    for group in progress([g for g in by_size.values() if len(g) > 1], desc="hashing"):
        for path in group:
            by_digest[sha256_file(os.path.join(root, path))].append(path)
    for same in by_digest.values():
        if len(same) > 1:
            problems.add("warning", "identical files", " = ".join(sorted(same)))


def check_overlaps(entries, protocol, problems):
    """Counts of shared images per pair of splits; forbidden ones are errors;
    an image with two label rows is an error."""
    paths = {s: {e[0]: e[2] for e in reversed(entries[s])} for s in SPLITS}   # path -> first line
    forbidden = {("train", "test")} | FORBIDDEN.get(protocol.database if protocol else "", set())
    overlaps = {}
    for a, b in PAIRS:
        shared = paths[a].keys() & paths[b].keys()
        overlaps[f"{a}&{b}"] = len(shared)
        if shared and (a, b) in forbidden:
            first = min(shared)
            problems.add("error", "forbidden overlap",
                         f"{len(shared):,} images are in both {a} and {b}, e.g. {first} "
                         f"({paths[a][first]}, {paths[b][first]})"
                         + ("" if (a, b) == ("train", "test") else ": the protocol forbids it"))
    labels_of = collections.defaultdict(set)
    where = {}
    for split in SPLITS:
        for path, labels, at in entries[split]:
            labels_of[path].add(labels)
            where.setdefault(path, at)
    for path, rows in labels_of.items():
        if len(rows) > 1:
            problems.add("error", "conflicting labels", f"{where[path]}: {path} has "
                         f"{len(rows)} different label rows in the lists")
    return overlaps, where


def check_sizes(stats, protocol, num_class, problems):
    """Split sizes against the protocol's counts (warnings)."""
    for split, wanted in (("test", protocol.test), ("train", protocol.train)):
        if wanted is None:
            continue
        expected = wanted * num_class if protocol.per_class else wanted
        if stats[split]["images"] != expected:
            problems.add("warning", "size differs from the protocol",
                         f"{split}: {stats[split]['images']:,} images, the protocol has "
                         f"{expected:,}")


def check_lists(list_dir, root, num_class=None, protocol=None, decode=False, workers=4):
    """The report (a JSON-ready dict) of ``list_dir``'s lists against images
    under ``root``; ``protocol``: a name of PROTOCOLS or None."""
    files = {s: os.path.join(list_dir, f"{s}.txt") for s in SPLITS}
    classes = read_classes(list_dir)
    num_class, num_class_from = choose_num_class(files, num_class, classes)
    rules = PROTOCOLS[protocol] if protocol else None
    problems = Problems()
    if classes and len(classes) != num_class:
        problems.add("error", "label count", f"{CLASSES_FILE} names {len(classes)} classes, "
                     f"the lists have {num_class} labels")
    entries = {s: read_split(files[s], num_class, problems) for s in SPLITS}
    stats = {s: dict(split_stats(entries[s], num_class), file=files[s]) for s in SPLITS}
    for split in SPLITS:
        if stats[split]["all_zero_rows"]:
            problems.add("warning", "all-zero labels", f"{split}: {stats[split]['all_zero_rows']:,}"
                         " rows without any label")
        if stats[split]["duplicate_paths"]:
            problems.add("warning", "duplicate images", f"{split}: "
                         f"{stats[split]['duplicate_paths']:,} lines repeat an image")
    overlaps, where = check_overlaps(entries, rules, problems)
    checked = check_images(sorted(where), root, decode, workers, problems, where)
    if decode:
        identical_files(checked, root, problems)
    if rules:
        check_sizes(stats, rules, num_class, problems)
    errors = problems.of("error")
    return {"list_dir": list_dir, "root": root, "num_class": num_class,
            "num_class_from": num_class_from, "classes": classes, "protocol": protocol,
            "decoded": decode, "splits": stats, "overlaps": overlaps,
            "fingerprint": lists_fingerprint({s: stats[s]["fingerprint"] for s in SPLITS}),
            "errors": errors, "warnings": problems.of("warning"), "usable": not errors}


# ---------------------------------------------------------------- the printed table
def format_report(report):
    """The report as the check prints it."""
    splits = report["splits"]
    out = [f"lists {report['list_dir']} (images under {report['root']}): "
           f"{report['num_class']} labels (from {report['num_class_from']})"
           + (f", protocol {report['protocol']}" if report["protocol"] else "")]
    header = ("split", "images", "labels/img", "all-zero", "repeated", "fingerprint")
    rows = [(s, f"{st['images']:,}", f"{st['labels_per_image']:.2f}",
             f"{st['all_zero_rows']:,}", f"{st['duplicate_paths']:,}", st["fingerprint"][:16])
            for s, st in splits.items()]
    out += table(header, rows)
    out.append("shared images: " + ", ".join(f"{k} {v:,}" for k, v in report["overlaps"].items()))
    out.append(f"split fingerprint: {report['fingerprint'][:16]} (same images and labels -> "
               "same fingerprint, line order ignored)")
    names = report["classes"] or [f"class {i}" for i in range(report["num_class"])]
    out.append("images per class:")
    out += table(("class",) + SPLITS, [(n,) + tuple(f"{splits[s]['histogram'][i]:,}"
                                                     if splits[s]["histogram"] else "0"
                                                     for s in SPLITS)
                                        for i, n in enumerate(names)])
    for problem in report["errors"] + report["warnings"]:
        more = problem["count"] - len(problem["examples"][:3])
        out.append(f"{problem['severity']}: {problem['kind']} ({problem['count']:,}): "
                   + "; ".join(problem["examples"][:3]) + (f"; … {more:,} more" if more else ""))
    out.append("lists usable: " + ("yes" if report["usable"] else "NO"))
    return "\n".join(out)


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths))) for r in [header, *rows]]


def first_problems(report, count=3):
    """One line naming the first errors (the exit-2 message)."""
    shown = [e["examples"][0] for e in report["errors"][:count]]
    total = sum(e["count"] for e in report["errors"])
    return f"the lists are not usable ({total:,} problems): " + "; ".join(shown)
