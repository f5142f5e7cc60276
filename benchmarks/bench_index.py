"""Retrieval indexes at the seed's catalogue size: build time, recall and query latency.

    .venv/bin/python benchmarks/bench_index.py                          # 500 k items, dims 16 (ALS) and 32 (two-tower)
    .venv/bin/python benchmarks/bench_index.py --items 100000 --dims 16

For each dimension, one language of ``--items`` item vectors goes through the pipeline's own builder
(``stages/retrieval_index.build``, the default ``auto`` kind: IVF with nprobe tuned to the target recall)
and check (``validate``: recall@100 against exact search on a fresh query sample), then single-query
latency (``--queries`` queries one at a time: p50 / p99) and batched throughput (1,000 queries per call)
of the loaded index, beside exact search (``IndexFlatIP``) on the same queries. Each dimension runs in its
own process so its peak RSS is its own.

The vectors are synthetic, shaped like ALS item factors: 256 clusters, lognormal norms; queries are
Gaussian with the items' per-dimension mean and spread (client-like, not items themselves).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, dim))
    v = centres[rng.integers(0, 256, n)] + 0.6 * rng.standard_normal((n, dim))
    return (v * rng.lognormal(0, 0.3, (n, 1))).astype(np.float32)


def latency(index, queries: np.ndarray, k: int) -> dict:
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def one(a) -> dict:
    import faiss
    import polars as pl

    from recsys_assets.stages import retrieval_index as ri

    faiss.omp_set_num_threads(a.threads)
    v = vectors(a.items, a.dim)
    table = pl.DataFrame(
        {
            "item_id": np.arange(a.items, dtype=np.int64),
            "language": ["hindi"] * a.items,
            "vector": pl.Series(v, dtype=pl.Array(pl.Float32, a.dim)),
        }
    )
    t = time.perf_counter()
    art, summary = ri.build(table)
    build_s = time.perf_counter() - t
    info = art.config["languages"]["hindi"]
    t = time.perf_counter()
    checks = ri.validate(art, table)
    check_s = time.perf_counter() - t
    faiss.omp_set_num_threads(a.threads)
    index = ri.ItemIndex(art)
    rng = np.random.default_rng(1)
    q = (rng.standard_normal((a.queries, a.dim)) * v.std(0) + v.mean(0)).astype(np.float32)
    ann = latency(index._index["hindi"], q, 100)
    exact_index = faiss.IndexFlatIP(a.dim)
    exact_index.add(v)
    exact = latency(exact_index, q[: max(50, a.queries // 10)], 100)
    batch = (rng.standard_normal((1000, a.dim)) * v.std(0) + v.mean(0)).astype(np.float32)
    t = time.perf_counter()
    got, _ = index.search("hindi", batch, 100)
    batch_s = time.perf_counter() - t
    want = exact_index.search(batch, 100)[1]
    recall = float(np.mean([len(np.intersect1d(g, w)) / 100 for g, w in zip(got, want)]))
    return {
        "items": a.items,
        "dim": a.dim,
        "kind": info["kind"],
        "nlist": info.get("nlist"),
        "nprobe": info.get("nprobe"),
        "build_s": build_s,
        "check_s": check_s,
        "check_recall@100": checks["ann_recall_at_100"][1]["worst_recall"],
        "client_like_recall@100": recall,
        "ann_p50_ms": ann["p50_ms"],
        "ann_p99_ms": ann["p99_ms"],
        "exact_p50_ms": exact["p50_ms"],
        "exact_p99_ms": exact["p99_ms"],
        "batch_1000_qps": 1000 / batch_s,
        "index_mib": len(art.arrays["hindi.index"]) / 2**20,
        "threads": a.threads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=500_000)
    ap.add_argument("--dims", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="faiss threads at query time (serving: 1 per request)")
    ap.add_argument("--dim", type=int, help=argparse.SUPPRESS)  # child mode
    a = ap.parse_args()
    if a.dim:
        print(json.dumps(one(a)))
        return
    from _child import print_markdown, run_child

    rows = []
    for dim in a.dims:
        args = ["--items", str(a.items), "--queries", str(a.queries), "--threads", str(a.threads), "--dim", str(dim)]
        rows.append(run_child(__file__, args, f"dim {dim}"))
    print_markdown(rows)


if __name__ == "__main__":
    main()
