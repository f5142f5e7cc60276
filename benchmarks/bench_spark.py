"""The data-preparation phases on Spark beside polars, on the same bench day: seconds, rows/s, peak memory.

    .venv/bin/python benchmarks/bench_spark.py                        # bench day: polars, Spark local[2], local[1]
    .venv/bin/python benchmarks/bench_spark.py --profile demo         # a quick smoke run
    .venv/bin/python benchmarks/bench_spark.py --masters 'local[2],local[4],local[8]'   # on a larger machine

The day is ``bench_data_prep.py``'s (generated there on first use, under ``benchmarks/_data/``). Each engine
runs every phase in one process of its own (``--masters``: a Spark master per run; ``polars``: the polars
stages), reading the files the previous phase wrote and writing its output: polars as the IO manager does (one
parquet object); Spark through ``run_stage``, exactly as the ``spark`` engine runs each stage for its asset (the
executors write part files + a manifest; phases 1 and 3 count their statistics and check counts in that same
job). Each phase is what its asset runs, with the statistics and check verdicts the asset reports:

* ``raw``    -- schema enforcement and quarantine, the day summary (``raw_interactions``);
* ``phase1`` -- classification, the positive-CTR filter, stats and checks (``filtered_interactions``);
* ``phase2`` -- the Delta catalog (from its file list) and the day's items with it (``video_catalog`` + ``item_meta``);
* ``phase3`` -- positive and negative pairs by distinct clients, stats and checks (``item_pairs``).

A Spark ``local[N]`` run is pinned to N cores (``sched_setaffinity``, inherited by its JVM; ``--no-pin`` leaves
it free): unpinned, ``local[1]`` still runs its JVM's garbage collector and JIT compiler and the Python driver on
the other core, so the 1 -> 2 core scaling would compare 2 cores with 2 cores.

Peak memory is the sum of the RSS of the engine's process and its children (the JVM of a Spark local master),
sampled every 0.1 s during the phase. Spark's session start is timed apart. ALS: seconds per iteration of
MLlib's implicit ALS beside ``implicit`` on the same confidence cells (the day's largest language).

Reference (issue 12): a straightforward Spark local[2] query of phase 1 plus both pair self-joins of a 20 M-row
day took 73 s after a 9 s start; the engine must not be slower, and must scale >= 1.7x from local[1] to local[2].
"""

import argparse
import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

from _child import run_child
from bench_data_prep import _paths
from bench_data_prep import generate as generate_day

HERE = Path(__file__).resolve().parent
PHASES = ("raw", "phase1", "phase2", "phase3")


