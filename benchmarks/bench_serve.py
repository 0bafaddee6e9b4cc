"""The retrieval service (python -m deploy.serve) against predict.py, one
224-px JPEG query per request, over 1,000,000 synthetic 64-bit codes: p50 /
p95 / p99 latency and requests/s for 1 and 4 concurrent loopback clients,
with the exact index and a faiss index; in the same run, predict.py per
query (a process per lookup) as the baseline.

    python benchmarks/bench_serve.py
    python benchmarks/bench_serve.py --codes 100000 --requests 40 --predict-runs 2   # quick

The database: codes near 4,096 random centres (benchmarks/bench_index.py's),
written as a fingerprinted code cache for a random AlexNet HashNet, and a
list whose 1M lines name 1,000 real 256 px JPEGs in turn (so that
predict.py's montage and the thumbnails have files to read). The service
is started once per index and warmed with a few requests before timing.
"""
import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.bench_index import clustered_codes  # noqa: E402

BIT, NUM_CLASS, FILES = 64, 10, 1000
INDEXES = ("exact", "faiss:ivf,nlist=1024,nprobe=8,train=16384")


def write_images(folder, count, rng):
    """``count`` 256 px JPEGs of noise and a gradient; returns their list paths."""
    from PIL import Image
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    ramp = np.linspace(0, 255, 256, dtype=np.float32)[None, :, None]
    paths = []
    for i in range(count):
        noise = rng.normal(0, 40, (256, 256, 3)).astype(np.float32)
        pixels = np.clip(ramp * rng.random(3)[None, None] + noise, 0, 255).astype(np.uint8)
        path = f"images/{i:06d}.jpg"
        Image.fromarray(pixels).save(os.path.join(folder, path), quality=90)
        paths.append(path)
    return paths


def make_database(work, codes, rng):
    """Weights, a list of ``codes`` lines and their code cache under ``work``."""
    import paddle
    import models
    from deploy.cli import default_resize
    from utils.retrieval.code_cache import DatabaseCodeCache, make_fingerprint
    root, lists, save = (os.path.join(work, name) for name in ("root", "lists", "out"))
    os.makedirs(lists, exist_ok=True)
    weights = os.path.join(work, "alexnet_64.pdparams")
    paddle.seed(0)
    paddle.save(models.build("alexnet", BIT).state_dict(), weights)
    files = write_images(root, FILES, rng)
    paths = [files[i % FILES] for i in range(codes)]
    labels = np.eye(NUM_CLASS, dtype=np.uint8)[np.arange(codes) % NUM_CLASS]
    list_file = os.path.join(lists, "database.txt")
    with open(list_file, "w") as f:
        f.writelines(f"{p} {' '.join(map(str, row))}\n" for p, row in zip(paths, labels))
    packed = clustered_codes(codes, rng.random((4096, BIT)) < 0.5, 0.08, rng)
    fingerprint = make_fingerprint([weights], list_file, root, BIT, 224, default_resize(224), "cpu")
    cache = DatabaseCodeCache(os.path.join(save, f"database_code_demo_{BIT}.npz"), fingerprint)
    cache.stat_images(paths)   # as a run that encoded them would: the service checks them
    cache.write(packed, labels, (paths, labels))
    return root, lists, save, weights


def database_flags(root, lists, save, weights):
    return ["--bit", str(BIT), "--dataset", "demo", "--data_path", root, "--list-dir", lists,
            "--save_path", save, "--pretrained", weights[:-len(".pdparams")],
            "--num_threads", str(os.cpu_count() or 2)]


