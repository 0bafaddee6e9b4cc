"""Print the demo's result: the trained model's mAP next to random codes',
and where the demo's time went.

Random ±1 codes rank the database arbitrarily, so their mAP is the floor a
hashing model must beat on the same queries, database and K. ``--min-map``
is the demo's own floor (docs/demo.md): the digits vary with the CPU's
float kernels, but a result below it is a broken demo, and the report exits
with status 1.
"""
import argparse
import glob
import json
import os
import re
import sys

import numpy as np

from utils.data.list_format import list_num_class, parse_list
from utils.base.errors import UserError, run_cli
from utils.base.flags import Range, add, check_ranges
from utils.retrieval.metrics import mean_average_precision


def random_codes_map(query_labels, db_labels, bit, topk, seeds=(0, 1, 2)):
    """Mean mAP@K of random codes over a few seeds."""
    values = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        q = rng.choice(np.array([-1, 1], dtype=np.int8), size=(len(query_labels), bit))
        d = rng.choice(np.array([-1, 1], dtype=np.int8), size=(len(db_labels), bit))
        values.append(mean_average_precision(q, query_labels, d, db_labels, topk))
    return float(np.mean(values))


def latest_eval_metrics(log_dir):
    found = glob.glob(os.path.join(log_dir, "eval-*", "metrics.json"))
    if not found:
        raise UserError(f"no eval-*/metrics.json under {log_dir}: run the evaluation first")
    path = max(found, key=os.path.getmtime)
    with open(path) as f:
        return path, json.load(f)


def read_stage_times(path):
    """{stage: seconds} from scripts/demo.sh's ``STAGE milliseconds`` lines."""
    with open(path) as f:
        return {name: int(ms) / 1000 for name, ms in (line.split() for line in f if line.strip())}


def run_log(log_dir, mode):
    """Text of the newest ``<mode>-*/log.txt`` under log_dir ("" if none)."""
    found = glob.glob(os.path.join(log_dir, f"{mode}-*", "log.txt"))
    if not found:
        return ""
    with open(max(found, key=os.path.getmtime)) as f:
        return f.read()


def evaluation_seconds(log_text):
    """[(total s, encoding s)] of every ``evaluated in`` line of a run log."""
    return [(float(t), float(e)) for t, e in
            re.findall(r"evaluated in ([\d.]+)s: encoding ([\d.]+)s", log_text)]


def row(label, seconds, note=""):
    return f"  {label:<42}{seconds:7.1f}s{note}"


def time_breakdown(stages, log_dir):
    """The demo's wall time split into data, backbone warm-up, HashNet epochs
    (training + checkpoints), evaluations (and the encoding inside them) and
    the rest (process start-up, loading), one line each."""
    train_log = run_log(log_dir, "train")
    epochs = [float(t) for t in re.findall(r"saved \S+ \(epoch \d+, ([\d.]+)s\)", train_log)]
    evals = evaluation_seconds(train_log)
    final = evaluation_seconds(run_log(log_dir, "eval"))
    evals_s, final_s = sum(t for t, _ in evals), sum(t for t, _ in final)
    lines = [f"where the demo's {sum(stages.values()):.0f}s went:"]
    if "data" in stages:
        lines.append(row("generate the demo set", stages["data"]))
    if "backbone" in stages:
        lines.append(row("backbone warm-up", stages["backbone"]))
    if "train" in stages:
        lines += [row(f"HashNet: {len(epochs)} epochs (train + checkpoints)", sum(epochs) - evals_s),
                  row(f"HashNet: {len(evals)} evaluations", evals_s,
                      f"  (encoding {sum(e for _, e in evals):.1f}s)"),
                  row("HashNet: start-up and loading", stages["train"] - sum(epochs))]
    if "eval" in stages:
        lines += [row("--eval: evaluation", final_s, f"  (encoding {sum(e for _, e in final):.1f}s)"),
                  row("--eval: start-up and loading", stages["eval"] - final_s)]
    return lines


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log-dir", required=True, help="the demo's --log_path")
    p.add_argument("--list-dir", required=True, help="the demo's list folder")
    p.add_argument("--stage-times", help="scripts/demo.sh's stage times file: print the breakdown")
    add(p, "--min-map", type=float, default=0.0, valid=Range(low=0.0, high=1.0),
        help="exit with status 1 if HashNet's mAP is below this (0: no floor)")
    p.add_argument("--debug", action="store_true")
    args = check_ranges(p, p.parse_args(argv))
    path, metrics = latest_eval_metrics(args.log_dir)
    num_class = list_num_class(os.path.join(args.list_dir, "test.txt"))
    _, q_labels = parse_list(os.path.join(args.list_dir, "test.txt"), num_class)
    _, db_labels = parse_list(os.path.join(args.list_dir, "database.txt"), num_class)
    random_map = random_codes_map(q_labels, db_labels, metrics["bit"], metrics["topk"])
    k = metrics["topk"]
    print(f"demo mAP@{k}: HashNet {metrics['map']:.4f} | random codes {random_map:.4f} | "
          f"gain {metrics['map'] - random_map:+.4f}  ({path})")
    if args.stage_times:
        print("\n".join(time_breakdown(read_stage_times(args.stage_times), args.log_dir)))
    if metrics["map"] < args.min_map:
        print(f"FAILED: HashNet's mAP@{k} {metrics['map']:.4f} is below the demo's floor "
              f"{args.min_map:g} (--min-map): the run is broken, not merely on another CPU",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
