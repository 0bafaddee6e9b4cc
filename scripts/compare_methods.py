"""HashNet's comparison under one protocol: every method (HashNet, its
ablations, the deep baselines, the shallow baselines on the backbone's
features) trained or fit and evaluated at each bit length, then one table.

    python -m scripts.compare_methods --dataset demo --data-path datasets/demo \
        --list-dir data/demo --backbone output/demo/alexnet_demo_backbone.pdparams \
        --bits 16 32 64 --methods all --out output/compare_demo \
        -- --crop_size 64 --resize_size 72 -bs 16 -e 2 -ee 1 --step_continuation 1

(``bash scripts/compare_methods.sh demo`` runs exactly that.) Deep methods
train with main_single_gpu.py's engine (``--recipe reference``), each with
its official settings (utils/methods/*.py ``training``) unless the flags
after ``--`` set them; those flags go to every run, except that a method's
own flag (``--step_continuation``) goes only to the methods that have it.
Shallow methods (utils/methods/shallow/) are fit on the training set's
features of the same ``--backbone`` (computed once, cached in
``<out>/features``). Every method is measured the same way: the same lists,
crops, codes sign(·) with 0 → +1, mAP@R with ties in database order, a
query without a relevant item counted 0 (the table), and both other skip
conventions in the JSON and under the table where they differ.

What is done is kept: each (method, bit) writes ``<out>/results/<method>-
<bit>.json`` when it is measured, and a deep run keeps its checkpoints in
``<out>/runs/<method>-<bit>/``, so a stopped comparison started again skips
what is done and resumes an unfinished training where it stopped. At the end
``<out>/comparison.md``, ``comparison.json`` and ``map_vs_bits.png``.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

import models
from scripts.compare_runs import PUBLISHED
from utils import methods
from utils.base.checkpoint import load_weights
from utils.base.errors import UserError, run_cli
from utils.base.io import atomic_write, atomic_write_json
from utils.data.presets import DATASET_PRESETS
from utils.inference.features import backbone_features
from utils.methods.shallow import SHALLOW_METHODS
from utils.retrieval.metrics import retrieval_metrics
from utils.training import engine
from utils.training.config import build_parser, data_settings, parse_args
from utils.training.plots import finish_axes, new_figure, save_png
from utils.training.recipes import RECIPES

RECIPE = "reference"   # the protocol's training loop, for every deep method
# The paper's numbers where it has them (mAP@R, per method and bit length):
# ImageNet-100 as HashNet's Table 1 is copied in Hindawi Adv. Multimedia 2017,
# art. 8961091, Table 3; the HashNet rows as scripts/compare_runs.py has them.
PAPER = {
    "imagenet": {"hashnet": PUBLISHED["imagenet"]["paper"],
                 "dhn": {16: 0.311, 32: 0.472, 48: 0.542, 64: 0.573},
                 "itq_cca": {16: 0.266, 32: 0.436, 48: 0.548, 64: 0.576},
                 "itq": {16: 0.326, 32: 0.462, 48: 0.517, 64: 0.552},
                 "sh": {16: 0.207, 32: 0.328, 48: 0.395, 64: 0.419},
                 "lsh": {16: 0.101, 32: 0.235, 48: 0.312, 64: 0.360}},
    "coco": {"hashnet": PUBLISHED["coco"]["paper"]},
}
ORDERING_REFERENCE = "imagenet"   # whose paper column a dataset without its own is set against
SKIP_CONVENTIONS = {  # result key -> (retrieval_metrics flags, what it is)
    "map": ({}, "a query without a relevant item in its top R counts 0 (DeepHash-pytorch)"),
    "map_skip_topk": ({"skip_no_relevant": True},
                      "such queries dropped (HashNet's PyTorch code)"),
    "map_skip_database": ({"skip_no_relevant_in_database": True},
                          "only queries without a relevant item in the whole database dropped "
                          "(HashNet's Caffe code)"),
}


# ---------------------------------------------------------------- the methods
def deep_methods():
    """The registered methods that train under the protocol's recipe,
    its default (HashNet) first."""
    default = RECIPES[RECIPE].default_method
    names = sorted(n for n, cls in methods.METHODS.items() if RECIPE in cls.recipes)
    return [default] + [n for n in names if n != default]


def chosen_methods(names):
    """``--methods``: names, or ``all`` (every deep method, then every shallow one)."""
    known = deep_methods() + sorted(SHALLOW_METHODS)
    if names == ["all"]:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"--methods {' '.join(unknown)}: unknown (choose from all, "
                        f"{', '.join(known)})")
    return list(dict.fromkeys(names))


def label_of(name):
    if name in SHALLOW_METHODS:
        return SHALLOW_METHODS[name].label
    return methods.registry.method_label(methods.METHODS[name])


# ---------------------------------------------------------------- flags for a deep run
def method_flags():
    """{--flag: the methods whose Settings have it} over every method."""
    owners = {}
    for name, cls in methods.METHODS.items():
        for field in dataclasses.fields(cls.Settings):
            owners.setdefault(f"--{field.name}", set()).add(name)
    return owners


def flags_for(method, training_flags):
    """``training_flags`` without the method flags ``method`` does not have
    (a flag and its value, or ``--flag=value``)."""
    owners, actions = method_flags(), build_parser()._option_string_actions
    kept, skip_value = [], False
    for token in training_flags:
        if skip_value:
            skip_value = False
            continue
        flag = token.split("=")[0]
        if flag in owners and method not in owners[flag]:
            skip_value = "=" not in token and actions[flag].nargs != 0
            continue
        kept.append(token)
    return kept


@dataclasses.dataclass
class Comparison:
    """Where a comparison writes, and what every run shares."""
    dataset: str
    data_path: str
    list_dir: str
    backbone: str
    arch: str
    bits: list
    out: str
    training_flags: list

    def run_dir(self, name, bit):
        return os.path.join(self.out, "runs", f"{name}-{bit}")

    def result_path(self, name, bit):
        return os.path.join(self.out, "results", f"{name}-{bit}.json")

    def argv(self, method, bit, *extra):
        """main_single_gpu.py's flags of ``method``'s run at ``bit``."""
        run = self.run_dir(method, bit)
        return ["--dataset", self.dataset, "--data-path", self.data_path, "--list-dir",
                self.list_dir, "--backbone", self.backbone, "--arch", self.arch, "--bit", str(bit),
                "--recipe", RECIPE, "--method", method, "--output-dir", os.path.join(run, "output"),
                "--log_path", os.path.join(run, "logs"), *flags_for(method, self.training_flags),
                *extra]


# ---------------------------------------------------------------- measuring codes
def protocol_metrics(query, database, topk):
    """mAP@R (three skip conventions), tie-aware mAP and P/R@H<=2 of codes
    ``query`` / ``database`` (each (codes ±1, labels))."""
    result = {}
    for key, (flags, _) in SKIP_CONVENTIONS.items():
        metrics = retrieval_metrics(*query, *database, topk, show_progress=False, **flags)
        result[key] = metrics["map"]
        if not flags:
            result.update({k: metrics[k] for k in (
                "map_tie_aware", "precision_radius", "recall_radius", "topk", "num_queries",
                "num_database", "queries_without_relevant_in_topk",
                "queries_without_relevant_in_database")})
    return result


def trained_prefix(args):
    """The checkpoint a finished deep run is measured with: its best, else its last."""
    for name in ("model_best", "last"):
        prefix = os.path.join(args.output_dir, f"{name}_{args.bit}")
        if os.path.isfile(prefix + ".pdparams"):
            return prefix
    raise UserError(f"{args.output_dir}: no checkpoint after training")


def measure_deep(comparison, name, bit):
    """Train ``name`` at ``bit`` (resuming a stopped run), then measure its
    best checkpoint."""
    run = comparison.run_dir(name, bit)
    resume = ["--resume"] if os.path.isdir(os.path.join(run, "output")) and any(
        f.startswith("last_") for f in os.listdir(os.path.join(run, "output"))) else []
    args = parse_args(comparison.argv(name, bit, *resume))
    engine.run(args)
    prefix = trained_prefix(args)
    model = models.build(args.arch, bit)
    load_weights(model, prefix, models.arch_of_state)
    loaders = engine.make_loaders(args, ("test", "database"))
    query, database = engine.encode_queries_and_database(model, loaders["test"],
                                                         loaders["database"], args.method)
    return dict(protocol_metrics(query, database, args.topK), checkpoint=prefix)


class Features:
    """The backbone's features of the three splits, computed on first use."""

    def __init__(self, comparison):
        self.comparison, self.splits = comparison, None

    def get(self):
        if self.splits is None:
            c = self.comparison
            args = parse_args(c.argv(RECIPES[RECIPE].default_method, c.bits[0]))
            engine.setup_runtime(args)
            model = models.build(args.arch, args.bit)
            model.load_backbone(args.backbone)
            self.splits = backbone_features(model, args.backbone, data_settings(args),
                                            ("train", "test", "database"),
                                            os.path.join(c.out, "features"), args.batch_size)
            self.topk = args.topK
        return self.splits


