"""ALS on a bench-sized window: the pipeline (``train_als``) versus ``implicit`` called directly.

    .venv/bin/python benchmarks/bench_als.py                  # bench profile, 4 days ending 2026-11-04
    .venv/bin/python benchmarks/bench_als.py --profile demo --days 7

The window's phase-1 interactions are generated once (simulator -> schema enforcement -> phase 1) and
cached under ``benchmarks/_data/``. Then, each in its own process, so that peak RSS is its own:

* ``pipeline`` -- what the ``als_factors`` asset computes: read the window, join languages, build the
  confidences, apply the minimum counts, build each language's CSR matrix, fit, assemble the output;
* ``direct``   -- ``implicit``'s ``AlternatingLeastSquares.fit`` alone on the very same CSR matrices
  (saved by the pipeline run), same hyper-parameters, BLAS limited to one thread.

Printed: rows, matrix sizes and nnz, wall seconds, seconds per iteration, peak RSS, and the ratio
pipeline / direct (target <= 1.2).
"""

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

from _child import run_child

HERE = Path(__file__).resolve().parent


def _paths(data: Path, profile: str, end: str, days: int) -> dict[str, Path]:
    root = data / f"als-{profile}-{end}-{days}d"
    return {"root": root, "catalog": root / "item_language.parquet", "matrices": root / "matrices"}


def _window(end: str, days: int) -> list[dt.date]:
    e = dt.date.fromisoformat(end)
    return [e - dt.timedelta(days=i) for i in reversed(range(days))]


def generate(args, p) -> dict:
    import polars as pl

    from recsys_assets.simulator.platform import Platform
    from recsys_assets.stages.filtered_interactions import filter_interactions
    from recsys_assets.stages.raw_interactions import enforce_schema

    platform = Platform(args.profile, args.seed)
    p["root"].mkdir(parents=True, exist_ok=True)
    rows = 0
    for day in _window(args.end, args.days):
        out = p["root"] / f"filtered-{day}.parquet"
        if not out.exists():
            f = filter_interactions(enforce_schema(platform.interactions(day)).clean).interactions
            f.write_parquet(out)
        rows += pl.scan_parquet(out).select(pl.len()).collect().item()
    platform.catalog(None).select("item_id", "language").write_parquet(p["catalog"])
    return {"rows": rows}


def pipeline(args, p) -> dict:
    import numpy as np
    import polars as pl
    import scipy.sparse as sp

    from recsys_assets.stages import als_factors as als

    t0 = time.perf_counter()
    window = pl.concat([pl.read_parquet(p["root"] / f"filtered-{d}.parquet") for d in _window(args.end, args.days)])
    catalog = pl.read_parquet(p["catalog"])
    t_read = time.perf_counter() - t0
    params = als.AlsParams(iterations=args.iterations, num_threads=0)

    class Recording(als.ImplicitAls):
        """The real engine, also saving each matrix for the direct run and timing the fit alone."""

        fit_seconds = 0.0
        save_seconds = 0.0

        def fit(self, user_items, params):
            t = time.perf_counter()
            p["matrices"].mkdir(exist_ok=True)
            sp.save_npz(p["matrices"] / f"m{len(list(p['matrices'].iterdir()))}.npz", user_items, compressed=False)
            Recording.save_seconds += time.perf_counter() - t
            t = time.perf_counter()
            out = super().fit(user_items, params)
            Recording.fit_seconds += time.perf_counter() - t
            return out

    for f in p["matrices"].glob("*.npz") if p["matrices"].exists() else []:
        f.unlink()
    t1 = time.perf_counter()
    res = als.train_als(window, catalog, params, engine=Recording())
    total = time.perf_counter() - t1
    trained = [s for s in res.stats if s["trained"]]
    return {
        "rows": window.height,
        "read_seconds": t_read,
        "seconds": total - Recording.save_seconds,  # the benchmark's own saving is not the pipeline's
        "fit_seconds_inside": Recording.fit_seconds,
        "languages": [{k: s[k] for k in ("language", "clients", "items", "nnz")} for s in trained],
        "clients": int(sum(s["clients"] for s in trained)),
        "items": int(sum(s["items"] for s in trained)),
        "nnz": int(sum(s["nnz"] for s in trained)),
        "finite": bool(np.isfinite(res.item_factors["vector"].to_numpy()).all()),
    }


def direct(args, p) -> dict:
    import numpy as np
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recsys_assets.stages.als_factors import AlsParams

    params = AlsParams(iterations=args.iterations)
    mats = [sp.load_npz(f).tocsr().astype(np.float32) for f in sorted(p["matrices"].glob("*.npz"))]
    t = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        for m in mats:
            model = AlternatingLeastSquares(
                factors=params.factors,
                regularization=params.regularization,
                alpha=1.0,
                use_cg=True,
                iterations=params.iterations,
                random_state=params.seed,
            )
            model.fit(m, show_progress=False)
    return {"seconds": time.perf_counter() - t, "matrices": len(mats)}


def _child(stage: str, args) -> dict:
    child_args = [
        "--child",
        stage,
        "--profile",
        args.profile,
        "--end",
        args.end,
        "--days",
        str(args.days),
        "--iterations",
        str(args.iterations),
        "--seed",
        str(args.seed),
        "--data",
        str(args.data),
    ]
    return run_child(__file__, child_args, stage)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="bench")
    ap.add_argument("--end", default="2026-11-04")
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, default=HERE / "_data")
    ap.add_argument("--child", choices=("generate", "pipeline", "direct"))
    args = ap.parse_args()
    p = _paths(args.data, args.profile, args.end, args.days)
    if args.child:
        print(json.dumps({"generate": generate, "pipeline": pipeline, "direct": direct}[args.child](args, p)))
        return

    t = time.perf_counter()
    g = _child("generate", args)
    print(
        f"window: {args.days} days ending {args.end}, {g['rows']:,} phase-1 interactions "
        f"(ready in {time.perf_counter() - t:.0f} s); {os.cpu_count()} cores"
    )
    pipe = _child("pipeline", args)
    dire = _child("direct", args)
    it = args.iterations
    print(f"matrices: {pipe['clients']:,} clients x {pipe['items']:,} items in all, nnz {pipe['nnz']:,}")
    for lang in pipe["languages"]:
        print(f"  {lang['language']:>8}: {lang['clients']:,} x {lang['items']:,}, nnz {lang['nnz']:,}")
    print()
    print("| run | seconds | s / iteration | peak RSS GiB |")
    print("|---|---:|---:|---:|")
    print(
        f"| pipeline (train_als, after reading the window: {pipe['read_seconds']:.1f} s) | {pipe['seconds']:.1f} | "
        f"{pipe['seconds'] / it:.2f} | {pipe['peak_rss_gib']:.2f} |"
    )
    print(f"| of which implicit fit | {pipe['fit_seconds_inside']:.1f} | {pipe['fit_seconds_inside'] / it:.2f} | |")
    direct_row = f"{dire['seconds']:.1f} | {dire['seconds'] / it:.2f} | {dire['peak_rss_gib']:.2f}"
    print(f"| implicit directly on the same CSR | {direct_row} |")
    ratio = pipe["seconds"] / dire["seconds"]
    verdict = "met" if ratio <= 1.2 else "NOT met"
    print(f"\npipeline / direct = {ratio:.2f} (target <= 1.2): {verdict}; factors finite: {pipe['finite']}")


if __name__ == "__main__":
    main()
