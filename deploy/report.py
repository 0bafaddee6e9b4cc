"""What a retrieval shows the user: the ranked table on stdout, the results
as JSON, a copy of the nearest image, and a montage PNG (query and top-k,
framed by relevance), optionally displayed."""
import math
import os
import shutil
import sys
import textwrap

import numpy as np

from deploy.database import query_label
from utils.base.errors import UserError
from utils.data.images import open_rgb
from utils.base.io import atomic_write, atomic_write_json

COLOURS = {"query": "#1f5fbf", True: "#1a9e3a", False: "#d62728", None: "#8c8c8c"}
MARKS = {True: "yes", False: "no", None: "?"}


def relevance(indices, db_labels, q_label):
    """Per result: shares a label with the query (True/False), None if unknown."""
    if q_label is None:
        return [None] * len(indices)
    shared = (np.asarray(db_labels)[indices] > 0) & (np.asarray(q_label) > 0)
    return [bool(s) for s in shared.any(axis=1)]


def classes(label):
    return ",".join(str(c) for c in np.flatnonzero(np.asarray(label) > 0)) or "none"


def ranked_results(db, indices, distances, db_labels, q_label, query_path):
    """One dict per result (rank, index, distance, path, classes, relevant,
    is_query) for ``indices``/``distances`` [k]."""
    rel = relevance(indices, db_labels, q_label)
    query_file = os.path.realpath(query_path)
    results = []
    for r, (i, d, s) in enumerate(zip(indices, distances, rel), 1):
        path = os.path.join(db.root, db.paths[i])
        results.append({"rank": r, "index": int(i), "distance": int(d), "path": path,
                        "classes": classes(db_labels[i]), "relevant": s,
                        "is_query": os.path.realpath(path) == query_file})
    return results


def print_ranking(query_path, q_label, where, results, n, bit, source):
    print(f"query: {query_path} ("
          + (f"in {where}: classes {classes(q_label)})" if q_label is not None
             else "not in the dataset's lists: relevance unknown)"))
    print(f"top-{len(results)} of {n:,} database images by Hamming distance "
          f"({bit} bits; ties in database order; codes: {source}):")
    print(f"{'rank':>4}  {'dist':>4}  {'shares label':>12}  {'index':>7}  path")
    for res in results:
        print(f"{res['rank']:>4}  {res['distance']:>4}  {MARKS[res['relevant']]:>12}  "
              f"{res['index']:>7}  {res['path']}" + ("  (the query itself)" if res["is_query"] else ""))
    if q_label is not None:
        hits = sum(res["relevant"] is True for res in results)
        print(f"{hits}/{len(results)} of the top-{len(results)} share a label with the query")


def copy_nearest(nearest, save_path):
    """Copy the nearest database image into ``save_path`` (as the reference did)."""
    if not os.path.isfile(nearest):
        raise UserError(f"database image {nearest} not found (check --data_path)")
    copy = os.path.join(save_path, os.path.basename(nearest))
    if os.path.abspath(copy) != os.path.abspath(nearest):
        atomic_write(copy, lambda tmp: shutil.copyfile(nearest, tmp))
    return copy


def write_retrieval_report(args, db, indices, distances, db_labels, source, tag="", extra=None):
    """Everything a retrieval leaves for the user, for one query's top-k
    (``indices``/``distances`` [k]): the printed table, a copy of the nearest
    image, the montage (shown with --show) and the JSON. Returns the JSON dict."""
    q_label, where = query_label(args.img, db, args.list_dir, args.num_class)
    results = ranked_results(db, indices, distances, db_labels, q_label, args.img)
    n, bit = len(db), args.bit
    print_ranking(args.img, q_label, where, results, n, bit, source)
    stem = os.path.splitext(os.path.basename(args.img))[0]
    base = os.path.join(args.save_path, f"retrieval_{stem}_{bit}{tag}")
    copy = copy_nearest(results[0]["path"], args.save_path)
    print(f"nearest: {results[0]['path']} at Hamming distance {results[0]['distance']}; "
          f"copied to {copy}")
    save_montage(base + ".png", args.img, q_label, results, bit, n, source,
                 query_upright=not args.ignore_exif_orientation)
    print(f"montage: {base}.png")
    result = {"query": args.img, "query_classes": None if q_label is None else classes(q_label),
              "query_label_from": where, "bit": bit, "database_size": n, "codes": source,
              "topk": results, "nearest_copy": copy, "montage": base + ".png", **(extra or {})}
    atomic_write_json(result, base + ".json")
    print(f"results: {base}.json")
    if args.show:
        show_image(base + ".png")
    return result


def _thumbnail(path, size=160, upright=False):
    """The image as the model saw it: a query upright (unless
    --ignore-exif-orientation), database images as stored."""
    img = open_rgb(path, upright)
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


def display_name(path):
    """A file's name as text to draw: the bytes of a name that is not UTF-8
    (which Python keeps as lone surrogates, and a font cannot draw) show as �."""
    return os.path.basename(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def save_montage(path, query_path, q_label, results, bit, n, source, query_upright=True):
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
    short = lambda p: textwrap.shorten(display_name(p), 24, placeholder="…")  # noqa: E731
    _panel(axes[0], _thumbnail(query_path, upright=query_upright), COLOURS["query"],
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
