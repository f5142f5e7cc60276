"""The model assets materialized for real on the tiny simulator, day after day: the cold-start encoder
(content_encoder, item_collab_embeddings, content_encoder_evaluation), the two-tower model (item_pca,
two_tower_dataset, two_tower_model, two_tower_evaluation) and the experiment report."""

import dagster as dg
import numpy as np
import polars as pl
import pytest

from recsys_assets.defs import cold_start, collaborative, content, data_prep, retrieval, serving
from recsys_assets.serving import load_index
from recsys_assets.stages.ranking_metrics import METRICS
from recsys_assets.storage import LocalStore, read_parquet

from .conftest import tiny_assets, tiny_resources

DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")

pytestmark = pytest.mark.slow  # the whole graph, three days

RUN_CONFIG = {
    "ops": {
        "als_factors": {"config": {"min_cells_per_language": 50}},
        "item_content_embeddings": {"config": {"decode_workers": 1}},
        "content_encoder": {"config": {"min_items": 16, "max_epochs": 10}},
        "two_tower_model": {"config": {"epochs": 3}},
    }
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    resources = tiny_resources(root)
    instance = dg.DagsterInstance.ephemeral()
    assets = tiny_assets(data_prep, collaborative, content, cold_start, retrieval, serving)
    results = {
        day: dg.materialize(assets, partition_key=day, resources=resources, instance=instance, run_config=RUN_CONFIG)
        for day in DAYS
    }
    results["report"] = dg.materialize(
        [*assets, *retrieval.REPORT_ASSETS], resources=resources, instance=instance, selection=["experiment_report"]
    )
    return root, results


def metadata(result, asset):
    [mat] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == asset
    ]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_every_day_materializes_with_blocking_checks_passing(run):
    _, results = run
    assert results["report"].success
    for day in DAYS:
        res = results[day]
        assert res.success, day
        failed = [
            e.check_name
            for e in res.get_asset_check_evaluations()
            if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
        ]
        assert failed == [], day


def test_encoder_weights_are_safetensors_with_their_config(run):
    root, results = run
    path = root / "assets" / "content_encoder" / f"{DAYS[-1]}.safetensors"
    assert path.exists() and path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    md = metadata(results[DAYS[-1]], "content_encoder")
    assert md["config"]["languages"] and "val_share" in md["config"]
    assert any(k.startswith("training_curve_") for k in md)


def test_every_item_gets_a_vector_and_cold_ones_are_flagged(run):
    root, _ = run
    store = LocalStore(root / "assets")
    for day in DAYS:
        collab = read_parquet(store, f"item_collab_embeddings/{day}.parquet")
        emb = read_parquet(store, f"item_content_embeddings/{day}.parquet")
        assert sorted(collab["item_id"]) == sorted(emb["item_id"])  # watched items and active uploads
        # a video uploaded today that nobody played ends the day with a predicted vector, flagged
        raw = pl.concat(
            [read_parquet(store, f"{a}/{day}.parquet") for a in ("raw_interactions", "raw_interactions_quarantine")],
            how="diagonal_relaxed",
        )
        fresh = collab.filter(pl.col("new_upload") & ~pl.col("item_id").is_in(raw["item_id"].drop_nulls().implode()))
        assert fresh.height > 0 and (fresh["interactions_on_day"] == 0).all()
        assert fresh["is_predicted"].any()
        # ... every one that has an encoder for its language; the rest say why
        assert fresh.filter(~pl.col("is_predicted"))["reason"].to_list() == ["no_encoder_for_language"] * (
            fresh.height - int(fresh["is_predicted"].sum())
        )
        als = read_parquet(store, f"als_factors/{day}.parquet")
        assert collab.filter(pl.col("source") == "als").height == collab.join(als, on="item_id", how="semi").height
        predicted = collab.filter(pl.col("is_predicted"))
        assert predicted.height > 0 and predicted["als_vector"].null_count() == predicted.height


def test_evaluation_reports_ceiling_prediction_and_floor(run):
    root, results = run
    assert metadata(results[DAYS[0]], "content_encoder_evaluation")["skipped"]
    table = read_parquet(LocalStore(root / "assets"), f"content_encoder_evaluation/{DAYS[-1]}.parquet")
    assert {"true_als", "predicted", "random"} <= set(table["variant"])
    md = metadata(results[DAYS[-1]], "content_encoder_evaluation")
    assert 0 <= md["predicted_recall@50"] <= 1 and md["predicted_over_true_recall@50"] > 0
    # the previous day's never-watched uploads: predicted vs random vs the simulator's oracle, per language
    new = table.filter(pl.col("variant").str.starts_with("new_"))
    assert {"new_predicted", "new_random", "new_oracle"} <= set(new["variant"]) and new["candidates"].min() > 0
    assert 0 < md["new_items_with_predicted_vector"] <= md["new_items"]
    assert all(0 <= md[f"{v}_recall@50"] <= 1 for v in ("new_predicted", "new_random", "new_oracle"))


