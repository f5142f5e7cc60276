"""The data-prep assets materialized for real: simulator -> parquet/Delta -> phases 1-3 -> IO manager."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from recsys_assets.defs import data_prep
from recsys_assets.storage import LocalStore, read_parquet, write_parquet

from .conftest import interactions, tiny_assets, tiny_resources

ASSETS = tiny_assets(data_prep)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    resources = tiny_resources(root)
    sim = resources["snapshots"].simulator
    instance = dg.DagsterInstance.ephemeral()
    results = {
        day: dg.materialize(ASSETS, partition_key=day, resources=resources, instance=instance)
        for day in ("2026-11-01", "2026-11-02")
    }
    return root, results, sim


def test_all_assets_materialize_and_every_check_passes(sim_run):
    root, results, _ = sim_run
    for res in results.values():
        assert res.success
        evals = res.get_asset_check_evaluations()
        assert len(evals) == 16
        assert [e.check_name for e in evals if not e.passed] == []
    store = LocalStore(root / "assets")
    for key in (
        "raw_interactions",
        "raw_interactions_quarantine",
        "video_catalog",
        "filtered_interactions",
        "item_meta",
        "item_pairs",
    ):
        assert store.exists(f"{key}/2026-11-02.parquet"), key


def test_outputs_are_consistent_across_phases(sim_run):
    root, results, sim = sim_run
    store = LocalStore(root / "assets")
    raw = read_parquet(store, "raw_interactions/2026-11-02.parquet")
    quarantine = read_parquet(store, "raw_interactions_quarantine/2026-11-02.parquet")
    snapshot = sim.platform().interactions(dt.date(2026, 11, 2))
    assert raw.height + quarantine.height == snapshot.height
    filtered = read_parquet(store, "filtered_interactions/2026-11-02.parquet")
    meta = read_parquet(store, "item_meta/2026-11-02.parquet")
    pairs = read_parquet(store, "item_pairs/2026-11-02.parquet")
    assert set(meta["item_id"]) == set(filtered["item_id"])
    assert pairs.filter(pl.col("pair_type") == "positive").height > 0
    assert set(pairs["item_id_1"]) | set(pairs["item_id_2"]) <= set(meta["item_id"])
    assert pairs["download_url_1"].null_count() == 0
    md = results["2026-11-02"].asset_materializations_for_node("filtered_interactions")[0].metadata
    assert md["positive"].value + md["negative"].value + md["neutral"].value == raw.height


def test_rematerializing_a_day_is_idempotent(sim_run, tmp_path):
    root, results, sim = sim_run
    before = read_parquet(LocalStore(root / "assets"), "item_pairs/2026-11-01.parquet")
    again = dg.materialize(
        ASSETS, partition_key="2026-11-01", resources=tiny_resources(tmp_path, RECSYS_SIM_ROOT=sim.root)
    )
    assert again.success
    assert read_parquet(LocalStore(tmp_path / "assets"), "item_pairs/2026-11-01.parquet").equals(before)


def lake_resources(tmp_path, rows, sim_root):
    store = LocalStore(tmp_path / "lake")
    write_parquet(store, "snap/dt=2026-11-02/part-0.parquet", rows)
    return tiny_resources(
        tmp_path,
        RECSYS_SOURCE="lake",
        RECSYS_SNAPSHOT_URL_TEMPLATE=str(tmp_path / "lake/snap/dt={date}/"),
        RECSYS_CATALOG_URI=str(sim_root / "platform" / "catalog"),
    )


def test_a_poisoned_snapshot_stops_at_the_blocking_check(sim_run, tmp_path):
    root, _, sim = sim_run
    ids = sim.platform().item_ids[:5].tolist()
    rows = interactions([{"item_id": ids[i % 5], "client_id": None if i % 2 else 1} for i in range(40)])
    res = dg.materialize(
        ASSETS, partition_key="2026-11-02", resources=lake_resources(tmp_path, rows, root), raise_on_error=False
    )
    assert not res.success
    evals = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert evals["quarantine_share_below_max"].passed is False
    assert evals["quarantine_share_below_max"].metadata["null_client_id"].value == 20
    materialized = {e.materialization.asset_key.to_user_string() for e in res.get_asset_materialization_events()}
    assert "filtered_interactions" not in materialized and "item_pairs" not in materialized


def test_a_schema_mismatch_fails_with_the_column_named(sim_run, tmp_path):
    root, _, _ = sim_run
    rows = interactions([{}]).drop("liked")
    res = dg.materialize(
        ASSETS, partition_key="2026-11-02", resources=lake_resources(tmp_path, rows, root), raise_on_error=False
    )
    [failure] = res.get_step_failure_events()
    assert "missing column(s) ['liked']" in failure.event_specific_data.error.message
    # a data error fails at once: the IO retry policy (70 s of backoff) is for network errors only
    assert not [e for e in res.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_config_changes_the_rules(sim_run, tmp_path):
    root, _, sim = sim_run
    res = dg.materialize(
        ASSETS,
        partition_key="2026-11-02",
        resources=tiny_resources(tmp_path, RECSYS_SIM_ROOT=sim.root),
        run_config={
            "ops": {
                "item_pairs": {"config": {"min_num_clients": 2}},
                "filtered_interactions": {"config": {"max_client_positive_ctr": 0.8}},
            }
        },
    )
    assert res.success
    pairs = read_parquet(LocalStore(tmp_path / "assets"), "item_pairs/2026-11-02.parquet")
    assert pairs["num_clients"].min() >= 2
    md = res.asset_materializations_for_node("filtered_interactions")[0].metadata
    assert md["rules"].value["max_client_positive_ctr"] == 0.8