def measure_shallow(features, name, bit, seed=0):
    """Fit ``name`` on the training features at ``bit``; measure its codes.
    Its random draws come from numpy's generator seeded with (seed, bit)."""
    splits = features.get()
    method = SHALLOW_METHODS[name](bit, np.random.default_rng([seed, bit])).fit(*splits["train"])
    query, database = ((method.encode(splits[s][0]), splits[s][1]) for s in ("test", "database"))
    return protocol_metrics(query, database, features.topk)


def measure_all(comparison, names):
    """Each (method, bit) not measured yet, shallow ones first (minutes, not hours)."""
    features = Features(comparison)
    order = sorted(names, key=lambda name: name not in SHALLOW_METHODS)   # stable: shallow first
    for name in order:
        for bit in comparison.bits:
            path = comparison.result_path(name, bit)
            if os.path.isfile(path):
                print(f"{name} {bit} bits: measured before ({path}): skipped", flush=True)
                continue
            start, cpu = time.time(), time.process_time()
            result = (measure_shallow(features, name, bit) if name in SHALLOW_METHODS
                      else measure_deep(comparison, name, bit))
            result.update(method=name, bit=bit, seconds=round(time.time() - start, 1),
                          cpu_seconds=round(time.process_time() - cpu, 1))
            atomic_write_json(result, path)
            print(f"{name} {bit} bits: mAP {result['map']:.4f}, P@H<=2 "
                  f"{result['precision_radius']:.4f} ({result['seconds']:.0f} s)", flush=True)


