"""Single-image retrieval shared by predict.py (dygraph) and
deploy/inference_python/infer.py (Paddle Inference): the command-line
flags both take, the query and database, the code cache, the Hamming top-k
and the report (printed table, JSON, copy of the nearest image, montage PNG).

Only how a batch of images becomes codes differs between the two scripts;
everything here is written once.
"""
import argparse
import math
import os
import shutil
import sys
import textwrap

import numpy as np

from utils.code_cache import DatabaseCodeCache, make_fingerprint
from utils.config import BITS, DATASET_PRESETS, available_cores
from utils.datasets import ImageList, build_loader, load_rgb, parse_list, test_transform
from utils.errors import UserError
from utils.hamming import hamming_distances, hamming_topk, pack_codes
from utils.io import atomic_write, atomic_write_json

# AlexNet's five stride/pool stages leave nothing of a crop under 63 px
# (Paddle Inference then dies with SIGFPE instead of an error).
MIN_CROP = 63
COLOURS = {"query": "#1f5fbf", True: "#1a9e3a", False: "#d62728", None: "#8c8c8c"}
MARKS = {True: "yes", False: "no", None: "?"}


# ------------------------------------------------------------------ flags
def str2bool(value):
    """The reference's ``--use-gpu True|False`` / ``--benchmark True`` style."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "t", "1", "yes", "y"):
        return True
    if value.lower() in ("false", "f", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def add_retrieval_args(p):
    """Flags common to predict.py and infer.py. Both spellings of each
    (``--data_path``/``--data-path`` …) work in both scripts."""
    a = p.add_argument
    a("--bit", type=int, default=64, choices=BITS)
    a("--dataset", default="coco", choices=sorted(DATASET_PRESETS),
      help="a dataset with list files (CIFAR-10 splits have none)")
    a("--data_path", "--data-path", dest="data_path", default=None,
      help="root the list's image paths are relative to (default datasets/<dataset>)")
    a("--list-dir", "--list_dir", dest="list_dir", default=None,
      help="folder holding database.txt (default data/<dataset>)")
    a("--num_class", type=int, default=None, help="labels per list line (default: dataset preset)")
    a("--img", "--img-path", "--img_path", dest="img", required=True, help="the query image")
    a("--save_path", "--save-path", dest="save_path", default="./output",
      help="where the code cache, the nearest image, the montage and the JSON go")
    a("--crop_size", "--crop-size", dest="crop_size", type=int, default=224)
    a("--resize_size", "--resize-size", dest="resize_size", type=int, default=256)
    a("--topk", type=int, default=10, help="how many database images to return")
    a("--num_threads", "--num-threads", dest="num_threads", type=int, default=available_cores(),
      help="CPU math threads")
    a("--rebuild_cache", "--rebuild-cache", dest="rebuild_cache", action="store_true",
      help="re-encode the database even if a matching cache exists")
    a("--show", nargs="?", const=True, default=False, type=str2bool,
      help="display the montage (needs a display; otherwise a note is printed)")
    a("--debug", action="store_true", help="show tracebacks for bad input")


def finish_args(args):
    """Fill dataset defaults and reject impossible values (UserError)."""
    if args.dataset.startswith("cifar10"):
        raise UserError(f"--dataset {args.dataset}: retrieval needs list files "
                        "(data/<dataset>/database.txt); CIFAR-10 splits are built in memory")
    args.num_class = args.num_class or DATASET_PRESETS[args.dataset][0]
    args.list_dir = args.list_dir or os.path.join("data", args.dataset)
    args.data_path = args.data_path or os.path.join("datasets", args.dataset)
    check_sizes(args.crop_size, args.resize_size, "--crop_size")
    if args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")
    if not os.path.isfile(args.img):
        raise UserError(f"query image {args.img} not found")
    return args


def check_sizes(crop, resize=None, flag="--crop_size"):
    if crop < MIN_CROP:
        raise UserError(f"{flag} {crop} is too small: AlexNet needs at least {MIN_CROP} px")
    if resize is not None and resize < crop:
        raise UserError(f"--resize_size {resize} is smaller than --crop_size {crop}")




# ------------------------------------------------------------------ model (dygraph)
def default_checkpoint(bit):
    """``output/model_best_{bit}`` (what training writes), else the
    reference's released ``output/weights_{bit}``."""
    candidates = [f"output/model_best_{bit}", f"output/weights_{bit}"]
    for prefix in candidates:
        if os.path.isfile(prefix + ".pdparams"):
            return prefix
    raise UserError("no checkpoint given and none found at "
                    + " or ".join(c + ".pdparams" for c in candidates)
                    + ": pass --pretrained PATH (without .pdparams)")


def load_model(bit, pretrained):
    """HashNet in eval mode with the checkpoint's weights; also returns the
    .pdparams path (the cache fingerprints it)."""
    from models.hashnet import HashNet
    from utils.checkpoint import load_weights
    prefix = pretrained or default_checkpoint(bit)
    if prefix.endswith(".pdparams"):
        prefix = prefix[: -len(".pdparams")]
    model = HashNet(bit)
    load_weights(model, prefix)
    model.eval()
    return model, prefix + ".pdparams"


