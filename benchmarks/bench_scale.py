"""The windowed content, cold-start and two-tower stages at the seed's size: seconds, rows/s, peak RSS.

    .venv/bin/python benchmarks/bench_scale.py                         # the scale profile (2 M clients, 5 lakh items)
    .venv/bin/python benchmarks/bench_scale.py --fraction 0.125        # the same platform at 1/8 the size
    .venv/bin/python benchmarks/bench_scale.py --fractions 0.0625,0.125,0.25   # peak RSS at 1x, 2x, 4x rows

The ``scale`` simulator profile has no media: ``item_content_embeddings`` generates its vectors from the
items' true content (``GeneratedContentResource``, 8 frames x 512 + audio 512, the sizes of ViT-B-32 and
Whisper-base). Setup (not timed; kept under ``--data`` between runs) materializes, through the real
assets, what the timed day ``--day`` D needs behind it: phases 1-3 and the content embeddings of D-6 .. D+1,
ALS and the pair scores of D. Then each timed stage runs alone in its own process, as Dagster would run it
(``dg.materialize`` of that asset for one partition, the local IO managers, checks included), and reports
seconds, output rows, rows/s and its peak RSS (``wait4``):

    item_content_embeddings (D), content_encoder (D), item_collab_embeddings (D), item_pca (D),
    two_tower_dataset (D, with its history and item tables), two_tower_model (D, one epoch),
    two_tower_evaluation (D+1: the model of D on the next day)

The content encoder runs 2 epochs (its rows: the items it trained on), the two-tower model one (its rows: its
training rows); without a GPU their full training is hours at this size, and a GPU is where they belong.

Targets (2 cores, 24 GiB): every stage completes; each stage's peak RSS <= 8 GiB; two_tower_dataset of the
week <= 4 GiB on disk. Results are in benchmarks/README.md under "bench_scale".
"""

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from _child import print_markdown, run_child

HERE = Path(__file__).resolve().parent
TIMED = (
    "item_content_embeddings",
    "content_encoder",
    "item_collab_embeddings",
    "item_pca",
    "two_tower_dataset",
    "two_tower_model",
    "two_tower_evaluation",
)
DATA_PREP = ("raw_interactions", "video_catalog", "filtered_interactions", "item_meta", "item_pairs")
RUN_CONFIG = {
    "ops": {
        "two_tower_model": {"config": {"epochs": 1}},
        "two_tower_dataset": {"config": {"vector_dtype": "float16"}},
        "content_encoder": {"config": {"max_epochs": 2}},
        "item_content_embeddings": {"config": {"use_cache": False, "vector_dtype": "float16"}},
    }
}


def _env(data: Path, fraction: float) -> dict[str, str]:
    root = data / f"scale-{fraction:g}"
    return {
        **os.environ,
        "RECSYS_SIM_PROFILE": "scale" if fraction == 1 else f"scale:{fraction:g}",
        "RECSYS_DATA_DIR": str(root),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "RECSYS_EXECUTOR": "in_process",
    }


def child(assets: list[str], day: str) -> None:
    """Materialize ``assets`` (with their multi-asset siblings) for ``day`` in this process; print JSON."""
    import dagster as dg

    from recsys_assets.definitions import build_definitions

    defs = build_definitions(os.environ)
    all_assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.partitions_def is not None]
    wanted = {dg.AssetKey(a) for a in assets}
    selection = set()
    for ad in all_assets:
        if ad.keys & wanted:
            selection |= set(ad.keys)
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    result = dg.materialize(
        all_assets,
        selection=sorted(selection, key=lambda k: k.to_user_string()),
        partition_key=day,
        resources=defs.resources,
        instance=dg.DagsterInstance.get(),
        run_config={"ops": {k: v for k, v in RUN_CONFIG["ops"].items() if dg.AssetKey(k) in selection}},
        raise_on_error=False,
    )
    seconds = time.perf_counter() - t
    rows, disk = 0, 0
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        if mat.asset_key in wanted:
            # rows processed: an evaluation's validation rows, a table's rows, a model's training items / rows
            for name in ("validation_rows", "dagster/row_count", "train_items", "train_rows", "n_samples"):
                if md.get(name):
                    rows += int(md[name])
                    break
        disk += int(md.get("parquet_bytes", 0) or 0) + int(md.get("safetensors_bytes", 0) or 0)
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed
    ]
    print(
        json.dumps(
            {
                "ok": result.success,
                "seconds": seconds,
                "rows": rows,
                "stored_gib": disk / 2**30,
                "failed_checks": failed_checks,
            }
        )
    )