def start_service(flags, spec, port, log):
    proc = subprocess.Popen([sys.executable, "-m", "deploy.serve", *flags, "--index", spec,
                             "--port", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    import httpx
    url = f"http://127.0.0.1:{port}"
    start = time.time()
    while time.time() - start < 3600:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited ({proc.returncode}); see {log.name}")
        try:
            if httpx.get(url + "/health", timeout=5).json().get("ready"):
                return proc, url, time.time() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the service was not ready within an hour; see {log.name}")


def timed_requests(url, jpeg, count, clients):
    """Latencies (s) of ``count`` searches sent by ``clients`` threads, and the wall time."""
    import httpx
    latencies, lock = [], threading.Lock()

    def client(n):
        with httpx.Client(base_url=url, timeout=120) as c:
            for _ in range(n):
                start = time.perf_counter()
                response = c.post("/search", data={"topk": "10"},
                                  files={"image": ("q.jpg", jpeg, "image/jpeg")})
                took = time.perf_counter() - start
                response.raise_for_status()
                with lock:
                    latencies.append(took)
    shares = [count // clients + (i < count % clients) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - start


def percentiles(latencies):
    ms = np.asarray(latencies) * 1000
    return {p: float(np.percentile(ms, p)) for p in (50, 95, 99)}


def predict_per_query(flags, img, runs):
    """Median wall seconds of ``python predict.py`` per lookup (exact scan)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "predict.py", *flags, "--img", img, "--topk", "10"],
                              cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode:
            raise SystemExit(f"predict.py failed: {proc.stderr[-2000:]}")
    return statistics.median(times)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=200, help="timed requests per client count")
    p.add_argument("--predict-runs", type=int, default=3, help="predict.py lookups timed")
    p.add_argument("--indexes", nargs="+", default=list(INDEXES), help="--index specs")
    p.add_argument("--work", default=None, help="folder for the database (default: a temp one)")
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)   # a line per request otherwise
    rng = np.random.default_rng(0)
    work = args.work or tempfile.mkdtemp(prefix="bench-serve-")
    load = os.getloadavg()
    print(f"{args.codes:,} synthetic {BIT}-bit codes, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} at start; work folder {work}", flush=True)
    flags = database_flags(*make_database(work, args.codes, rng))
    query = os.path.join(work, "query.jpg")
    from PIL import Image
    Image.open(os.path.join(work, "root", "images", "000007.jpg")).resize((224, 224)).save(
        query, quality=90)
    with open(query, "rb") as f:
        jpeg = f.read()
    baseline = predict_per_query(flags, query, args.predict_runs)
    print(f"predict.py per query (a process per lookup, --index exact): {baseline:.2f} s "
          f"(median of {args.predict_runs})", flush=True)
    rows = []
    for spec in args.indexes:
        with open(os.path.join(work, "service.log"), "a") as log:
            proc, url, ready = start_service(flags, spec, free_port(), log)
            try:
                timed_requests(url, jpeg, 5, 1)   # warm the connection and the caches
                for clients in (1, 4):
                    latencies, wall = timed_requests(url, jpeg, args.requests, clients)
                    rows.append((spec, clients, percentiles(latencies), len(latencies) / wall,
                                 ready))
            finally:
                proc.kill()
                proc.wait()
    print()
    print("| --index | clients | p50 ms | p95 ms | p99 ms | requests/s | vs predict.py (p50) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for spec, clients, pct, rate, _ in rows:
        print(f"| `{spec}` | {clients} | {pct[50]:.1f} | {pct[95]:.1f} | {pct[99]:.1f} | "
              f"{rate:.1f} | {baseline / (pct[50] / 1000):.0f}x |")
    print()
    for spec in dict.fromkeys(r[0] for r in rows):
        print(f"service ready in {next(r[4] for r in rows if r[0] == spec):.0f} s with --index {spec}")
    one = next(r for r in rows if r[1] == 1)
    load = os.getloadavg()
    print(f"serve vs predict.py per query: {baseline / (one[2][50] / 1000):.0f}x "
          f"(p50 {one[2][50]:.1f} ms, 1 client, {one[0]}); load average {load[0]:.1f} at end")


if __name__ == "__main__":
    main()