def test_indexes_serve_every_item_of_the_day(run):
    root, results = run
    store = LocalStore(root / "assets")
    day = DAYS[-1]
    collab = read_parquet(store, f"item_collab_embeddings/{day}.parquet").filter(pl.col("vector").is_not_null())
    index = load_index(str(root / "assets"), "item_collab_index", day)
    assert sum(index.size(lang) for lang in index.languages) == collab.height
    # a never-watched upload of the day is retrievable by its own predicted vector
    fresh = collab.filter(pl.col("new_upload") & (pl.col("interactions_on_day") == 0) & pl.col("is_predicted"))
    row = fresh.row(0, named=True)
    same = collab.filter(pl.col("language") == row["language"])
    want = same["item_id"].to_numpy()[np.argsort(-(same["vector"].to_numpy() @ np.asarray(row["vector"])))[:10]]
    ids, _ = index.search(row["language"], np.asarray([row["vector"]]), k=10)
    assert ids[0].tolist() == want.tolist() and row["item_id"] in index.ids(row["language"])
    tt_index = load_index(str(root / "assets"), "two_tower_item_index", day)
    assert tt_index.config["model_partition"] == day and tt_index.config["pca_partition"] == day
    for asset in ("item_collab_index", "two_tower_item_index"):
        md = metadata(results[day], asset)
        assert md["recall@100"] >= 0.95 and md["items"] > 0


def test_two_tower_dataset_model_and_evaluation(run):
    root, results = run
    store = LocalStore(root / "assets")
    ds = read_parquet(store, f"two_tower_dataset/{DAYS[-1]}.parquet")
    assert abs(ds["label"].mean() - 0.5) < 0.01
    # by id: no vector on a row; histories per (client, day) and item features once each
    assert not any(isinstance(t, pl.Array) for t in ds.schema.values())
    histories = read_parquet(store, f"two_tower_user_history/{DAYS[-1]}.parquet")
    items = read_parquet(store, f"two_tower_item_features/{DAYS[-1]}.parquet")
    assert items.schema["features"].size == metadata(results[DAYS[-1]], "item_pca")["n_components"]
    assert histories.height < ds.height and items.height < ds.height
    assert ds["history_row"].max() < histories.height and ds["item_row"].max() < items.height
    assert (root / "assets" / "two_tower_model" / f"{DAYS[-1]}.safetensors").exists()
    md = metadata(results[DAYS[-1]], "two_tower_model")
    assert md["training_curve"].startswith("![training_curve](data:image/png;base64,") and md["samples_per_s"] > 0
    png = root / "assets" / "reports" / "two_tower_model" / DAYS[-1] / "training_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and md["training_curve_png"] == str(png)
    table = read_parquet(store, f"two_tower_evaluation/{DAYS[-1]}.parquet")
    assert set(table["method"]) == {"two_tower", "random", "popularity", "oracle"}
    assert set(METRICS) <= set(table.columns) and "catalog_recall@50" in table.columns
    assert {"mrr_first", "auc_per_client", "experiment_id", "embedding_fingerprint", "model_config"} <= set(
        table.columns
    )
    assert table["random_weights"].all() and table["model_partition"].unique().to_list() == [DAYS[-2]]
    ev = metadata(results[DAYS[-1]], "two_tower_evaluation")
    assert ev["oracle_auc"] > 0.7 and 0 < ev["auc_over_oracle"] < 1.2  # the simulator's truth is the ceiling


def test_experiment_report_has_one_experiment_per_evaluated_day(run):
    root, results = run
    report = read_parquet(LocalStore(root / "assets"), "experiment_report.parquet")
    tw = report.filter(pl.col("method") == "two_tower").sort("val_data")
    assert tw["val_data"].to_list() == list(DAYS[1:])  # day 1 has no model of the day before
    assert tw["train_data"].to_list()[0].startswith(DAYS[0])
    csv = (root / "assets" / "reports" / "experiment_report.csv").read_text()
    assert csv.splitlines()[0].startswith("method,auc,avg_prec@10,map,mrr")
    md = metadata(results["report"], "experiment_report")
    assert md["experiments"] == 2 and "recall@all_pos" in md["results"] and "recall@gt_k" in md["legend"]
    # ablations beside the model, on the same validation days
    methods = set(report.filter(pl.col("val_data") == DAYS[-1])["method"])
    assert {"ablation:inbatch_softmax", "ablation:true_content", "two_tower", "oracle"} <= methods
    # experiment ids are stable: the same day and model give the same id in the evaluation and the report
    ev = read_parquet(LocalStore(root / "assets"), f"two_tower_evaluation/{DAYS[-1]}.parquet")
    assert set(ev["experiment_id"]) <= set(report["experiment_id"])
    assert md["auc_by_day"].startswith("![auc_by_day](data:image/png;base64,")
    # the cold-start evaluation beside it, per day, variant and language
    cold = pl.read_csv(root / "assets" / "reports" / "cold_start_report.csv")
    assert set(cold["val_data"]) == set(DAYS[1:]) and {"predicted", "new_predicted", "new_oracle"} <= set(
        cold["variant"]
    )
    assert "new_random" in md["cold_start_results"]