# ---------------------------------------------------------------- the table
def collect(comparison, names):
    """{method: {bit: result}} of what has been measured."""
    table = {}
    for name in names:
        for bit in comparison.bits:
            with open(comparison.result_path(name, bit)) as f:
                table.setdefault(name, {})[bit] = json.load(f)
    return table


def cells(values, bits, digits=4):
    return " | ".join("–" if values.get(b) is None else f"{values[b]:.{digits}f}" for b in bits)


def markdown(comparison, table, topk):
    """The paper-style table (methods × bits: mAP@R, P@H<=2), the paper's
    numbers beside ours where it has them, and the skip conventions where
    they differ."""
    bits, paper = comparison.bits, PAPER.get(comparison.dataset, {})
    head = " | ".join(f"{b} bits" for b in bits)
    lines = [f"mAP@{topk} and precision within Hamming radius 2 on {comparison.dataset}"
             f" (`{comparison.dataset}` lists, `--arch {comparison.arch}`):", "",
             f"| method | mAP@{topk}: {head} | P@H≤2: {head} |",
             "|---|" + "---|" * (2 * len(bits))]
    for name, results in table.items():
        maps = {b: r["map"] for b, r in results.items()}
        precisions = {b: r["precision_radius"] for b, r in results.items()}
        lines.append(f"| {label_of(name)} | {cells(maps, bits)} | {cells(precisions, bits)} |")
        if name in paper:
            lines.append(f"| {label_of(name)}, the paper's | {cells(paper[name], bits, 3)} | "
                         + " | ".join("–" for _ in bits) + " |")
    if not paper:
        reference = PAPER[ORDERING_REFERENCE]
        lines += ["", f"The paper has no {comparison.dataset} column; its ImageNet-100 numbers "
                      "(mAP@1000), for the ordering only:", "",
                  f"| method (the paper's, ImageNet-100) | {head} |", "|---|" + "---|" * len(bits)]
        lines += [f"| {label_of(n)} | {cells(v, bits, 3)} |" for n, v in reference.items()]
    lines += skip_convention_lines(table, bits)
    return "\n".join(lines) + "\n"


def skip_convention_lines(table, bits):
    """mAP under the other skip conventions, for the methods where it differs."""
    other = [k for k in SKIP_CONVENTIONS if k != "map"]
    rows = [(name, key) for name, results in table.items() for key in other
            if any(r[key] != r["map"] for r in results.values())]
    if not rows:
        return ["", "Every query has a relevant item in its top R: the three skip conventions "
                    "give the same mAP."]
    lines = ["", "mAP where another skip convention gives another number:", "",
             "| method | convention | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---|---|" + "---|" * len(bits)]
    for name, key in rows:
        values = {b: r[key] for b, r in table[name].items()}
        lines.append(f"| {label_of(name)} | {SKIP_CONVENTIONS[key][1]} | {cells(values, bits)} |")
    return lines


