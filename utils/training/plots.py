"""Evaluation and training figures, drawn with matplotlib's Agg canvas (no
display, no pyplot state) and written atomically as PNG."""
import os

from utils.base.io import atomic_write

DPI = 120


def new_figure(width=6.4, height=4.8):
    # matplotlib is imported only when a figure is drawn: importing it builds a
    # font cache in $HOME, which tools that draw nothing (get_data) must not touch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path):
    """Write ``fig`` to ``path`` via a temp file and a rename."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return path


def describe(metrics):
    """"coco, 64 bits, epoch 10" from whichever of dataset/bit/epoch are known."""
    parts = []
    if metrics.get("dataset"):
        parts.append(str(metrics["dataset"]))
    if metrics.get("bit") is not None:
        parts.append(f"{metrics['bit']} bits")
    if metrics.get("epoch") is not None:
        parts.append(f"epoch {metrics['epoch']}")
    return ", ".join(parts)


def _title(title, metrics, what):
    head = f"{title}: {what}" if title else what
    detail = describe(metrics)
    return f"{head}\n{detail}" if detail else head


def finish_axes(ax, xlabel, ylabel, title=None, unit_x=False, legend=None):
    """Labels, a 0..1 y axis (and x axis if ``unit_x``), a light grid, the
    title, and a legend (``legend``: True or ax.legend keywords; None: none)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    if unit_x:
        ax.set_xlim(0, 1.02)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(**(legend if isinstance(legend, dict) else {}))


def plot_pr_curve(ax, metrics, label=None, mark_radius=True):
    """Precision against recall over Hamming radii 0..bit; a star at the
    metrics' radius (the P@H<=r, R@H<=r point)."""
    curve = metrics["pr_curve"]
    line, = ax.plot(curve["recall"], curve["precision"], marker="o", markersize=3, label=label)
    r = metrics.get("radius")
    if mark_radius and r is not None and r < len(curve["recall"]):
        star = None if label else (f"radius <= {r}: P={curve['precision'][r]:.3f}, "
                                   f"R={curve['recall'][r]:.3f}")
        ax.plot(curve["recall"][r], curve["precision"][r], marker="*", markersize=13,
                color=line.get_color(), linestyle="none", label=star)
    return line


def plot_precision_at_n(ax, metrics, label=None):
    pn = metrics["precision_at_n"]
    return ax.plot(pn["n"], pn["precision"], marker="o", markersize=3, label=label)[0]


def save_evaluation_plots(metrics, out_dir, title=None):
    """``pr_curve.png`` (precision-recall over Hamming radii 0..bit, and
    precision and recall against the radius) and ``precision_at_n.png`` in
    ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    curve = metrics["pr_curve"]

    fig = new_figure(11, 4.6)
    ax, ax_r = fig.subplots(1, 2)
    plot_pr_curve(ax, metrics)
    finish_axes(ax, "Recall", "Precision", "precision-recall (Hamming ranking)", unit_x=True,
                legend={"loc": "upper right"})
    ax_r.plot(curve["radius"], curve["precision"], marker="o", markersize=3, label="precision")
    ax_r.plot(curve["radius"], curve["recall"], marker="s", markersize=3, label="recall")
    if "coverage" in curve:
        ax_r.plot(curve["radius"], curve["coverage"], linestyle=":", color="gray",
                  label="queries retrieving >= 1 item")
    if metrics.get("radius") is not None:
        ax_r.axvline(metrics["radius"], color="black", linewidth=0.8, linestyle="--")
    finish_axes(ax_r, "Hamming radius r (retrieve all items at distance <= r)", "",
                "precision and recall within Hamming radius r", legend={"loc": "center right"})
    fig.suptitle(_title(title, metrics, "precision-recall"))
    paths.append(save_png(fig, os.path.join(out_dir, "pr_curve.png")))

    fig = new_figure()
    ax = fig.add_subplot()
    plot_precision_at_n(ax, metrics)
    finish_axes(ax, "Number of top returned items N", "Precision@N",
                _title(title, metrics, f"precision@N (mAP@{metrics.get('topk', '?')} = "
                                       f"{metrics.get('map', float('nan')):.4f})"))
    paths.append(save_png(fig, os.path.join(out_dir, "precision_at_n.png")))
    return paths


UNIT_WORDS = {"epoch": "epoch", "iter": "iteration"}


def save_training_plot(history, path, title=None, unit="epoch"):
    """Loss per period (left axis) and mAP where evaluated (right axis).
    ``history``: [{unit: int, "loss": float, "map": float or None}], ``unit``
    the recipe's counter: "epoch" (reference) or "iter" (Caffe recipe)."""
    word = UNIT_WORDS[unit]
    epochs = [h[unit] for h in history if h.get("loss") is not None]
    losses = [h["loss"] for h in history if h.get("loss") is not None]
    evals = [(h[unit], h["map"]) for h in history if h.get("map") is not None]
    fig = new_figure(7.2, 4.5)
    ax = fig.add_subplot()
    lines = ax.plot(epochs, losses, color="tab:blue", marker="." if len(epochs) < 40 else None,
                    label="train loss")
    ax.set_xlabel(word.capitalize())
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Train loss", color="tab:blue")
    ax.grid(True, alpha=0.3)
    if evals:
        ax2 = ax.twinx()
        best_epoch, best = max(evals, key=lambda em: em[1])
        lines += ax2.plot([e for e, _ in evals], [m for _, m in evals], color="tab:red",
                          marker="o", label=f"mAP (best {best:.4f}, {word} {best_epoch})")
        ax2.set_ylabel("mAP", color="tab:red")
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    ax.set_title(title or "Training")
    return save_png(fig, path)
