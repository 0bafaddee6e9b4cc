"""mAP@K at COCO scale: the per-query argsort loop against the packed,
counting-sort fast path (utils.retrieval.metrics), side by side in one run.

Synthetic, label-correlated data: every class has a random direction in
R^bit; an item's code is sign(sum of its classes' directions / sqrt(#labels)
+ noise), so items sharing labels have close codes, mAP is realistic and
many database items tie at each Hamming distance.

    python benchmarks/bench_map.py                      # COCO scale: 5000 x 112218, 64 bits
    python benchmarks/bench_map.py --ref-queries 5000   # time the loop on every query
    python benchmarks/bench_map.py --queries 200 --database 5000 --ref-queries 50   # quick
"""
import argparse
import os
import resource
import sys
import time
import tracemalloc

# The loop's matrix-vector products run fastest single-threaded on small
# machines (OpenBLAS threading overhead): a fair, not a handicapped, baseline.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.retrieval import hamming  # noqa: E402
from utils.retrieval.metrics import (mean_average_precision, mean_average_precision_reference,
                                     retrieval_metrics)


def synthetic_coco(n_query, n_db, bit, n_class, noise, seed):
    """Multi-hot labels with Zipf-like class frequencies (1-4 labels per item)
    and codes correlated with them. Returns (qB, qL, dB, dL)."""
    rng = np.random.default_rng(seed)
    n = n_query + n_db
    popularity = 1.0 / np.arange(1, n_class + 1) ** 0.8
    popularity /= popularity.sum()
    n_labels = rng.choice([1, 2, 3, 4], size=n, p=[0.35, 0.3, 0.2, 0.15])
    labels = np.zeros((n, n_class), np.float32)
    for count in (1, 2, 3, 4):
        rows = np.flatnonzero(n_labels == count)
        # Gumbel top-k: `count` distinct classes drawn with the popularity weights
        keys = np.log(popularity)[None, :] - np.log(-np.log(rng.random((len(rows), n_class))))
        picks = np.argpartition(-keys, count - 1, axis=1)[:, :count]
        labels[rows[:, None], picks] = 1
    directions = rng.standard_normal((n_class, bit)).astype(np.float32)
    embed = labels @ directions / np.sqrt(labels.sum(axis=1, keepdims=True))
    # per-item noise scale: some items sit on their label prototype (they fill
    # small Hamming balls, as trained codes do), others are far from it
    scale = noise * rng.exponential(1.0, size=(n, 1)).astype(np.float32)
    embed += scale * rng.standard_normal((n, bit)).astype(np.float32)
    codes = np.where(embed >= 0, 1, -1).astype(np.int8)
    return codes[:n_query], labels[:n_query], codes[n_query:], labels[n_query:]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def peak_traced(fn, *args, **kwargs):
    """Peak bytes allocated through Python/numpy while running fn (numba's
    own per-thread buffers are not traced; see ru_maxrss for the process)."""
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("--database", type=int, default=112218)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--topk", type=int, default=5000, help="K of mAP@K (-1: whole database)")
    p.add_argument("--noise", type=float, default=1.0, help="code noise; higher = lower mAP")
    p.add_argument("--ref-queries", type=int, default=500,
                   help="queries timed with the per-query loop (extrapolated to all)")
    p.add_argument("--backend", default="auto", choices=["auto", "numpy", "numba"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    backend = hamming.resolve_backend(args.backend)
    qB, qL, dB, dL = synthetic_coco(args.queries, args.database, args.bits, args.classes,
                                    args.noise, args.seed)
    n_ref = min(max(args.ref_queries, 1), args.queries)
    print(f"data: {args.queries} queries x {args.database} database codes, {args.bits} bits, "
          f"{args.classes} classes, mAP@{args.topk}, seed {args.seed}")
    print(f"backend: {backend} (available: {', '.join(hamming.available_backends())}); "
          f"{os.cpu_count()} CPUs; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")

    # warm-up on a tiny slice: numba compiles or loads its cache here, not in the timing
    _, warm = timed(mean_average_precision, qB[:2], qL[:2], dB[:50], dL[:50], 10,
                    backend=backend)
    _, warm_curves = timed(retrieval_metrics, qB[:2], qL[:2], dB[:50], dL[:50], 10,
                           show_progress=False, backend=backend)
    print(f"warm-up (JIT compile / cache load, not timed below): {warm + warm_curves:.2f} s")

    ref_map, t_ref = timed(mean_average_precision_reference, qB[:n_ref], qL[:n_ref], dB, dL,
                           args.topk)
    t_ref_all = t_ref * args.queries / n_ref
    fast_sub = mean_average_precision(qB[:n_ref], qL[:n_ref], dB, dL, args.topk, backend=backend)
    fast_map, t_fast = timed(mean_average_precision, qB, qL, dB, dL, args.topk, backend=backend)
    metrics, t_curves = timed(retrieval_metrics, qB, qL, dB, dL, args.topk, show_progress=False,
                              backend=backend)
    full_ref = n_ref == args.queries

    print(f"per-query argsort loop: {t_ref:.2f} s for {n_ref} queries"
          + ("" if full_ref else f" -> {t_ref_all:.1f} s extrapolated to {args.queries}"))
    print(f"fast mAP@{args.topk} [{backend}]: {t_fast:.3f} s for {args.queries} "
          "queries")
    print(f"speed-up (mAP): {t_ref_all / t_fast:.1f}x")
    print(f"mAP reference loop ({n_ref} queries): {ref_map:.15f}")
    print(f"mAP fast path      ({n_ref} queries): {fast_sub:.15f}")
    print(f"|difference|: {abs(ref_map - fast_sub):.3e}")
    print(f"mAP fast path (all {args.queries} queries): {fast_map:.6f}")
    print(f"all metrics (mAP, tie-aware mAP, P/R@H<=2, PR curve, P@N): {t_curves:.3f} s "
          f"({t_ref_all / t_curves:.1f}x the loop's mAP alone)")
    print(f"  mAP {metrics['map']:.4f}  tie-aware mAP {metrics['map_tie_aware']:.4f}  "
          f"P@H<=2 {metrics['precision_radius']:.4f}  R@H<=2 {metrics['recall_radius']:.4f}  "
          f"P@1000 {dict(zip(*metrics['precision_at_n'].values())).get(1000, float('nan')):.4f}")
    traced_map = peak_traced(mean_average_precision, qB, qL, dB, dL, args.topk, backend=backend)
    traced_all = peak_traced(retrieval_metrics, qB, qL, dB, dL, args.topk, show_progress=False,
                             backend=backend)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak traced allocations: mAP {traced_map / 2**20:.0f} MiB, all metrics "
          f"{traced_all / 2**20:.0f} MiB; process peak RSS (everything, incl. data and "
          f"the loop) {rss:.0f} MiB")


if __name__ == "__main__":
    main()
