"""Hamming top-k search over 1,000,000 random 64-bit codes: the packed
popcount kernel (utils.retrieval.hamming, ties in index order) against the reference's
float method (codes as float32 ±1, q @ db.T, then argsort) in the same run,
and faiss.IndexBinaryFlat when faiss is importable.

    python benchmarks/bench_search.py
    python benchmarks/bench_search.py --database 100000 --queries 100 --float-queries 5   # quick
"""
import argparse
import os
import statistics
import sys
import time

# The float baseline's matrix-vector products run fastest single-threaded on
# small machines (OpenBLAS threading overhead); override by setting it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.retrieval import hamming  # noqa: E402


def float_search(q_float, db_float, bit, k):
    """The reference's way: Hamming = (bit - q.d)/2 as float, argsort, top k."""
    ham = 0.5 * (bit - q_float @ db_float.T)
    order = np.argsort(ham, axis=1)[:, :k]
    return order, np.take_along_axis(ham, order, axis=1)


def latency(fn, queries, repeat):
    """Median seconds of fn(one query) over `repeat` different queries."""
    times = []
    for i in range(repeat):
        q = queries[i % len(queries)][None]
        start = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", type=int, default=1_000_000)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--topk", type=int, default=100)
    p.add_argument("--queries", type=int, default=1000, help="queries for the throughput test")
    p.add_argument("--repeat", type=int, default=50, help="single queries timed (median)")
    p.add_argument("--float-queries", type=int, default=20,
                   help="queries timed with the float method (its throughput is extrapolated)")
    p.add_argument("--backends", default="all", help="comma list of numpy,numba or 'all'")
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    db = np.where(rng.random((args.database, args.bits), dtype=np.float32) < 0.5, -1, 1) \
        .astype(np.int8)
    queries = np.where(rng.random((args.queries, args.bits), dtype=np.float32) < 0.5, -1, 1) \
        .astype(np.int8)
    packed_db, packed_q = hamming.pack_codes(db), hamming.pack_codes(queries)
    backends = (hamming.available_backends() if args.backends == "all"
                else [hamming.resolve_backend(b) for b in args.backends.split(",")])
    print(f"database: {args.database} random {args.bits}-bit codes "
          f"({packed_db.nbytes / 2**20:.1f} MiB packed); top-{args.topk}; {os.cpu_count()} CPUs; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")

    index, t_index = timed(hamming.HammingIndex, packed_db)
    print(f"HammingIndex build (once per database): {t_index * 1e3:.1f} ms")
    db_float = db.astype(np.float32)
    q_float = queries.astype(np.float32)
    n_float = min(args.float_queries, args.queries)

    # float baseline
    float_one = latency(lambda q: float_search(q.astype(np.float32), db_float, args.bits,
                                               args.topk), queries, min(args.repeat, n_float))
    (f_idx, f_dist), t_float = timed(lambda: [np.concatenate(a) for a in zip(
        *(float_search(q_float[i:i + 1], db_float, args.bits, args.topk)
          for i in range(n_float)))])
    float_qps = n_float / t_float
    print(f"float dot product + argsort: single query {float_one * 1e3:.1f} ms; "
          f"{float_qps:.1f} queries/s (timed on {n_float} queries; "
          f"{args.queries / float_qps:.1f} s extrapolated to {args.queries})")

    for backend in backends:
        index.topk(packed_q[:2], args.topk, backend=backend)          # warm-up / JIT
        one = latency(lambda q, b=backend: index.topk(hamming.pack_codes(q), args.topk, backend=b),
                      queries, args.repeat)
        (idx, dist), t_all = timed(index.topk, packed_q, args.topk, backend)
        ref_d = np.sort(((args.bits - q_float[:n_float] @ db_float.T) // 2).astype(np.int64),
                        axis=1)[:, :args.topk]
        same = bool((dist[:n_float] == ref_d).all() and (dist[:n_float] == f_dist).all())
        qps = args.queries / t_all
        print(f"packed popcount [{backend}]: single query {one * 1e3:.2f} ms "
              f"({float_one / one:.0f}x float); {args.queries} queries in {t_all:.2f} s = "
              f"{qps:.0f} queries/s ({qps / float_qps:.0f}x float); "
              f"distances equal the float method's: {same}")

    if args.no_faiss:
        return
    try:
        import faiss
    except ImportError:
        print("faiss: not installed (pip install faiss-cpu to compare)")
        return
    fidx = faiss.IndexBinaryFlat(args.bits)
    fidx.add(packed_db)
    fidx.search(packed_q[:2], args.topk)
    one = latency(lambda q: fidx.search(hamming.pack_codes(q), args.topk), queries, args.repeat)
    (fd, fi), t_all = timed(fidx.search, packed_q, args.topk)
    same = bool((np.sort(fd, axis=1) == np.sort(dist.astype(fd.dtype), axis=1)).all())
    qps = args.queries / t_all
    print(f"faiss.IndexBinaryFlat ({faiss.omp_get_max_threads()} threads): single query "
          f"{one * 1e3:.2f} ms; {qps:.0f} queries/s; top-{args.topk} distances equal ours: {same}")


if __name__ == "__main__":
    main()
