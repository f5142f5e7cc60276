"""Ablations of seed 000's pair formation, measured on the cold-start evaluation.

    .venv/bin/recsys-assets materialize                     # once: the demo platform, every asset (README command 1)
    .venv/bin/python benchmarks/ablate_cold_start.py        # then this: ~30 min on 2 cores
    .venv/bin/python benchmarks/ablate_cold_start.py --variants base buckets_off --first 2026-11-06

Each variant re-materializes, through the pipeline's own asset definitions and run config,
``pair_blip_scores``, ``content_encoder`` and ``item_collab_embeddings`` for the days ``--first`` ..
``--last`` - 1, then ``content_encoder_evaluation`` for ``--first`` + 1 .. ``--last``, in a hard-linked copy
of the demo's stored assets (atomic writes replace the links, so the demo's own files are never
touched; everything upstream is read as the demo wrote it). It prints, per variant, the mean over the
evaluated days (client-weighted over languages) of recall@50 of:

* ``new_predicted`` / ``new_random`` / ``new_oracle`` -- the never-played uploads of the previous day among
  the whole catalog (the cold-start question);
* ``predicted`` / ``true_als`` -- the encoder's held-out items (predicted vs their real ALS vectors);

and the window's positive pairs per day. Variants: ``base`` (the defaults: min_cowatch_clients 2,
bucket weights on), ``cowatch1``, ``cowatch3``, ``cowatch5``, ``buckets_off`` (bucket_weights [] = every
pair weight 1), ``pairs_off`` (pair_weight 0: no pair loss at all), ``calibration_off`` (predicted vectors
as the encoder outputs them, not rescaled to the ALS norm).
"""

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import print_markdown  # noqa: E402

VARIANTS = {
    "base": {},
    "cowatch1": {"pair_blip_scores": {"min_cowatch_clients": 1}},
    "cowatch3": {"pair_blip_scores": {"min_cowatch_clients": 3}},
    "cowatch5": {"pair_blip_scores": {"min_cowatch_clients": 5}},
    "buckets_off": {"content_encoder": {"bucket_weights": []}},
    "pairs_off": {"content_encoder": {"pair_weight": 0.0}},
    "calibration_off": {"item_collab_embeddings": {"calibrate_norm": False}},
}
RETRAINED = ("pair_blip_scores", "content_encoder", "item_collab_embeddings")


def run_variant(name: str, a: argparse.Namespace) -> dict:
    import dagster as dg
    import polars as pl

    from recsys_assets.definitions import build_definitions
    from recsys_assets.settings import Settings

    src = Path(a.data_dir) / "assets"
    root = Path(a.out) / name
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(src), str(root / "assets")], check=True)
    env = {**os.environ, "RECSYS_DATA_DIR": a.data_dir, "RECSYS_STORAGE_URL": str(root / "assets")}
    defs = build_definitions(Settings.from_env(env))
    assets = [d for d in defs.assets if isinstance(d, dg.AssetsDefinition)]
    resources = defs.resources
    instance = dg.DagsterInstance.ephemeral()
    ops = {k: {"config": v} for k, v in VARIANTS[name].items()}
    first, last = dt.date.fromisoformat(a.first), dt.date.fromisoformat(a.last)
    t0 = time.time()
    pairs = []
    day = first - dt.timedelta(days=1)
    while day < last:
        res = dg.materialize(
            assets,
            selection=list(RETRAINED),
            partition_key=day.isoformat(),
            resources=resources,
            instance=instance,
            run_config={"ops": {k: v for k, v in ops.items() if k in RETRAINED}},
        )
        assert res.success, (name, day)
        for ev in res.get_asset_materialization_events():
            if ev.materialization.asset_key.to_user_string() == "pair_blip_scores":
                pairs.append(ev.materialization.metadata["positive_pairs"].value)
        day += dt.timedelta(days=1)
    rows = []
    day = first
    while day <= last:
        res = dg.materialize(
            assets,
            selection=["content_encoder_evaluation"],
            partition_key=day.isoformat(),
            resources=resources,
            instance=instance,
        )
        assert res.success, (name, day)
        table = pl.read_parquet(root / "assets" / "content_encoder_evaluation" / f"{day}.parquet")
        rows.append(table.with_columns(day=pl.lit(day.isoformat())))
        day += dt.timedelta(days=1)
    table = pl.concat(rows).filter(pl.col("clients") > 0)
    per_day = table.group_by("day", "variant").agg(
        r50=(pl.col("recall@50") * pl.col("clients")).sum() / pl.col("clients").sum()
    )
    means = dict(per_day.group_by("variant").agg(pl.col("r50").mean()).iter_rows())
    out = {"variant": name, "pairs_per_day": int(sum(pairs) / max(len(pairs), 1)), "days": per_day["day"].n_unique()}
    for v in ("new_predicted", "new_random", "new_oracle", "new_true_als", "predicted", "true_als", "random"):
        out[v] = means.get(v)
    by_day = per_day.filter(pl.col("variant") == "new_predicted").sort("day")["r50"].to_list()
    out["new_predicted_by_day"] = "/".join(f"{v:.2f}" for v in by_day)
    out["seconds"] = time.time() - t0
    shutil.rmtree(root)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=".recsys_data", help="the demo run's RECSYS_DATA_DIR")
    ap.add_argument("--out", default="benchmarks/_data/ablation")
    ap.add_argument("--first", default="2026-11-05", help="first evaluated day (models retrained from the day before)")
    ap.add_argument("--last", default="2026-11-10")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    a = ap.parse_args()
    os.environ.setdefault("DAGSTER_HOME", str(Path(a.out).resolve() / "_dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    results = []
    for name in a.variants:
        r = run_variant(name, a)
        print(r, file=sys.stderr, flush=True)
        results.append(r)
    print_markdown(results)


if __name__ == "__main__":
    main()