def _run(env: dict[str, str], assets: list[str], day: str) -> dict:
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return run_child(__file__, ["--child", ",".join(assets), "--day", day], f"{','.join(assets)} {day}")
    finally:
        os.environ.clear()
        os.environ.update(old)


def setup(env: dict[str, str], day: dt.date) -> None:
    marker = Path(env["RECSYS_DATA_DIR"]) / f".bench_scale_setup_{day}"
    if marker.exists():
        return
    days = [day + dt.timedelta(days=k) for k in range(-6, 2)]
    assets_dir = Path(env["RECSYS_DATA_DIR"]) / "assets"
    for d in days:
        if all((assets_dir / a / f"{d}.parquet").exists() for a in (*DATA_PREP, "item_content_embeddings")):
            continue  # from an earlier, interrupted setup
        t = time.perf_counter()
        res = _run(env, [*DATA_PREP, "item_content_embeddings"], d.isoformat())
        print(f"setup {d}: data prep + content vectors {time.perf_counter() - t:.0f} s", file=sys.stderr)
        if not res["ok"]:
            raise SystemExit(f"setup of {d} failed: {res}")
    for assets in (["als_factors"], ["pair_blip_scores"]):
        if (assets_dir / assets[0] / f"{day}.parquet").exists():
            continue  # from an earlier, interrupted setup
        t = time.perf_counter()
        res = _run(env, assets, day.isoformat())
        print(f"setup {day}: {assets[0]} {time.perf_counter() - t:.0f} s", file=sys.stderr)
        if not res["ok"]:
            raise SystemExit(f"setup {assets} failed: {res}")
    marker.write_text("done\n")


def bench(env: dict[str, str], day: dt.date, stages: list[str]) -> list[dict]:
    out = []
    for stage in stages:
        d = day + dt.timedelta(days=1) if stage == "two_tower_evaluation" else day
        res = _run(env, [stage], d.isoformat())
        row = {
            "stage": stage,
            "profile": env["RECSYS_SIM_PROFILE"],
            "day": d.isoformat(),
            "ok": res["ok"],
            "seconds": res["seconds"],
            "rows": res["rows"],
            "rows_per_s": res["rows"] / max(res["seconds"], 1e-9),
            "stored_gib": res["stored_gib"],
            "peak_rss_gib": res["peak_rss_gib"],
        }
        if res["failed_checks"]:
            print(f"{stage}: failed checks {res['failed_checks']}", file=sys.stderr)
        print(json.dumps(row), file=sys.stderr)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child")
    ap.add_argument("--day", default="2026-11-08")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--fractions", help="comma list: run each and print peak RSS per stage side by side")
    ap.add_argument("--stages", default=",".join(TIMED))
    ap.add_argument("--data", default=str(HERE / "_data"))
    ap.add_argument("--setup-only", action="store_true", help="materialize what the timed stages read, then stop")
    a = ap.parse_args()
    if a.child:
        child(a.child.split(","), a.day)
        return
    day = dt.date.fromisoformat(a.day)
    stages = a.stages.split(",")
    fractions = [float(f) for f in a.fractions.split(",")] if a.fractions else [a.fraction]
    results = {}
    for f in fractions:
        env = _env(Path(a.data), f)
        t = time.perf_counter()
        setup(env, day)
        print(f"setup scale:{f:g} ready ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
        if a.setup_only:
            continue
        results[f] = bench(env, day, stages)
        print_markdown([{k: v for k, v in r.items() if k not in ("profile", "day")} for r in results[f]])
    if a.setup_only:
        return
    if len(fractions) > 1:
        growth = []
        for i, stage in enumerate(stages):
            row = {"stage": stage}
            for f in fractions:
                row[f"peak_rss_gib@{f:g}"] = results[f][i]["peak_rss_gib"]
            base = results[fractions[0]][i]["peak_rss_gib"]
            row["growth_last_over_first"] = results[fractions[-1]][i]["peak_rss_gib"] / max(base, 1e-9)
            growth.append(row)
        print_markdown(growth)
    print(json.dumps({str(f): r for f, r in results.items()}))


if __name__ == "__main__":
    main()