def test_id_based_dataset_trains_to_the_auc_of_per_row_histories(run):
    """The id-based dataset (history as of each row's day, stored per client and day) against the per-row
    layout it replaced (each row its own history up to its own event), on tiny: the same rows, model and
    validation day; their validation AUCs differ by no more than training seeds move them."""
    import datetime as dt

    from recsys_assets.artifacts import from_bytes
    from recsys_assets.defs.partitions import train_window_start
    from recsys_assets.stages import two_tower as tt
    from recsys_assets.stages import two_tower_evaluation as tte

    root, _ = run
    store = LocalStore(root / "assets")
    train_day, val_day = DAYS[-2], DAYS[-1]
    rules = tt.DatasetRules()
    window = pl.concat([read_parquet(store, f"raw_interactions/{d}.parquet") for d in DAYS[:-1]])
    today = read_parquet(store, f"raw_interactions/{val_day}.parquet")
    pca = tt.pca_from_artifact(from_bytes(store.read_bytes(f"item_pca/{train_day}.safetensors")))
    emb = pl.concat([read_parquet(store, f"item_content_embeddings/{d}.parquet") for d in DAYS])
    emb = emb.filter(pl.col("status") != "failed").unique("item_id", keep="last", maintain_order=True)
    features = tt.project(emb.select("item_id", "blip_embedding"), pca)
    start = train_window_start(dt.date.fromisoformat(train_day))
    by_day, _ = tt.build_dataset(window, features, rules, start)
    # the per-row layout: the same rows, each with its exact point-in-time history up to its own event
    per_row = tt.point_in_time_history(by_day.rows, tt.labelled(window, rules), features, start)
    per_row = per_row.with_columns(history_row=pl.int_range(pl.len(), dtype=pl.Int32), history_day=pl.lit(None))
    per_row_ds = tt.Dataset(
        per_row.select(tt.ROW_COLUMNS),
        per_row.select("history_row", "client_id", "history_day", "pos_hist", "neg_hist", "n_pos_hist", "n_neg_hist"),
        by_day.items,
    )

    def val_auc(ds: tt.Dataset, seed: int) -> float:
        model = tt.train(ds, tt.ModelParams(epochs=4, seed=seed, device="cpu")).model
        table, _ = tte.evaluate(
            model,
            today,
            window,
            features,
            emb.select("item_id", "language"),
            rules,
            dt.date.fromisoformat(val_day),
            window_days=len(DAYS) - 1,
            baselines=False,
        )
        return float(table["auc"][0])

    ids = [val_auc(by_day, seed) for seed in (0, 1, 2)]
    rows = [val_auc(per_row_ds, seed) for seed in (0, 1, 2)]
    spread = max(np.ptp(ids), np.ptp(rows), 0.01)
    print(f"validation AUC by id {ids}, per row {rows}")
    assert abs(np.mean(ids) - np.mean(rows)) <= 2 * spread, (ids, rows)
    assert min(ids) > 0.5


def test_the_windowed_stages_run_on_s3_and_give_the_local_results(run, s3_env, tmp_path):
    """The same two days with every asset stored on S3 (moto over HTTP): the windowed readers (lazy scans with
    projection through object_store) give the tables of the local run, row for row."""
    root, _ = run
    endpoint, bucket, client = s3_env
    s3 = {"RECSYS_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    resources = tiny_resources(tmp_path, RECSYS_STORAGE_URL=f"s3://{bucket}/assets", AWS_REGION="us-east-1", **s3)
    instance = dg.DagsterInstance.ephemeral()
    assets = tiny_assets(data_prep, collaborative, content, cold_start, retrieval)
    for day in DAYS[:2]:
        res = dg.materialize(assets, partition_key=day, resources=resources, instance=instance, run_config=RUN_CONFIG)
        assert res.success, day
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="assets/")["Contents"]}
    assert not (tmp_path / "assets").exists()  # nothing went to the local disk
    local = LocalStore(root / "assets")
    day = DAYS[1]
    for asset in ("two_tower_dataset", "two_tower_user_history", "item_collab_embeddings", "two_tower_evaluation"):
        assert f"assets/{asset}/{day}.parquet" in keys
        body = client.get_object(Bucket=bucket, Key=f"assets/{asset}/{day}.parquet")["Body"].read()
        got = pl.read_parquet(body)
        want = read_parquet(local, f"{asset}/{day}.parquet")
        assert got.equals(want), asset
    for model in ("item_pca", "two_tower_model", "content_encoder"):
        assert f"assets/{model}/{day}.safetensors" in keys
