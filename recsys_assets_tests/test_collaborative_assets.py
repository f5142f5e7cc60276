"""als_factors / als_evaluation materialized for real on the tiny simulator, and their partition windows."""

import dagster as dg
import polars as pl
import pytest

from recsys_assets.defs import collaborative, data_prep
from recsys_assets.defs.partitions import EVAL_WINDOW, PREVIOUS_DAY, TRAIN_WINDOW
from recsys_assets.storage import LocalStore, read_parquet

from .conftest import PARTITIONS, tiny_assets, tiny_resources

DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")


def upstream(mapping, day):
    subset = PARTITIONS.empty_subset().with_partition_keys([day])
    res = mapping.get_upstream_mapped_partitions_result_for_partitions(subset, PARTITIONS, PARTITIONS)
    return sorted(res.partitions_subset.get_partition_keys())


def test_windows_map_to_the_right_days_and_are_clipped_at_the_start():
    assert upstream(TRAIN_WINDOW, "2026-11-10") == [f"2026-11-{d:02d}" for d in range(4, 11)]
    assert upstream(TRAIN_WINDOW, "2026-11-03") == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert upstream(TRAIN_WINDOW, "2026-11-01") == ["2026-11-01"]
    assert upstream(EVAL_WINDOW, "2026-11-09") == [f"2026-11-{d:02d}" for d in range(2, 10)]
    assert upstream(PREVIOUS_DAY, "2026-11-05") == ["2026-11-04"]
    assert upstream(PREVIOUS_DAY, "2026-11-01") == []


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("collab")
    resources = tiny_resources(root)
    assets = tiny_assets(data_prep, collaborative)
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"als_factors": {"config": {"min_cells_per_language": 50}}}}
    results = {
        day: dg.materialize(assets, partition_key=day, resources=resources, instance=instance, run_config=config)
        for day in DAYS
    }
    return root, results


def test_every_day_materializes_and_blocking_checks_pass(run):
    _, results = run
    for day, res in results.items():
        assert res.success, day
        failed = [
            e.check_name
            for e in res.get_asset_check_evaluations()
            if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
        ]
        assert failed == [], day


def test_the_first_partitions_train_on_what_exists_and_say_so(run):
    _, results = run
    first = {
        k: v.value for k, v in results["2026-11-01"].asset_materializations_for_node("als_factors")[0].metadata.items()
    }
    assert first["window_days_used"] == 1 and "trained on 1 of 7 days" in first["partial_window"]
    third = {
        k: v.value for k, v in results["2026-11-03"].asset_materializations_for_node("als_factors")[0].metadata.items()
    }
    assert third["window_days_used"] == 3 and third["window"] == "2026-10-28 .. 2026-11-03"


def test_factors_are_stored_with_the_contract_schema(run):
    root, _ = run
    store = LocalStore(root / "assets")
    items = read_parquet(store, "als_factors/2026-11-03.parquet")
    users = read_parquet(store, "als_user_factors/2026-11-03.parquet")
    assert items.columns == ["item_id", "language", "vector"] and users.columns == ["client_id", "language", "vector"]
    assert items.schema["vector"] == pl.Array(pl.Float32, 16)
    assert items.height > 0 and users.height > 0 and items["item_id"].n_unique() == items.height


def test_evaluation_skips_the_first_day_then_scores_the_previous_days_model(run):
    root, results = run
    first = results["2026-11-01"].asset_materializations_for_node("als_evaluation")[0].metadata
    assert "first partition" in first["skipped"].value
    later = results["2026-11-03"].asset_materializations_for_node("als_evaluation")[0].metadata
    assert later["model_partition"].value == "2026-11-02"
    table = read_parquet(LocalStore(root / "assets"), "als_evaluation/2026-11-03.parquet")
    assert set(table["method"]) == {"als", "popularity"}
    for col in ("recall@10", "recall@50", "recall@100", "ndcg@10"):
        vals = table[col].drop_nans()
        assert ((vals >= 0) & (vals <= 1)).all()
    assert later["clients_evaluated"].value > 0
