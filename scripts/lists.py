"""List files for your own images: make them, check them (yours or anyone's).

    python -m scripts.lists make --folder datasets/mine --list-dir data/mine --preset cifar10
    python -m scripts.lists make --csv labels.csv --list-dir data/mine --test 500 --train 2000
    python -m scripts.lists make --coco annotations/instances_train2014.json \\
        annotations/instances_val2014.json --list-dir data/coco_made --preset coco
    python -m scripts.lists check --list-dir data/mine --data-path datasets/mine

``make`` writes train/test/database.txt and classes.txt into --list-dir, with
image paths relative to --data-path (the root training reads them from);
the library is utils/data/list_sources.py (sources), utils/data/splits.py
(protocols and the seeded draw) and utils/data/list_format.py (the line
rule: the labels are the last C fields, so paths may hold spaces).
``check`` prints a table, writes its JSON report and exits 2 when the lists
are not usable (utils/data/list_check.py).
"""
import argparse
import dataclasses
import os
import shlex
import sys

from utils.base.errors import UserError, run_cli
from utils.base.flags import AT_LEAST_1, NUM_CLASS, SEED, Range, add, check_ranges, machine_cores
from utils.base.io import atomic_write_json, ensure_writable_dir
from utils.data.list_check import (REPORT_FILE, check_lists, first_problems, format_report,
                                   lists_fingerprint, split_fingerprint)
from utils.data.list_sources import (CLASSES_FILE, default_root, images_from_coco, images_from_csv,
                                     images_from_folder, make_lists)
from utils.data.splits import SPLITS
from utils.data.splits import DATABASES, PROTOCOLS, Protocol

CHECK_WORKERS = Range(low=1, high=4 * machine_cores(), high_note="4 x this machine's cores")


def add_make_flags(p):
    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="a folder with one sub-folder of images per class")
    source.add_argument("--csv", help="a CSV/TSV with a header: path, then 0/1 columns named "
                        "by the header or cells of class names")
    source.add_argument("--coco", nargs="+", metavar="JSON",
                        help="COCO instances_<name>.json files (images in <root>/<name>/)")
    a("--list-dir", "--list_dir", dest="list_dir", required=True,
      help="where train/test/database.txt and classes.txt go")
    a("--data-path", "--data_path", "--root", dest="root", default=None,
      help="root the list paths are relative to, training's --data-path (default: --folder; "
           "the CSV's folder; for COCO the folder above annotations/)")
    a("--preset", choices=sorted(PROTOCOLS), help="a HashNet protocol (docs/data.md: Your own images)")
    a("--test", type=int, valid=AT_LEAST_1, help="queries to draw (per class with --per_class)")
    a("--train", type=int, valid=AT_LEAST_1, help="training images to draw")
    a("--per_class", action="store_true", help="--test/--train are per class (single-label)")
    a("--database", choices=sorted(DATABASES),
      help="what the database holds: " + "; ".join(f"{k}: {v}" for k, v in DATABASES.items())
      + " (default: the preset's, else rest+queries as COCO)")
    a("--queries_from", metavar="FOLDER_OR_CSV",
      help="every image of this second source is a query (imagenet100: the validation images)")
    a("--unlabelled", choices=["keep", "drop"],
      help="images without any label (default: the preset's, else drop)")
    a("--split_seed", type=int, default=0, valid=SEED, help="seed of the draw")
    a("--label_sep", default=";", help="between class names in one CSV cell")
    a("--ignore_crowd", action="store_true",
      help="COCO: leave out crowd annotations (iscrowd 1); by default they count")


def add_check_flags(p):
    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--list-dir", "--list_dir", dest="list_dir", required=True,
      help="folder of train/test/database.txt (and classes.txt, if any)")
    a("--data-path", "--data_path", dest="root", required=True,
      help="root the list paths are relative to")
    a("--num_class", type=int, valid=NUM_CLASS,
      help="labels per line (default: classes.txt, else the first line of train.txt)")
    a("--protocol", choices=sorted(PROTOCOLS),
      help="also check the protocol's database rule and split sizes")
    a("--decode", action="store_true",
      help="decode every image fully (finds truncated files) and look for identical files")
    a("--workers", type=int, default=min(4, machine_cores()), valid=CHECK_WORKERS,
      help="threads reading images")
    a("--json", default=None, help="the report (default <list-dir>/check.json)")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scripts.lists", description=__doc__.splitlines()[0])
    jobs = p.add_subparsers(dest="job", required=True)
    add_make_flags(jobs.add_parser("make", help="make lists from a folder, a CSV or COCO JSON"))
    add_check_flags(jobs.add_parser("check", help="check lists and fingerprint the split"))
    for sub in jobs.choices.values():
        sub.add_argument("--debug", action="store_true", help="show tracebacks")
    return p, jobs.choices


