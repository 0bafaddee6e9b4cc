"""Compare evaluations of several runs (e.g. 16/32/48/64 bits) in the figures
HashNet's paper shows: precision within Hamming radius 2 against the code
length, precision-recall curves and precision@top-N, overlaid.

    python -m scripts.compare_runs logs/eval-16-* logs/eval-32-* logs/eval-64-*/metrics.json \
        --out output/compare

Each argument is a metrics.json written by an evaluation (beside its log, in
``<--log_path>/eval-<bit>-<time>/`` or ``train-<bit>-<time>/``), or such a
directory. Writes precision_radius_vs_bits.png, pr_curves.png and
precision_at_n.png in --out and prints a summary table; when the runs'
folders hold a history.jsonl (training writes one: utils/training/run_log.py),
also learning_curves.png: the logged loss and every evaluation's mAP against
the training step.
"""
import argparse
import os
from collections import Counter

from utils.base.errors import UserError, one_line, run_cli
from utils.base.text_files import read_json
from utils.training.run_log import HISTORY, read_history
from utils.training.plots import (describe, finish_axes, new_figure, plot_pr_curve, plot_precision_at_n,
                         save_png)

REQUIRED = ("map", "precision_radius", "pr_curve", "precision_at_n")
# Published mAP@R per bit length, for --reference: the HashNet paper (Cao et
# al., ICCV 2017: COCO mAP@5000; ImageNet-100 mAP@1000 as its Table 1 is
# copied in Hindawi Adv. Multimedia 2017, art. 8961091, Table 3) and the
# reference Paddle reproduction's released COCO runs
# (github.com/hatimwen/paddle_hashnet, its README).
PUBLISHED = {"coco": {"paper": {16: 0.6873, 32: 0.7184, 48: 0.7301, 64: 0.7362},
                      "reference": {16: 0.619, 32: 0.682, 48: 0.715, 64: 0.734}},
             "imagenet": {"paper": {16: 0.442, 32: 0.606, 48: 0.663, 64: 0.684},
                          "reference": {}}}


def load_metrics(path):
    """Read one metrics.json (or DIR/metrics.json); UserError when it is not one."""
    file = os.path.join(path, "metrics.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise UserError(f"{path}: no metrics.json in this directory" if os.path.isdir(path)
                        else f"{path}: no such file or directory")
    try:
        metrics = read_json(file)
    except OSError as err:
        raise UserError(f"{file}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not a metrics.json (not a text file)") from None
    except ValueError as err:
        raise UserError(f"{file}: not a metrics.json (invalid JSON: {one_line(err)})") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{file}: not a metrics.json (expected a JSON object)")
    missing = [key for key in REQUIRED if key not in metrics]
    if missing:
        raise UserError(f"{file}: not a metrics.json (missing {', '.join(missing)})")
    problem = metrics_problem(metrics)
    if problem:
        raise UserError(f"{file}: not a metrics.json ({problem})")
    curve = metrics["pr_curve"]
    metrics.setdefault("bit", len(curve["radius"]) - 1)
    metrics["_source"] = file
    run_dir = os.path.dirname(file)
    if os.path.isfile(os.path.join(run_dir, HISTORY)):
        metrics["_history"] = read_history(run_dir)
    return metrics


def numbers(value):
    return type(value) is list and all(type(v) in (int, float) for v in value)


def metrics_problem(metrics):
    """What in ``metrics`` is not of the shape evaluations write, or None."""
    for key in ("map", "precision_radius"):
        if type(metrics[key]) not in (int, float):
            return f"{key} is not a number"
    for key in ("map_tie_aware", "recall_radius"):
        if type(metrics.get(key)) not in (int, float, type(None)):
            return f"{key} is not a number"
    for key in ("bit", "radius"):
        if key in metrics and not (type(metrics[key]) is int and 0 <= metrics[key] <= 4096):
            return f"{key} is not a whole number in 0..4096"
    if not isinstance(metrics.get("dataset"), (str, type(None))):
        return "dataset is not a name"
    curve, pn = metrics["pr_curve"], metrics["precision_at_n"]
    if not (isinstance(curve, dict) and all(numbers(curve.get(k))
                                            for k in ("radius", "precision", "recall"))
            and isinstance(pn, dict) and numbers(pn.get("n")) and numbers(pn.get("precision"))):
        return "malformed curves: pr_curve and precision_at_n must hold lists of numbers"
    if not (len(curve["radius"]) == len(curve["precision"]) == len(curve["recall"]) > 0
            and len(pn["n"]) == len(pn["precision"])):
        return "malformed curves: curve lengths differ"
    return None


def _labels(runs):
    """"32 bits" (plus the dataset when several, plus the run folder when
    the same setting appears twice)."""
    datasets = {m.get("dataset") for m in runs}
    keys = [(m.get("dataset"), m["bit"]) for m in runs]
    repeated = Counter(keys)
    labels = []
    for m, key in zip(runs, keys):
        label = f"{m['bit']} bits"
        if len(datasets) > 1 and m.get("dataset"):
            label = f"{m['dataset']} {label}"
        if repeated[key] > 1:
            label += f" ({os.path.basename(os.path.dirname(os.path.abspath(m['_source'])))})"
        labels.append(label)
    return labels


