"""Print the demo's result: the trained model's mAP next to random codes'.

Random ±1 codes rank the database arbitrarily, so their mAP is the floor a
hashing model must beat on the same queries, database and K.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

from utils.datasets import parse_list
from utils.errors import UserError, run_cli
from utils.tools import mean_average_precision


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


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log-dir", required=True, help="the demo's --log_path")
    p.add_argument("--list-dir", required=True, help="the demo's list folder")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    path, metrics = latest_eval_metrics(args.log_dir)
    with open(os.path.join(args.list_dir, "test.txt")) as f:
        num_class = len(f.readline().split()) - 1
    _, q_labels = parse_list(os.path.join(args.list_dir, "test.txt"), num_class)
    _, db_labels = parse_list(os.path.join(args.list_dir, "database.txt"), num_class)
    random_map = random_codes_map(q_labels, db_labels, metrics["bit"], metrics["topk"])
    k = metrics["topk"]
    print(f"demo mAP@{k}: HashNet {metrics['map']:.4f} | random codes {random_map:.4f} | "
          f"gain {metrics['map'] - random_map:+.4f}  ({path})")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