def protocol_of(args):
    """The preset, with any count or rule given on the command line instead."""
    given = {k: v for k, v in (("test", args.test), ("train", args.train),
                               ("database", args.database), ("unlabelled", args.unlabelled))
             if v is not None}
    if args.per_class:
        given["per_class"] = True
    if args.preset:
        protocol = dataclasses.replace(PROTOCOLS[args.preset], **given)
    elif "train" in given and ("test" in given or args.queries_from):
        protocol = Protocol(**dict(dict(test=None, database="rest+queries"), **given))
    else:
        raise UserError("give --preset, or --train with --test (or with --queries_from)")
    if args.queries_from and "test" in given:
        raise UserError("--test and --queries_from both give the queries: keep one")
    if args.queries_from:
        protocol = dataclasses.replace(protocol, test=None)
    elif protocol.test is None:
        raise UserError(f"--preset {args.preset} takes every query from --queries_from "
                        "(e.g. the validation folder, one sub-folder per class)")
    return protocol


def read_source(args, root):
    if args.folder:
        return images_from_folder(args.folder, root)
    if args.csv:
        return images_from_csv(args.csv, root, args.label_sep)
    return images_from_coco(args.coco, root, args.ignore_crowd)


def read_queries(args, root, classes):
    if not args.queries_from:
        return None
    if os.path.isdir(args.queries_from):
        return images_from_folder(args.queries_from, root, classes)
    queries = images_from_csv(args.queries_from, root, args.label_sep)
    if queries.classes != classes:
        raise UserError(f"{args.queries_from}: its classes differ from the source's")
    return queries


def make(args):
    protocol = protocol_of(args)
    ensure_writable_dir(args.list_dir, "--list-dir")
    kind = "folder" if args.folder else "csv" if args.csv else "coco"
    root = args.root or default_root(kind, getattr(args, kind))
    images = read_source(args, root)
    queries = read_queries(args, root, images.classes)
    made, notes = make_lists(images, protocol, args.split_seed, args.list_dir, queries)
    drop_stale_report(args.list_dir)
    extra = f" + {len(queries.paths):,} queries" if queries else ""
    print(f"source ({kind}): {len(images.classes)} classes, {len(images.paths):,} images{extra}, "
          f"paths relative to {root}")
    for note in notes:
        print(f"note: {note}")
    print(f"protocol: {protocol.describe()}; split seed {args.split_seed}")
    fingerprints = {}
    for split in SPLITS:
        paths, labels = made[split]
        fingerprints[split] = split_fingerprint(list(zip(paths, map(tuple, labels.tolist()))))
        print(f"{os.path.join(args.list_dir, split + '.txt')}: {len(paths):,} images")
    print(f"{os.path.join(args.list_dir, CLASSES_FILE)}: {len(images.classes)} classes")
    print(f"split fingerprint: {lists_fingerprint(fingerprints)[:16]}")
    print(f"train with: --dataset custom --list-dir {shlex.quote(args.list_dir)} "
          f"--data-path {shlex.quote(root)} --num_class {len(images.classes)}")


def drop_stale_report(list_dir):
    """The check report of the lists just replaced describes lists that are gone."""
    report = os.path.join(list_dir, REPORT_FILE)
    if os.path.isfile(report) and not os.path.islink(report):
        os.remove(report)
        print(f"removed {report}: it reported on the lists these replace")


def check(args):
    for flag, folder in (("--list-dir", args.list_dir), ("--data-path", args.root)):
        if not os.path.isdir(folder):
            raise UserError(f"{flag} {folder} not found")
    json_path = args.json or os.path.join(args.list_dir, REPORT_FILE)
    ensure_writable_dir(os.path.dirname(os.path.abspath(json_path)), "--json")
    report = check_lists(args.list_dir, args.root, args.num_class, args.protocol, args.decode,
                         args.workers)
    print(format_report(report))
    atomic_write_json(report, json_path)
    print(f"report: {json_path}")
    if not report["usable"]:
        raise UserError(first_problems(report))


def main(argv):
    parser, jobs = build_parser()
    args = parser.parse_args(argv)
    check_ranges(jobs[args.job], args)
    return {"make": make, "check": check}[args.job](args) or 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