# ------------------------------------------------------------------ query and database
def load_query(path, resize_size, crop_size):
    """The query as a [1, 3, S, S] float32 batch (the test transform)."""
    return test_transform(load_rgb(path), resize_size, crop_size)[None]


def open_database(args):
    """The database list (parsed, images not yet checked)."""
    return ImageList(os.path.join(args.list_dir, "database.txt"), args.data_path, args.num_class,
                     train=False, resize_size=args.resize_size, crop_size=args.crop_size)


def database_loader(db, batch_size):
    """In-order batches of the database (every image checked first)."""
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    db.check_files()
    return build_loader(db, batch_size, shuffle=False)


def code_cache(args, model_files, tag=""):
    """The cache of this dataset, bit and producer under --save_path; the
    reference's ``database_code_{bit}.npy`` there is the legacy fallback."""
    fingerprint = make_fingerprint(model_files, db_list(args), args.data_path, args.bit,
                                   args.crop_size, args.resize_size)
    name = f"database_code_{args.dataset}_{args.bit}{tag}.npz"
    return DatabaseCodeCache(os.path.join(args.save_path, name), fingerprint,
                             legacy_path=os.path.join(args.save_path, f"database_code_{args.bit}.npy"))


def db_list(args):
    return os.path.join(args.list_dir, "database.txt")


def query_label(img, db, list_dir, num_class):
    """The query's labels when its file is in a list of the dataset
    (database, then test, then train): (label [C], "file:line") or (None, None)."""
    root = os.path.realpath(db.root)
    rel = os.path.normpath(os.path.relpath(os.path.realpath(img), root))
    if rel.startswith(".."):
        return None, None
    for name in ("database", "test", "train"):
        list_file = os.path.join(list_dir, f"{name}.txt")
        if name == "database":
            paths, labels = db.paths, db.labels
        elif os.path.isfile(list_file):
            try:
                paths, labels = parse_list(list_file, num_class)
            except UserError:
                continue
        else:
            continue
        for i, p in enumerate(paths):
            if os.path.normpath(p) == rel:
                return labels[i], f"{list_file}:{i + 1}"
    return None, None


# ------------------------------------------------------------------ search and report
def database_index(img, db):
    """Index of the query's own file in the database list, or None."""
    target = os.path.realpath(img)
    for i, p in enumerate(db.paths):
        if os.path.realpath(os.path.join(db.root, p)) == target:
            return i
    return None


def search(query_codes, packed_db, k, self_index=None):
    """Top-k of queries (±1 codes [nq, bit]) by Hamming distance, ties in
    database order: (indices [nq, k], distances [nq, k]). A query that is itself
    in the database (``self_index``) is listed first among the codes at its
    distance: a good model gives many images the same code, and the exact
    match should not hide behind a lower index."""
    packed_query = pack_codes(query_codes)
    indices, distances = hamming_topk(packed_query, packed_db, k)
    if self_index is not None:
        own = hamming_distances(packed_query, packed_db[self_index:self_index + 1])[:, 0]
        for row in np.flatnonzero(own <= distances[:, 0]):
            others = indices[row] != self_index
            indices[row] = np.concatenate([[self_index], indices[row][others][:k - 1]])
            distances[row] = np.concatenate([[own[row]], distances[row][others][:k - 1]])
    return indices, distances


def relevance(indices, db_labels, q_label):
    """Per result: shares a label with the query (True/False), None if unknown."""
    if q_label is None:
        return [None] * len(indices)
    shared = (np.asarray(db_labels)[indices] > 0) & (np.asarray(q_label) > 0)
    return [bool(s) for s in shared.any(axis=1)]


def classes(label):
    return ",".join(str(c) for c in np.flatnonzero(np.asarray(label) > 0)) or "none"


