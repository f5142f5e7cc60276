"""item_content_embeddings / pair_blip_scores materialized for real on the tiny simulator's mp4 media."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from recsys_assets.defs import content, data_prep
from recsys_assets.stages.pair_blip_scores import ScoreRules, window_pairs
from recsys_assets.storage import LocalStore, read_parquet

from .conftest import tiny_assets, tiny_resources

DAYS = ("2026-11-01", "2026-11-02")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("content")
    resources = tiny_resources(root)
    assets = tiny_assets(data_prep, content)
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"item_content_embeddings": {"config": {"decode_workers": 2}}}}
    results = {
        day: dg.materialize(assets, partition_key=day, resources=resources, instance=instance, run_config=config)
        for day in DAYS
    }
    again = dg.materialize(
        assets, partition_key=DAYS[0], resources=resources, instance=instance, selection=["item_content_embeddings"]
    )
    return root, results, again


def metadata(result, asset):
    [mat] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == asset
    ]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_days_materialize_with_checks_passing(run):
    _, results, _ = run
    for day, res in results.items():
        assert res.success, day
        failed = [
            e.check_name
            for e in res.get_asset_check_evaluations()
            if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
        ]
        assert failed == [], day


def test_embeddings_cover_every_item_and_say_which_model(run):
    root, results, _ = run
    store = LocalStore(root / "assets")
    for day in DAYS:
        emb = read_parquet(store, f"item_content_embeddings/{day}.parquet")
        meta = read_parquet(store, f"item_meta/{day}.parquet")
        catalog = read_parquet(store, f"video_catalog/{day}.parquet")
        first = dt.date.fromisoformat(day) - dt.timedelta(days=6)
        active = catalog.filter(pl.col("upload_date") >= first)["item_id"]
        # the watched items and every upload of the last 7 days, watched or not
        assert set(emb["item_id"]) == set(meta["item_id"]) | set(active)
        assert set(emb.filter(pl.col("watched_on_day"))["item_id"]) == set(meta["item_id"])
        uploaded_today = catalog.filter(pl.col("upload_date") == dt.date.fromisoformat(day))["item_id"]
        assert len(uploaded_today) and set(uploaded_today) <= set(emb["item_id"])
        assert not set(uploaded_today) <= set(meta["item_id"])  # some uploads had no play on their first day
        assert (emb["status"] == "ok").all()
        md = metadata(results[day], "item_content_embeddings")
        assert md["random_weights"] is True and "RANDOM WEIGHTS" in md["random_weights_notice"]
        assert len(md["model_fingerprint"]) == 20 and md["models"]["fingerprint"] == md["model_fingerprint"]
    # day 2 decodes only the items day 1 did not have
    d1 = set(read_parquet(store, f"item_content_embeddings/{DAYS[0]}.parquet")["item_id"])
    d2 = set(read_parquet(store, f"item_content_embeddings/{DAYS[1]}.parquet")["item_id"])
    md2 = metadata(results[DAYS[1]], "item_content_embeddings")
    assert md2["decoded"] == len(d2 - d1) and md2["cache_hits"] == len(d2 & d1)


def test_rematerializing_decodes_nothing(run):
    root, results, again = run
    assert again.success
    md = metadata(again, "item_content_embeddings")
    assert md["decoded"] == 0 and md["cache_hits"] == md["items"]
    assert md["model_fingerprint"] == metadata(results[DAYS[0]], "item_content_embeddings")["model_fingerprint"]


def test_pair_scores_cover_the_window_pairs(run):
    root, results, _ = run
    store = LocalStore(root / "assets")
    for n, day in enumerate(DAYS):
        scores = read_parquet(store, f"pair_blip_scores/{day}.parquet")
        window = pl.concat([read_parquet(store, f"filtered_interactions/{d}.parquet") for d in DAYS[: n + 1]])
        pairs = window_pairs(window, ScoreRules())
        assert scores.filter(pl.col("pair_type") == "positive").height == pairs.pairs.height > 0
        assert scores.filter(pl.col("pair_type") == "negative").height > 0.9 * pairs.pairs.height
        md = metadata(results[day], "pair_blip_scores")
        assert md["window_days"] == n + 1 and md["min_cowatch_clients"] == 2
        assert 0.0 <= md["paired_share_positive_more_similar"] <= 1.0
        assert "similarity" in md["similarity_histogram"] and len(md["bucket_edges"]) == 9
