"""Search indexes (utils/retrieval/index/) at 1M and 10M 64-bit codes: build
time, single-query latency, batch throughput, recall@100 against the exact
scan, and memory, for each backend.

    python benchmarks/bench_index.py                          # 1M and 10M, ~15 min on 2 cores
    python benchmarks/bench_index.py --sizes 100000 --milvus-size 100000 --queries 200   # quick

The codes are synthetic and clustered, like a trained model's: ``--centres``
random 64-bit centres; each code is a centre drawn uniformly with every bit
flipped independently with probability ``--flip`` (0.08: about 5 bits from
its centre, 7 from a sibling; other clusters are ~32 bits away). Queries are
fresh draws from the same centres (not in the database).
Recall@100 counts ties: a returned item is a hit when its true distance is
at most the exact 100th distance (any item at that distance is as good).
Memory is the index's own size: the exact scan's packed codes plus their
transposed words, faiss's serialised index, milvus-lite's folder on disk.
The embedded milvus-lite (a single-process development build that inserts
~10k rows/s here) runs on the first ``--milvus-size`` codes only and its
item-by-item agreement with the exact scan is printed. faiss HNSW is built
at sizes up to ``--hnsw-max`` (its build is the slowest).
Ends with ``faiss IVF at 10M: recall@100 R, speed-up S.Sx over exact``
(single-query latency of the exact scan / of IVF).
"""
import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.retrieval.hamming import hamming_topk, resolve_backend  # noqa: E402
from utils.retrieval.index import build_index  # noqa: E402

K = 100
# IVF spec per size: the lists grow with the database (~sqrt(n)); at 10M the
# k-means is trained on 16 codes per list (65,536), which keeps its build to
# minutes on 2 cores (faiss's default, 256 per list, would take ~20 min here)
IVF = {1_000_000: "faiss:ivf,nlist=1024,nprobe=8",
       10_000_000: "faiss:ivf,nlist=4096,nprobe=32,train=65536"}
MULTIHASH = "faiss:multihash,tables=4,hash_bits=16,nflip=1"
HNSW = "faiss:hnsw,m=16,ef_search=128,ef_construction=40"


def clustered_codes(n, centres, flip, rng, block=1_000_000):
    """Packed uint8 [n, 8]: centres[random] with each bit flipped w.p. ``flip``."""
    out = np.empty((n, 8), np.uint8)
    for start in range(0, n, block):
        m = min(block, n - start)
        bits = centres[rng.integers(0, len(centres), m)] ^ (rng.random((m, 64), np.float32) < flip)
        out[start:start + m] = np.packbits(bits, axis=1)
    return out


def ivf_spec(n):
    nlist = max(16, 1 << int(round(np.log2(np.sqrt(n)))))
    return IVF.get(n, f"faiss:ivf,nlist={nlist},nprobe={max(4, nlist // 128)}")


def median_latency(index, queries, count):
    times = []
    for q in queries[:count]:
        start = time.perf_counter()
        index.search(q[None], K)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def index_bytes(index, directory):
    if index.backend == "exact":
        return index.codes().nbytes * 2   # packed + transposed words of the scan
    if index.backend == "faiss":
        return index.faiss.serialize_index_binary(index.index).nbytes
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(directory) for f in files)


def recall_with_ties(distances, exact_kth):
    return float(((distances <= exact_kth[:, None]) & (distances >= 0)).sum() / distances.size)


def run_backend(spec, db, queries, args, exact):
    """One row: build, latency, QPS, recall, memory (and the index, closed)."""
    directory = tempfile.mkdtemp(prefix="bench-index-", dir=args.tmp)
    start = time.perf_counter()
    index = build_index(spec, db, 64, directory)
    build = time.perf_counter() - start
    try:
        latency = median_latency(index, queries, args.single)
        start = time.perf_counter()
        ids, distances = index.search(queries, K)
        qps = len(queries) / (time.perf_counter() - start)
        memory = index_bytes(index, directory)
    finally:
        index.close()
    row = {"spec": spec, "n": len(db), "build": build, "latency": latency, "qps": qps,
           "memory": memory, "ids": ids, "distances": distances}
    row["recall"] = 1.0 if exact is None else recall_with_ties(distances, exact["distances"][:, -1])
    return row


def print_row(row, exact_latency):
    speedup = exact_latency / row["latency"] if exact_latency else 1.0
    print(f"| {row['n']:>10,} | {row['spec']:<50} | {row['build']:8.1f} s | "
          f"{row['latency'] * 1e3:8.3f} ms | {speedup:6.1f}x | {row['qps']:9.0f} | "
          f"{row['recall']:.4f} | {row['memory'] / 2**20:8.1f} MiB |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000000,10000000", help="database sizes, comma separated")
    p.add_argument("--queries", type=int, default=1000, help="queries of the batch (QPS, recall)")
    p.add_argument("--single", type=int, default=100, help="single queries timed (median)")
    p.add_argument("--centres", type=int, default=4096)
    p.add_argument("--flip", type=float, default=0.08)
    p.add_argument("--milvus-size", type=int, default=1_000_000,
                   help="codes given to the embedded milvus-lite (0: skip it)")
    p.add_argument("--hnsw-max", type=int, default=1_000_000, help="largest size HNSW is built at")
    p.add_argument("--no-multihash", action="store_true")
    p.add_argument("--tmp", default=None, help="folder for the milvus-lite file")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(args.seed)
    centres = rng.random((args.centres, 64)) < 0.5
    queries = clustered_codes(args.queries, centres, args.flip, rng)
    print(f"synthetic clustered 64-bit codes: {args.centres} centres, bit flips p={args.flip}; "
          f"{args.queries} queries, top-{K}; {os.cpu_count()} CPUs, exact scan backend "
          f"{resolve_backend()}; load average {os.getloadavg()[0]:.1f} at start")
    print(f"| {'codes':>10} | {'index':<50} | {'build':>10} | {'1 query':>11} | {'vs exact':>7} | "
          f"{'batch QPS':>9} | recall@100 | {'memory':>12} |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    ivf_at = {}
    for n in sizes:
        db = clustered_codes(n, centres, args.flip, rng)
        exact = run_backend("exact", db, queries, args, None)
        print_row(exact, exact["latency"])
        specs = [ivf_spec(n)] + ([] if args.no_multihash else [MULTIHASH])
        specs += [HNSW] if n <= args.hnsw_max else []
        for spec in specs:
            row = run_backend(spec, db, queries, args, exact)
            print_row(row, exact["latency"])
            if spec.startswith("faiss:ivf"):
                ivf_at[n] = (row["recall"], exact["latency"] / row["latency"])
        m = min(n, args.milvus_size)
        if m and (m == n or n == sizes[0]):
            sub_exact = exact if m == n else run_backend("exact", db[:m], queries, args, None)
            row = run_backend("milvus:bin_flat", db[:m], queries, args, sub_exact)
            print_row(row, sub_exact["latency"])
            same = (np.array_equal(row["ids"], sub_exact["ids"])
                    and np.array_equal(row["distances"], sub_exact["distances"]))
            print(f"milvus-lite bin_flat at {m:,} codes: ids and distances equal the exact scan's "
                  f"for all {len(queries)} queries: {'yes' if same else 'NO'}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak memory of this process: {peak:.1f} GiB (milvus-lite runs in its own process)")
    for n, (recall, speedup) in ivf_at.items():
        size = f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"
        print(f"faiss IVF at {size}: recall@100 {recall:.4f}, speed-up {speedup:.1f}x over exact")


if __name__ == "__main__":
    main()