class TreePeak:
    """Peak of the summed RSS of this process and its descendants, sampled every ``every`` seconds."""

    def __init__(self, every: float = 0.1):
        import psutil

        self._me = psutil.Process()
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = self._me.memory_info().rss
        for child in self._me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # a child that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.every)

    def __enter__(self) -> "TreePeak":
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def run_engine(engine: str, day: str, p: dict[str, Path], als_iterations: int, pin: bool = True) -> dict:
    """Runs inside the child: every phase on ``engine`` (``polars`` or a Spark master)."""
    cores = engine[engine.index("[") + 1 : -1] if "[" in engine else ""
    if pin and cores.isdigit() and int(cores) <= len(os.sched_getaffinity(0)):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: int(cores)])  # the JVM started below inherits it
    import polars as pl

    from recsys_assets.storage import LocalStore, write_parquet

    out_root = p["root"] / f"engine-{engine.replace('[', '').replace(']', '')}"
    store = LocalStore(out_root)
    day_d = dt.date.fromisoformat(day)
    results: dict[str, dict] = {}

    def timed(name: str, fn) -> None:
        with TreePeak() as peak:
            t = time.perf_counter()
            rows_in, rows_out = fn()
            seconds = time.perf_counter() - t
        results[name] = {"seconds": seconds, "rows_in": rows_in, "rows_out": rows_out, "peak_gib": peak.peak / 2**30}

    if engine == "polars":
        from recsys_assets.sources.lake import read_catalog
        from recsys_assets.stages import filtered_interactions as phase1
        from recsys_assets.stages import item_meta as phase2
        from recsys_assets.stages import item_pairs as phase3
        from recsys_assets.stages import raw_interactions as raw
        from recsys_assets.storage import scan_parquet

        def do_raw():
            snap = pl.read_parquet(p["snapshot"])
            enforced = raw.enforce_schema(snap)
            raw.summarize(enforced, day_d, raw.SnapshotRules())
            write_parquet(store, "raw.parquet", enforced.clean)
            return snap.height, enforced.clean.height

        def do_phase1():
            res = phase1.filter_interactions(scan_parquet(store, "raw.parquet"))
            phase1.validate(res.interactions)
            write_parquet(store, "filtered.parquet", res.interactions)
            return res.stats["rows_in"], res.interactions.height

        def do_phase2():
            cat = phase2.prepare_catalog(read_catalog(str(p["catalog"])), as_of=day_d)
            phase2.validate_catalog(cat)
            res = phase2.build_item_meta(scan_parquet(store, "filtered.parquet"), cat)
            phase2.validate_item_meta(res.items, res.coverage, 0.99)
            write_parquet(store, "meta.parquet", res.items)
            return res.items.height + res.missing.height, res.items.height

        def do_phase3():
            res = phase3.build_pairs(scan_parquet(store, "filtered.parquet"), scan_parquet(store, "meta.parquet"))
            phase3.validate(res.pairs, 1)
            write_parquet(store, "pairs.parquet", res.pairs)
            return results["phase1"]["rows_out"], res.pairs.height

        for name, fn in zip(PHASES, (do_raw, do_phase1, do_phase2, do_phase3)):
            timed(name, fn)
        if als_iterations:
            results["als"] = _als_implicit(store, p, als_iterations)
        return {"phases": results}

    from recsys_assets.spark.item_meta import catalog_files
    from recsys_assets.spark.pipes_job import job_params, parse_params, run_stage
    from recsys_assets.spark.session import build_session, spark_config
    from recsys_assets.stages.filtered_interactions import Phase1Rules
    from recsys_assets.stages.item_pairs import PairRules
    from recsys_assets.stages.raw_interactions import SnapshotRules
    from recsys_assets.storage import partition_sources

    conf = {"spark.driver.memory": "6g"}  # task counts: the engine's own for a local master (session.local_parallelism)
    with TreePeak() as peak:
        t = time.perf_counter()
        spark = build_session(spark_config(engine, conf=conf))
        spark.range(1).count()
        start = time.perf_counter() - t
    results["start"] = {"seconds": start, "rows_in": 0, "rows_out": 0, "peak_gib": peak.peak / 2**30}

    def stage(name: str, inputs: dict, outputs: dict, **params) -> dict:
        """One stage exactly as the ``spark`` engine runs it for its asset: ``run_stage`` writes the outputs
        (parts + manifest, from the executors) and reports statistics, verdicts and rows written."""
        extras = job_params(name, day_d, inputs, outputs, store.url, {}, **params)
        return run_stage(spark, parse_params(extras), log=lambda _: None)

    def sources(key: str) -> list[str]:
        return partition_sources(store, key)

    def do_raw():
        r = stage(
            "raw_interactions",
            {"snapshot": [str(p["snapshot"])]},
            {"clean": "raw.parquet", "quarantine": "quarantine.parquet"},
            rules=SnapshotRules(),
        )
        return r["rows_in"], r["outputs"]["clean"]["rows"]

    def do_phase1():
        r = stage(
            "filtered_interactions",
            {"raw_interactions": sources("raw.parquet")},
            {"table": "filtered.parquet"},
            rules=Phase1Rules(),
        )
        return r["stats"]["rows_in"], r["outputs"]["table"]["rows"]

    def do_phase2():
        stage("video_catalog", {"catalog": catalog_files(str(p["catalog"]))}, {"table": "catalog.parquet"})
        r = stage(
            "item_meta",
            {"filtered_interactions": sources("filtered.parquet"), "video_catalog": sources("catalog.parquet")},
            {"table": "meta.parquet"},
            min_coverage=0.99,
        )
        rows = r["outputs"]["table"]["rows"]
        return rows + r["missing_count"], rows

    def do_phase3():
        r = stage(
            "item_pairs",
            {"filtered_interactions": sources("filtered.parquet"), "item_meta": sources("meta.parquet")},
            {"table": "pairs.parquet"},
            rules=PairRules(),
        )
        return results["phase1"]["rows_out"], r["outputs"]["table"]["rows"]

    for name, fn in zip(PHASES, (do_raw, do_phase1, do_phase2, do_phase3)):
        timed(name, fn)
    if als_iterations:
        results["als"] = _als_mllib(spark, store, als_iterations)
    spark.stop()
    return {"phases": results}


def _als_cells(store):
    """The day's confidence cells of its largest language, with dense indexes: the same input for both ALS."""
    import polars as pl

    from recsys_assets.stages.als_factors import AlsParams, confidence_cells, language_matrix
    from recsys_assets.storage import scan_parquet

    inter = scan_parquet(store, "filtered.parquet")
    meta = scan_parquet(store, "meta.parquet").select("item_id", "language").collect()
    cells = confidence_cells(inter).join(meta, on="item_id")
    lang = cells["language"].value_counts(sort=True)["language"][0]
    lm = language_matrix(cells.filter(pl.col("language") == lang).drop("language"), lang, AlsParams())
    return lm


def _als_implicit(store, p, iterations: int) -> dict:
    from recsys_assets.stages.als_factors import AlsParams, ImplicitAls

    lm = _als_cells(store)
    params = AlsParams(iterations=iterations)
    t = time.perf_counter()
    ImplicitAls().fit(lm.matrix, params)
    s = time.perf_counter() - t
    return {"seconds": s, "per_iteration": s / iterations, "cells": int(lm.matrix.nnz), "language": lm.language}


