"""Search over many candidates: polyalign's brute force against the faiss indexes of ``polyalign index``.

One million random unit vectors (d = 128) are the candidates. Each method answers single queries
(a batch of one, as ``polyalign search`` does) for the top 10 by inner product; the table gives the
median and 95th-percentile latency, the memory the method holds (the candidate tensor or the
serialised index) and its peak while querying, the build time, and recall@10 against exact search
for two query sets: ``random`` (fresh random unit vectors: no candidate is near, the hardest case
for an approximate index) and ``near`` (a candidate plus noise, cosine about 0.9 to it: a query that
has a true match, as in retrieval; ``source_in_top_10`` is how often that candidate is returned).
Indexes are built by :func:`polyalign.inference.vector_index.build_index`, the code ``polyalign index`` runs.

    python benchmarks/search.py                    # writes benchmarks/results/search.json
    python benchmarks/search.py --n 100000 --queries 50   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import polyalign
from polyalign.inference.trained import rank_hits
from polyalign.inference.vector_index import IndexOptions, build_index, exact_top

RESULTS = Path(__file__).resolve().parent / "results" / "search.json"
K = 10


def status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def query_sets(rng: np.random.Generator, candidates: np.ndarray, q: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``random``: fresh unit vectors; ``near``: a random candidate plus noise (cosine ~0.9 to it);
    and the rows of the candidates the ``near`` queries were made from."""
    n, d = candidates.shape
    sources = rng.choice(n, q, replace=False)
    near = candidates[sources] + 0.48 * unit_rows(rng, q, d)
    return {"random": unit_rows(rng, q, d), "near": near / np.linalg.norm(near, axis=1, keepdims=True)}, sources


def timed_queries(search, queries: np.ndarray) -> tuple[list[float], np.ndarray, float]:
    """Seconds per single query, the top-K rows found, and the peak resident memory rise (MB)."""
    search(queries[:1])  # warm-up
    Path("/proc/self/clear_refs").write_text("5")
    base = status_kb("VmRSS")
    times, found = [], []
    for row in queries:
        t0 = time.perf_counter()
        found.append(search(row[None]))
        times.append(time.perf_counter() - t0)
    return times, np.stack(found), (status_kb("VmHWM") - base) / 1024


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found.tolist(), truth.tolist())]))


def top_of(index):
    """A single-query search function over a faiss index: the top-K row ids."""
    return lambda q: index.search(q, K)[1][0]


def serialized_mb(index) -> float:
    import faiss

    return faiss.serialize_index(index).nbytes / 2**20


def table(report: dict) -> str:
    """Markdown: one row per method and setting."""
    lines = ["| method | setting | build | memory held | peak while querying | median / p95 per query (random) | "
             "recall@10 (random) | median per query (near) | recall@10 (near) | near: source in top 10 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        setting = ", ".join(f"{k} {row[k]}" for k in ("nlist", "nprobe", "hnsw_m", "ef_search") if k in row)
        rand, near = row["random"], row["near"]
        peak = max(rand["query_peak_mb"], near["query_peak_mb"])
        lines.append(f"| {row['method']} | {setting or '—'} | {row['build_s']:.0f} s | {row['held_mb']:.0f} MB | "
                     f"+{peak:.0f} MB | {rand['median_ms']:.2f} / {rand['p95_ms']:.2f} ms | {rand['recall_at_10']:.3f} | "
                     f"{near['median_ms']:.2f} ms | {near['recall_at_10']:.3f} | {near['source_in_top_10']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="candidates")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200, help="single queries timed per query set")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads while querying")
    parser.add_argument("--build-threads", type=int, default=1, help="faiss threads while building")
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="only print the Markdown table of --out")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    import faiss

    load_at_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    candidates = unit_rows(rng, args.n, args.dim)
    queries, sources = query_sets(rng, candidates, args.queries)
    faiss.omp_set_num_threads(args.build_threads)
    truth = {name: exact_top(candidates, q, K) for name, q in queries.items()}
    bank = torch.from_numpy(candidates)
    score = polyalign.build("loss", "clip").score  # Σ_q z_q · z_t; one query modality: the inner product
    rows: list[dict] = []

    def measure(method: str, search, held_mb: float, build_s: float, **settings) -> None:
        faiss.omp_set_num_threads(args.threads)
        row = {"method": method, **settings, "held_mb": round(held_mb, 1), "build_s": round(build_s, 2)}
        for name, q in queries.items():
            times, found, peak = timed_queries(search, q)
            row[name] = {"median_ms": 1e3 * statistics.median(times),
                         "p95_ms": 1e3 * float(np.percentile(times, 95)),
                         "query_peak_mb": round(peak, 1), f"recall_at_{K}": recall(found, truth[name])}
            if name == "near":
                row[name]["source_in_top_10"] = float(np.mean([s in f for s, f in zip(sources, found.tolist())]))
        rows.append(row)
        print(json.dumps(row), flush=True)

    def brute(q: np.ndarray) -> np.ndarray:  # what `polyalign search --candidates b=FILE.safetensors` runs
        scores = score({"a": torch.from_numpy(q)}, bank, "b")
        return np.array([h.index for h in rank_hits(scores, K)[0]])

    measure("polyalign brute force (score + rank_hits)", brute, bank.numel() * 4 / 2**20, 0.0)
    measure("torch matmul + topk", lambda q: torch.topk(torch.from_numpy(q) @ bank.T, K).indices[0].numpy(),
            bank.numel() * 4 / 2**20, 0.0)

    def build(options: IndexOptions):
        faiss.omp_set_num_threads(args.build_threads)
        t0 = time.perf_counter()
        index = build_index(candidates, options)
        return index, time.perf_counter() - t0

    index, seconds = build(IndexOptions("flat"))
    measure("faiss flat (exact)", top_of(index), serialized_mb(index), seconds)
    index, seconds = build(IndexOptions("ivf", nlist=args.nlist))
    for nprobe in args.nprobe:
        index.nprobe = nprobe
        measure("faiss ivf", top_of(index), serialized_mb(index), seconds, nlist=args.nlist, nprobe=nprobe)
    index, seconds = build(IndexOptions("hnsw", hnsw_m=args.hnsw_m))
    for ef in args.ef_search:
        index.hnsw.efSearch = ef
        measure("faiss hnsw", top_of(index), serialized_mb(index), seconds, hnsw_m=args.hnsw_m, ef_search=ef)
    report = {"n": args.n, "dim": args.dim, "k": K, "queries_per_set": args.queries, "threads": args.threads,
              "build_threads": args.build_threads, "machine": {
                  "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                               if line.startswith("model name")), platform.processor()),
                  "cores": os.cpu_count(), "torch": torch.__version__, "faiss": faiss.__version__,
                  "python": platform.python_version(), "load_average_at_start": load_at_start,
                  "load_average_at_end": os.getloadavg()},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