def compare(runs, out_dir, title=None):
    """Draw the three comparison figures for loaded metrics; return their paths."""
    runs = sorted(runs, key=lambda m: (str(m.get("dataset")), m["bit"]))
    labels = _labels(runs)
    os.makedirs(out_dir, exist_ok=True)
    datasets = sorted({str(m.get("dataset")) for m in runs if m.get("dataset")})
    suffix = f" ({', '.join(datasets)})" if datasets else ""
    head = f"{title}: " if title else ""
    radii = sorted({m.get("radius", 2) for m in runs})
    r_text = str(radii[0]) if len(radii) == 1 else "r"
    paths = []

    fig = new_figure()
    ax = fig.add_subplot()
    for dataset in sorted({m.get("dataset") for m in runs}, key=str):
        group = [m for m in runs if m.get("dataset") == dataset]
        ax.plot([m["bit"] for m in group], [m["precision_radius"] for m in group], marker="o",
                label=f"P@H<={r_text}" + (f" {dataset}" if dataset else ""))
        ax.plot([m["bit"] for m in group], [m["map"] for m in group], marker="s",
                linestyle="--", label="mAP" + (f" {dataset}" if dataset else ""))
    ax.set_xticks(sorted({m["bit"] for m in runs}))
    finish_axes(ax, "Number of bits", f"Precision within Hamming radius {r_text} / mAP",
                f"{head}precision within Hamming radius {r_text} vs bits{suffix}", legend=True)
    paths.append(save_png(fig, os.path.join(out_dir, "precision_radius_vs_bits.png")))

    fig = new_figure()
    ax = fig.add_subplot()
    for m, label in zip(runs, labels):
        plot_pr_curve(ax, m, label=label)
    finish_axes(ax, "Recall", "Precision", f"{head}precision-recall (Hamming ranking){suffix}",
                unit_x=True, legend={"title": f"star: radius {r_text}"})
    paths.append(save_png(fig, os.path.join(out_dir, "pr_curves.png")))

    fig = new_figure()
    ax = fig.add_subplot()
    for m, label in zip(runs, labels):
        plot_precision_at_n(ax, m, label=label)
    finish_axes(ax, "Number of top returned items N", "Precision@N",
                f"{head}precision@N{suffix}", legend=True)
    paths.append(save_png(fig, os.path.join(out_dir, "precision_at_n.png")))
    if any(m.get("_history") for m in runs):
        paths.append(learning_curves(runs, labels, os.path.join(out_dir, "learning_curves.png"),
                                     f"{head}training{suffix}"))
    return paths


def learning_curves(runs, labels, path, title):
    """Loss per logged step and mAP per evaluation, against the training step."""
    fig = new_figure(width=11)
    ax_loss, ax_map = fig.subplots(1, 2)
    for m, label in zip(runs, labels):
        history = m.get("_history") or []
        steps = [r for r in history if r["kind"] == "step"]
        evals = [r for r in history if r["kind"] == "eval"]
        ax_loss.plot([r["step"] for r in steps], [r["loss"] for r in steps], label=label)
        ax_map.plot([r["step"] for r in evals], [r["map"] for r in evals], marker="o", label=label)
    finish_axes(ax_loss, "Training step", "Loss", "loss (logged steps)", legend=True)
    ax_loss.autoscale(axis="y")   # a loss is not a 0..1 quantity
    finish_axes(ax_map, "Training step", "mAP", "mAP per evaluation", legend=True)
    fig.suptitle(title)
    return save_png(fig, path)


def summary(runs):
    lines = [f"{'run':<40} {'mAP':>7} {'tie-aware':>9} {'P@H<=r':>7} {'R@H<=r':>7}"]
    for m in sorted(runs, key=lambda m: (str(m.get("dataset")), m["bit"])):
        name = describe(m) or os.path.dirname(m["_source"])
        tie = m.get("map_tie_aware")
        lines.append(f"{name[:40]:<40} {m['map']:>7.4f} "
                     f"{'' if tie is None else format(tie, '.4f'):>9} "
                     f"{m['precision_radius']:>7.4f} {m.get('recall_radius', float('nan')):>7.4f}")
    return "\n".join(lines)


def reference_table(runs, dataset):
    """Markdown table: measured mAP per bit length next to the published values."""
    published = PUBLISHED[dataset]
    lines = ["| bits | measured mAP | reference Paddle | paper |", "|---|---|---|---|"]
    for m in sorted(runs, key=lambda m: m["bit"]):
        reference, paper = published["reference"].get(m["bit"]), published["paper"].get(m["bit"])
        lines.append(f"| {m['bit']} | {m['map']:.4f} | "
                     f"{'' if reference is None else format(reference, '.3f')} | "
                     f"{'' if paper is None else format(paper, '.4f')} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m scripts.compare_runs",
                                description="Compare runs' metrics.json in HashNet-paper figures.")
    p.add_argument("runs", nargs="+", help="metrics.json files or run directories holding one")
    p.add_argument("--out", required=True, help="directory for the PNG figures")
    p.add_argument("--title", default=None)
    p.add_argument("--reference", choices=sorted(PUBLISHED), default=None,
                   help="also print a table of mAP next to the paper's and the reference's")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    runs = [load_metrics(path) for path in args.runs]
    print(summary(runs))
    if args.reference:
        print(reference_table(runs, args.reference))
    for path in compare(runs, args.out, args.title):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