def _als_mllib(spark, store, iterations: int) -> dict:
    """MLlib's implicit ALS on the same cells, written as parquet and read by Spark (not through the driver)."""
    import numpy as np
    import polars as pl
    from pyspark.ml.recommendation import ALS

    from recsys_assets.stages.als_factors import AlsParams
    from recsys_assets.storage import write_parquet

    lm = _als_cells(store)
    coo = lm.matrix.tocoo()
    cells = pl.DataFrame({"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32), "rating": coo.data})
    write_parquet(store, "als_cells.parquet", cells)
    df = spark.read.parquet(str(store.path("als_cells.parquet"))).persist()
    df.count()
    params = AlsParams()
    als = ALS(
        rank=params.factors,
        maxIter=iterations,
        regParam=params.regularization,
        implicitPrefs=True,
        alpha=1.0,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        seed=params.seed,
    )
    t = time.perf_counter()
    model = als.fit(df)
    model.itemFactors.count()
    s = time.perf_counter() - t
    return {"seconds": s, "per_iteration": s / iterations, "cells": int(lm.matrix.nnz), "language": lm.language}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="bench")
    ap.add_argument("--day", default="2026-11-03")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, default=HERE / "_data")
    ap.add_argument("--masters", default="local[2],local[1]", help="Spark masters to run, comma separated")
    ap.add_argument("--als-iterations", type=int, default=5, help="0 skips the ALS comparison")
    ap.add_argument("--no-pin", action="store_true", help="do not pin a local[N] run to N cores")
    ap.add_argument("--child")
    args = ap.parse_args()
    p = _paths(args.data, args.profile, args.day)
    if args.child == "generate":
        print(json.dumps(generate_day(args.profile, args.day, args.seed, p)))
        return
    if args.child:
        print(json.dumps(run_engine(args.child, args.day, p, args.als_iterations, pin=not args.no_pin)))
        return

    common = ["--profile", args.profile, "--day", args.day, "--seed", str(args.seed), "--data", str(args.data)]
    common += ["--als-iterations", str(args.als_iterations)] + (["--no-pin"] if args.no_pin else [])
    if not p["snapshot"].exists():
        print(f"generating {args.profile} day {args.day} under {p['platform']} …", flush=True)
        run_child(__file__, ["--child", "generate", *common], "generate")
    print(f"snapshot: {p['snapshot']} ({p['snapshot'].stat().st_size / 2**20:.0f} MiB); {os.cpu_count()} cores")
    engines = ["polars", *[m.strip() for m in args.masters.split(",") if m.strip()]]
    runs = {e: run_child(__file__, ["--child", e, *common], e)["phases"] for e in engines}

    print()
    print("| engine | phase | rows in | rows out | seconds | M rows/s | peak GiB (process + JVM) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for e, phases in runs.items():
        for name, r in phases.items():
            if name == "als":
                continue
            rate = f"{r['rows_in'] / r['seconds'] / 1e6:.2f}" if r["rows_in"] else ""
            print(
                f"| {e} | {name} | {r['rows_in']:,} | {r['rows_out']:,} | {r['seconds']:.1f} | {rate} | "
                f"{r['peak_gib']:.2f} |"
            )
    print()
    totals = {e: sum(ph[n]["seconds"] for n in PHASES) for e, ph in runs.items()}
    for e, total in totals.items():
        start = runs[e].get("start", {}).get("seconds")
        print(f"{e}: phases 1-3 with schema enforcement {total:.1f} s" + (f" (+ {start:.1f} s start)" if start else ""))
    if "local[1]" in totals and "local[2]" in totals:
        pinned = "each run pinned to its cores" if not args.no_pin else "not pinned"
        scale = totals["local[1]"] / totals["local[2]"]
        print(f"scaling local[1] -> local[2], phases 1-3 with enforcement: {scale:.2f}x ({pinned}; target >= 1.7x)")
        p13 = {e: sum(runs[e][n]["seconds"] for n in ("phase1", "phase3")) for e in ("local[1]", "local[2]")}
        print(f"scaling local[1] -> local[2], phase 1 + phase 3: {p13['local[1]'] / p13['local[2]']:.2f}x")
    if "local[2]" in totals:
        ref = sum(runs["local[2]"][n]["seconds"] for n in ("phase1", "phase3"))
        print(f"Spark local[2] phase 1 + phase 3 (pairs): {ref:.1f} s (reference: 73 s for phase 1 + both self-joins)")
    als = {e: ph["als"] for e, ph in runs.items() if "als" in ph}
    if als:
        print()
        print("| ALS engine | language | cells | iterations s | s / iteration |")
        print("|---|---|---:|---:|---:|")
        for e, r in als.items():
            name = "implicit" if e == "polars" else f"MLlib {e}"
            print(f"| {name} | {r['language']} | {r['cells']:,} | {r['seconds']:.1f} | {r['per_iteration']:.2f} |")


if __name__ == "__main__":
    main()