def report(args, db, indices, distances, db_labels, source, tag="", extra=None):
    """Print one query's top-k (``indices``/``distances`` [k]), write the JSON, copy the nearest image, draw the
    montage (and show it with --show). Returns the result dict."""
    q_label, where = query_label(args.img, db, args.list_dir, args.num_class)
    rel = relevance(indices, db_labels, q_label)
    n, bit = len(db), args.bit
    print(f"query: {args.img} ("
          + (f"in {where}: classes {classes(q_label)})" if q_label is not None
             else "not in the dataset's lists: relevance unknown)"))
    print(f"top-{len(indices)} of {n:,} database images by Hamming distance "
          f"({bit} bits; ties in database order; codes: {source}):")
    print(f"{'rank':>4}  {'dist':>4}  {'shares label':>12}  {'index':>7}  path")
    results = []
    query_file = os.path.realpath(args.img)
    for r, (i, d, s) in enumerate(zip(indices, distances, rel), 1):
        path = os.path.join(db.root, db.paths[i])
        is_query = os.path.realpath(path) == query_file
        print(f"{r:>4}  {int(d):>4}  {MARKS[s]:>12}  {int(i):>7}  {path}"
              + ("  (the query itself)" if is_query else ""))
        results.append({"rank": r, "index": int(i), "distance": int(d), "path": path,
                        "classes": classes(db_labels[i]), "relevant": s, "is_query": is_query})
    if q_label is not None:
        print(f"{rel.count(True)}/{len(rel)} of the top-{len(rel)} share a label with the query")

    stem = os.path.splitext(os.path.basename(args.img))[0]
    base = os.path.join(args.save_path, f"retrieval_{stem}_{bit}{tag}")
    nearest = results[0]["path"]
    if not os.path.isfile(nearest):
        raise UserError(f"database image {nearest} not found (check --data_path)")
    copy = os.path.join(args.save_path, os.path.basename(nearest))
    if os.path.abspath(copy) != os.path.abspath(nearest):
        atomic_write(copy, lambda tmp: shutil.copyfile(nearest, tmp))
    print(f"nearest: {nearest} at Hamming distance {results[0]['distance']}; copied to {copy}")
    save_montage(base + ".png", args.img, q_label, results, bit, n, source)
    print(f"montage: {base}.png")
    result = {"query": args.img, "query_classes": None if q_label is None else classes(q_label),
              "query_label_from": where, "bit": bit, "database_size": n, "codes": source,
              "topk": results, "nearest_copy": copy, "montage": base + ".png", **(extra or {})}
    atomic_write_json(result, base + ".json")
    print(f"results: {base}.json")
    if args.show:
        show_image(base + ".png")
    return result


def _thumbnail(path, size=160):
    img = load_rgb(path)
    img.thumbnail((size, size))
    return np.asarray(img)


def _panel(ax, image, colour, lines):
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(6)
    ax.set_title("\n".join(lines), fontsize=8.5, color="black", linespacing=1.25)


def save_montage(path, query_path, q_label, results, bit, n, source):
    """Query + top-k, each framed by relevance, with distances and a legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    panels = len(results) + 1
    ncols = min(panels, 6)
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(2.15 * ncols, 2.55 * nrows + 1.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    short = lambda p: textwrap.shorten(os.path.basename(p), 24, placeholder="…")  # noqa: E731
    _panel(axes[0], _thumbnail(query_path), COLOURS["query"],
           ["QUERY", short(query_path),
            f"classes {classes(q_label)}" if q_label is not None else "label unknown"])
    for ax, res in zip(axes[1:], results):
        _panel(ax, _thumbnail(res["path"]), COLOURS[res["relevant"]],
               [f"#{res['rank']}  Hamming d = {res['distance']}",
                short(res["path"]) + ("  (= query)" if res["is_query"] else ""),
                f"classes {res['classes']}"])
    for ax in axes[panels:]:
        ax.axis("off")
    handles = [Patch(facecolor="white", edgecolor=COLOURS["query"], linewidth=3, label="query")]
    if q_label is not None:
        hits = sum(r["relevant"] is True for r in results)
        handles += [Patch(facecolor="white", edgecolor=COLOURS[True], linewidth=3,
                          label="relevant (shares a label with the query)"),
                    Patch(facecolor="white", edgecolor=COLOURS[False], linewidth=3,
                          label="irrelevant (no shared label)")]
        caption = f"{hits}/{len(results)} relevant"
    else:
        handles.append(Patch(facecolor="white", edgecolor=COLOURS[None], linewidth=3,
                             label="relevance unknown (query not in the dataset's lists)"))
        caption = "query label unknown"
    fig.suptitle(f"HashNet {bit}-bit retrieval: top-{len(results)} of {n:,} database images "
                 f"by Hamming distance d (ties in database order); {caption}", fontsize=10)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8.5,
               frameon=False)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.75 / fig.get_figheight(),
                        bottom=0.45 / fig.get_figheight(), wspace=0.12,
                        hspace=0.55 * 2.55 / (2.55 + 0.3))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


NON_INTERACTIVE = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def show_image(path):
    """Display a PNG with matplotlib; print a note instead where that is
    impossible (no display, a non-interactive backend)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        print(f"--show: no display available; open {path} to see the montage")
        return
    try:
        import matplotlib.pyplot as plt
        if plt.get_backend().lower() in NON_INTERACTIVE:
            print(f"--show: matplotlib backend {plt.get_backend()} cannot display; open {path}")
            return
        image = plt.imread(path)
        fig = plt.figure(figsize=(image.shape[1] / 100, image.shape[0] / 100))
        fig.add_axes([0, 0, 1, 1]).imshow(image)
        fig.axes[0].axis("off")
        plt.show()
    except Exception as err:  # a GUI toolkit failing must not lose the results
        print(f"--show: cannot display ({type(err).__name__}: {err}); open {path}")
