"""Data preparation (phases 1-3) on one bench-sized day: seconds, rows/s and peak memory per stage.

    .venv/bin/python benchmarks/bench_data_prep.py                 # bench profile, 2026-11-03
    .venv/bin/python benchmarks/bench_data_prep.py --profile demo  # a quick smoke run

The day is generated once by the simulator and published as the real sources are laid out (a parquet
snapshot, a Delta catalog) under ``benchmarks/_data/``. Each stage then runs in its own process, reading
its input from the files the previous stage wrote and writing its output the way the IO manager does,
so time and peak RSS (``wait4``'s ``ru_maxrss``) are the stage's own:

* ``scan``     -- reading the snapshot parquet into memory: the floor any stage pays;
* ``raw``      -- schema enforcement and quarantine (``raw_interactions``);
* ``phase1``   -- classification and the positive-CTR client filter (``filtered_interactions``);
* ``phase2``   -- the day's unique items joined with the Delta catalog (``video_catalog`` + ``item_meta``);
* ``phase3``   -- positive and negative item pairs by distinct clients (``item_pairs``).

Targets (2 cores): phases 1-3 together under 20 s, each under 4 GiB peak; phase 1 within 5x the bare scan.
"""

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

from _child import run_child

HERE = Path(__file__).resolve().parent
STAGES = ("scan", "raw", "phase1", "phase2", "phase3")


def _paths(data: Path, profile: str, day: str) -> dict[str, Path]:
    root = data / f"{profile}-{day}"
    return {
        "root": root,
        "platform": root / "platform",
        "snapshot": root / "platform" / "snapshots" / f"dt={day}" / "part-00000.parquet",
        "catalog": root / "platform" / "catalog",
        "raw": root / "raw_interactions.parquet",
        "phase1": root / "filtered_interactions.parquet",
        "phase2": root / "item_meta.parquet",
        "phase3": root / "item_pairs.parquet",
    }


def generate(profile: str, day: str, seed: int, p: dict[str, Path]) -> dict:
    from recsys_assets.simulator.platform import Platform
    from recsys_assets.simulator.publish import publish_catalog, publish_day

    t = time.perf_counter()
    platform = Platform(profile, seed)
    publish_catalog(platform, p["platform"])
    publish_day(platform, p["platform"], dt.date.fromisoformat(day))
    return {"seconds": time.perf_counter() - t}


def run_stage(stage: str, day: str, p: dict[str, Path]) -> dict:
    """Runs inside the child process."""
    import polars as pl

    from recsys_assets.sources.lake import read_catalog
    from recsys_assets.stages import filtered_interactions, item_meta, item_pairs, raw_interactions
    from recsys_assets.storage import LocalStore, write_parquet

    store = LocalStore(p["root"])
    t = time.perf_counter()
    if stage == "scan":
        df = pl.read_parquet(p["snapshot"])
        rows_in, rows_out = df.height, df.height
    elif stage == "raw":
        raw = pl.read_parquet(p["snapshot"])
        enforced = raw_interactions.enforce_schema(raw)
        write_parquet(store, p["raw"].name, enforced.clean)
        rows_in, rows_out = raw.height, enforced.clean.height
    elif stage == "phase1":
        clean = pl.read_parquet(p["raw"])
        res = filtered_interactions.filter_interactions(clean)
        write_parquet(store, p["phase1"].name, res.interactions)
        rows_in, rows_out = clean.height, res.interactions.height
    elif stage == "phase2":
        inter = pl.read_parquet(p["phase1"])
        catalog = item_meta.prepare_catalog(read_catalog(str(p["catalog"])), as_of=dt.date.fromisoformat(day))
        res = item_meta.build_item_meta(inter, catalog)
        write_parquet(store, p["phase2"].name, res.items)
        rows_in, rows_out = inter.height, res.items.height
    elif stage == "phase3":
        inter = pl.read_parquet(p["phase1"])
        meta = pl.read_parquet(p["phase2"])
        res = item_pairs.build_pairs(inter, meta)
        write_parquet(store, p["phase3"].name, res.pairs)
        rows_in, rows_out = inter.height, res.pairs.height
    else:
        raise ValueError(stage)
    return {"seconds": time.perf_counter() - t, "rows_in": rows_in, "rows_out": rows_out}


def _child(stage: str, args: argparse.Namespace) -> dict:
    child_args = [
        "--child",
        stage,
        "--profile",
        args.profile,
        "--day",
        args.day,
        "--seed",
        str(args.seed),
        "--data",
        str(args.data),
    ]
    return run_child(__file__, child_args, stage)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="bench")
    ap.add_argument("--day", default="2026-11-03")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, default=HERE / "_data")
    ap.add_argument("--child", choices=STAGES + ("generate",))
    args = ap.parse_args()
    p = _paths(args.data, args.profile, args.day)

    if args.child:
        res = (
            generate(args.profile, args.day, args.seed, p)
            if args.child == "generate"
            else run_stage(args.child, args.day, p)
        )
        print(json.dumps(res))
        return

    if not p["snapshot"].exists():
        print(f"generating {args.profile} day {args.day} under {p['platform']} …", flush=True)
        g = _child("generate", args)
        print(f"  generated in {g['seconds']:.1f} s, peak {g['peak_rss_gib']:.2f} GiB")
    size_mib = p["snapshot"].stat().st_size / 2**20
    print(
        f"snapshot: {p['snapshot']} ({size_mib:.0f} MiB); {os.cpu_count()} cores; polars threads: "
        f"{os.environ.get('POLARS_MAX_THREADS', 'default')}"
    )
    results = {s: _child(s, args) for s in STAGES}
    scan = results["scan"]["seconds"]
    print()
    print("| stage | rows in | rows out | seconds | M rows/s | x scan | peak RSS GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s, r in results.items():
        print(
            f"| {s} | {r['rows_in']:,} | {r['rows_out']:,} | {r['seconds']:.2f} | "
            f"{r['rows_in'] / r['seconds'] / 1e6:.2f} | {r['seconds'] / scan:.1f} | {r['peak_rss_gib']:.2f} |"
        )
    print()
    phases = ("phase1", "phase2", "phase3")
    total = sum(results[s]["seconds"] for s in phases)
    peak = max(results[s]["peak_rss_gib"] for s in phases)
    ok = total < 20 and peak < 4
    ratio = results["phase1"]["seconds"] / scan
    print(f"phases 1-3: {total:.1f} s in all ({total / scan:.1f}x scan), peak {peak:.2f} GiB")
    print(
        f"targets: phases 1-3 < 20 s and < 4 GiB: {'met' if ok else 'NOT met'}; "
        f"phase 1 / scan = {ratio:.1f} (target <= 5): {'met' if ratio <= 5 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
