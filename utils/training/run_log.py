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

from utils.base.errors import UserError, one_line
from utils.base.io import open_own_file
from utils.base.text_files import parse_json

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
            self.history = open(open_own_file(os.path.join(log_dir, HISTORY), os.O_WRONLY
                                              | os.O_CREAT | os.O_APPEND, "run history"), "a")

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


# the numbers each kind of record holds (RunLog.step / RunLog.evaluation)
RECORD_FIELDS = {"step": ("step", "loss", "lr", "beta"), "eval": ("step", "map",
                                                                  "precision_radius")}


def record_problem(record):
    """Why ``record`` is not a step or eval record of RunLog, or None."""
    kind = record.get("kind") if isinstance(record, dict) else None
    fields = RECORD_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        return 'not an object of "kind" step or eval'
    bad = [f for f in fields if type(record.get(f)) not in (int, float)]
    return f"its {bad[0]} is not a number" if bad else None


def read_history(log_dir):
    """The records of ``<log_dir>/history.jsonl``; a torn last line (a run
    killed while writing it) is skipped, any other line that is not a step
    or eval record is a one-line UserError naming the file and line."""
    path = os.path.join(log_dir, HISTORY)
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text, not a history.jsonl") from None
    last = max((n for n, line in enumerate(lines, 1) if line.strip()), default=0)
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except ValueError as err:
            if n == last:
                continue
            raise UserError(f"{path}:{n}: not JSON ({one_line(err)}): not a history.jsonl line")
        problem = record_problem(record)
        if problem:
            raise UserError(f"{path}:{n}: {problem}: not a history.jsonl record of "
                            "utils/training/run_log.py")
        records.append(record)
    return records
