"""A run's training records beside its log: ``history.jsonl`` always, and
VisualDL scalars in ``<log dir>/vdl`` when visualdl is installed (and not
turned off with ``--no_visualdl``).

    visualdl --logdir logs/train-64-20260101-120000/vdl     # then open http://localhost:8040

One writer, two backends: the engine opens it for the run (rank 0 writes,
other ranks get a writer that drops everything), the recipes call ``step``
on each logged step line and the engine ``evaluation`` after each evaluation.
The global step is the training step over the whole run (epoch recipe:
(epoch - 1) x steps per epoch + step; Caffe recipe: the iteration).

VisualDL tags: ``train/loss``, ``train/lr``, ``train/beta`` per logged step;
``eval/mAP``, ``eval/P@H<=2`` per evaluation; the evaluation's
precision-recall curve over Hamming radii as scalars (VisualDL's own
``add_pr_curve`` needs per-sample scores and uses ``np.float``, gone in
numpy >= 1.24): ``pr_curve/<unit>_<n>`` is the precision at step
round(10000 x recall), so VisualDL's scalar chart draws the curve with recall
x 10^4 on its x axis, and ``pr_radius/<unit>_<n>/{precision,recall}`` are the
same points against the radius 0..bit.
"""
import json
import math
import os
import time

VDL_DIR = "vdl"
HISTORY = "history.jsonl"
RECALL_SCALE = 10_000


class NullBackend:
    def scalar(self, tag, value, step):
        pass

    def close(self):
        pass


class VisualDLBackend:
    def __init__(self, log_dir):
        from visualdl import LogWriter
        self.writer = LogWriter(logdir=log_dir)

    def scalar(self, tag, value, step):
        self.writer.add_scalar(tag=tag, value=float(value), step=int(step))

    def close(self):
        self.writer.close()


def visualdl_backend(log_dir, wanted):
    """VisualDL when ``wanted`` and installed; (backend, note for the log)."""
    if not wanted:
        return NullBackend(), "VisualDL off (--no_visualdl)"
    try:
        backend = VisualDLBackend(os.path.join(log_dir, VDL_DIR))
    except ImportError:
        return NullBackend(), "VisualDL not installed (pip install visualdl): history.jsonl only"
    return backend, f"VisualDL: visualdl --logdir {os.path.join(log_dir, VDL_DIR)}"


class RunLog:
    """``step`` / ``evaluation`` records of one run; ``close`` at the end.
    ``log_dir`` None: a writer that records nothing (other ranks, tests)."""

    def __init__(self, log_dir=None, use_visualdl=True):
        self.history = None
        self.backend, self.note = NullBackend(), "no run log"
        if log_dir is not None:
            self.backend, self.note = visualdl_backend(log_dir, use_visualdl)
            self.history = open(os.path.join(log_dir, HISTORY), "a")

    def _append(self, record):
        if self.history is not None:
            self.history.write(json.dumps(dict(record, time=round(time.time(), 3))) + "\n")
            self.history.flush()   # a run stopped by a signal keeps its lines

    def step(self, step, loss, lr, beta, **position):
        """A logged training step (``position``: epoch / iter for the reader)."""
        self._append(dict(kind="step", step=step, loss=loss, lr=lr, beta=beta, **position))
        for tag, value in (("train/loss", loss), ("train/lr", lr), ("train/beta", beta)):
            self.backend.scalar(tag, value, step)

    def evaluation(self, step, metrics, unit, done):
        """An evaluation after ``done`` ``unit``s (epoch / iter) at global ``step``."""
        self._append(dict(kind="eval", step=step, map=metrics["map"],
                          precision_radius=metrics["precision_radius"], **{unit: done}))
        self.backend.scalar("eval/mAP", metrics["map"], step)
        self.backend.scalar("eval/P@H<=2", metrics["precision_radius"], step)
        curve, name = metrics["pr_curve"], f"{unit}_{done}"
        seen = set()
        for radius, precision, recall in zip(curve["radius"], curve["precision"], curve["recall"]):
            if not (math.isfinite(precision) and math.isfinite(recall)):
                continue
            self.backend.scalar(f"pr_radius/{name}/precision", precision, radius)
            self.backend.scalar(f"pr_radius/{name}/recall", recall, radius)
            x = round(RECALL_SCALE * recall)
            if x not in seen:   # radii of equal recall: the first (highest-precision) one
                seen.add(x)
                self.backend.scalar(f"pr_curve/{name}", precision, x)

    def close(self):
        self.backend.close()
        if self.history is not None:
            self.history.close()
            self.history = None


def read_history(log_dir):
    """The records of ``<log_dir>/history.jsonl`` (a torn last line is skipped)."""
    records = []
    with open(os.path.join(log_dir, HISTORY)) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