def plot(comparison, table, topk, path):
    """mAP@R against the code length, a line per method (shallow dashed),
    the paper's numbers (where it has them for this dataset) as open markers."""
    fig = new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    paper = PAPER.get(comparison.dataset, {})
    from matplotlib import colormaps
    colours = colormaps["tab20"].colors   # twelve methods: one colour each
    for i, (name, results) in enumerate(table.items()):
        bits = sorted(results)
        line, = ax.plot(bits, [results[b]["map"] for b in bits], marker="o", label=label_of(name),
                        linestyle="--" if name in SHALLOW_METHODS else "-",
                        color=colours[(2 * i) % 20 + (2 * i) // 20])
        if name in paper:
            ax.plot(sorted(paper[name]), [paper[name][b] for b in sorted(paper[name])],
                    marker="o", markerfacecolor="none", linestyle=":", color=line.get_color(),
                    label=f"{label_of(name)} (paper)")
    ax.set_xticks(comparison.bits)
    finish_axes(ax, "code length (bits)", f"mAP@{topk}",
                f"methods on {comparison.dataset}: mAP@{topk} against code length",
                legend={"fontsize": "small", "ncol": 2})
    return save_png(fig, path)


def write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_outputs(comparison, names):
    table = collect(comparison, names)
    topk = next(iter(next(iter(table.values())).values()))["topk"]
    report = {"dataset": comparison.dataset, "topk": topk, "bits": comparison.bits,
              "arch": comparison.arch, "backbone": comparison.backbone,
              "training_flags": comparison.training_flags,
              "skip_conventions": {k: words for k, (_, words) in SKIP_CONVENTIONS.items()},
              "methods": {name: {"label": label_of(name),
                                 "kind": "shallow" if name in SHALLOW_METHODS else "deep",
                                 "results": {str(b): r for b, r in results.items()}}
                          for name, results in table.items()},
              "paper": {name: {str(b): v for b, v in values.items()}
                        for name, values in PAPER.get(comparison.dataset, {}).items()},
              "seconds": round(sum(r["seconds"] for t in table.values() for r in t.values()), 1),
              "cpu_seconds": round(sum(r["cpu_seconds"] for t in table.values()
                                       for r in t.values()), 1)}
    atomic_write_json(report, os.path.join(comparison.out, "comparison.json"))
    text = markdown(comparison, table, topk)
    path = os.path.join(comparison.out, "comparison.md")
    atomic_write(path, lambda tmp: write_text(tmp, text))
    plot(comparison, table, topk, os.path.join(comparison.out, "map_vs_bits.png"))
    print(text, end="")
    print(f"wrote {path}, comparison.json and map_vs_bits.png in {comparison.out}; measuring "
          f"took {report['seconds']:.0f} s wall, {report['cpu_seconds']:.0f} s CPU")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, training_flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) \
        if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="python -m scripts.compare_methods",
                                description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, choices=sorted(DATASET_PRESETS))
    p.add_argument("--data-path", "--data_path", dest="data_path", default=None,
                   help="default datasets/<dataset>")
    p.add_argument("--list-dir", "--list_dir", dest="list_dir", default=None,
                   help="default data/<dataset>")
    p.add_argument("--backbone", default="imagenet",
                   help="the pretrained weights every method starts from (as main_single_gpu.py)")
    p.add_argument("--arch", default=models.DEFAULT_ARCH, choices=models.ARCHS)
    p.add_argument("--bits", type=int, nargs="+", default=[16, 32, 48, 64], choices=models.BITS)
    p.add_argument("--methods", nargs="+", default=["all"],
                   help="all, or names: " + ", ".join(deep_methods() + sorted(SHALLOW_METHODS)))
    p.add_argument("--out", default=None, help="default output/compare_<dataset>")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(ours)
    names = chosen_methods(args.methods)
    comparison = Comparison(
        args.dataset, args.data_path or os.path.join("datasets", args.dataset),
        args.list_dir or os.path.join("data", args.dataset), args.backbone, args.arch,
        sorted(set(args.bits)), args.out or os.path.join("output", f"compare_{args.dataset}"),
        training_flags)
    for name in names:   # every run's flags, checked before hours of training
        if name not in SHALLOW_METHODS:
            parse_args(comparison.argv(name, comparison.bits[0]))
    measure_all(comparison, names)
    write_outputs(comparison, names)
    return 0


if __name__ == "__main__":
    run_cli(main)
