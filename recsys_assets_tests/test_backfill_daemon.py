"""`dagster dev` (webserver + daemons, the shipped dagster.yaml) for real: a backfill of every asset of the graph
over 3 days, launched through GraphQL exactly as the UI's Materialize dialog launches it."""

import os
import time

import dagster as dg
import pytest
import requests

from .conftest import run_dagster_dev
from .test_spark_engine import needs_java

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""


def gql(url: str, query: str, variables: dict) -> dict:
    r = requests.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


POLL_ASSETS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsMaterialized
            numPartitionsFailed
          }
          ... on UnpartitionedAssetStatus { assetKey { path } materialized }
        }
      }
    }
  }
}"""
ASSET_KEYS = """{ assetNodes { assetKey { path } groupName isMaterializable isPartitioned } }"""


def backfill(url: str, asset_keys: list[dict], days: list[str], title: str) -> tuple[str, dict, float]:
    """Launch a backfill of ``asset_keys`` over ``days`` as the Materialize dialog does and wait for it to end:
    ``(backfill id, its last status, seconds)``."""
    params = {"assetSelection": asset_keys, "partitionNames": days, "title": title}
    started = time.time()
    launched = gql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    deadline = time.time() + 1500
    res: dict = {}
    while time.time() < deadline:
        res = gql(url, POLL_ASSETS, {"id": backfill_id})["partitionBackfillOrError"]
        if res.get("status") not in ("REQUESTED", "CANCELING", "FAILING", None):
            break
        time.sleep(5)
    return backfill_id, res, time.time() - started


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_whole_graph_backfill_of_three_days_as_the_ui_launches_it(dagster_dev, monkeypatch):
    """The Materialize dialog with every asset selected and a day range sends ``partitionNames``: Dagster
    applies them to the root assets and extends them downstream through the partition mappings the host
    sees. With DayWindow mappings every asset gets exactly those days (not the 8-9 of issue 16), windowed
    assets run day by day, and every partition and check succeeds."""
    url, home, tmp_path = dagster_dev
    nodes = gql(url, ASSET_KEYS, {})["assetNodes"]
    every_asset = [n["assetKey"] for n in nodes if n["isMaterializable"]]
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    backfill_id, res, elapsed = backfill(url, every_asset, days, "whole graph")
    statuses = res["assetBackfillData"]["assetBackfillStatuses"]
    log_tail = (tmp_path / "dagster_dev.log").read_text()[-3000:]
    assert res["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (res["status"], statuses, log_tail)
    partitioned = [s for s in statuses if "numPartitionsTargeted" in s]
    assert len(partitioned) == len([n for n in nodes if n["isMaterializable"] and n["isPartitioned"]])
    for s in partitioned:  # exactly the three days of every asset, all materialized
        assert (s["numPartitionsTargeted"], s["numPartitionsMaterialized"], s["numPartitionsFailed"]) == (3, 3, 0), s
    print(f"whole-graph backfill of 3 days: {elapsed:.0f} s")

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
        # the windows were built in order: ALS of 11-03 trained on 3 days, the evaluation of 11-02 used model 11-01
        als = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("als_factors"), asset_partitions=["2026-11-03"]), limit=1
        ).records[0]
        assert als.asset_materialization.metadata["window_days_used"].value == 3
        ev = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("two_tower_evaluation"), asset_partitions=["2026-11-02"]),
            limit=1,
        ).records[0]
        assert ev.asset_materialization.metadata["model_partition"].value == "2026-11-01"
        # checks: per partition; the first day's evaluations have nothing to evaluate -> skipped, not passed
        for check in ("metrics_in_unit_interval", "beats_popularity_and_random_auc"):
            key = dg.AssetCheckKey(dg.AssetKey("two_tower_evaluation"), check)
            history = instance.event_log_storage.get_asset_check_execution_history(key, limit=20)
            by_day = {h.partition: h.status.value for h in history}
            assert by_day["2026-11-03"] == "SUCCEEDED", by_day
            # 11-02 evaluates the model of 11-01, trained on a one-day window: user history is as of the start of
            # each row's day, so every history of that window is empty and the model cannot beat popularity (a
            # WARN check); it is evaluated all the same
            assert by_day["2026-11-02"] in ("SUCCEEDED", "FAILED" if check.startswith("beats") else "SUCCEEDED")
            assert by_day["2026-11-01"] == "PLANNED", by_day  # the run succeeded: the UI shows it skipped
        # no blocking check failed anywhere in the backfill
        for check_key in [
            dg.AssetCheckKey(dg.AssetKey("filtered_interactions"), "no_neutral_rows"),
            dg.AssetCheckKey(dg.AssetKey("als_factors"), "factors_finite"),
            dg.AssetCheckKey(dg.AssetKey("pair_blip_scores"), "witnesses_qualify"),
            dg.AssetCheckKey(dg.AssetKey("item_collab_index"), "ann_recall_at_100"),
            dg.AssetCheckKey(dg.AssetKey("two_tower_item_index"), "holds_every_vector"),
        ]:
            history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=20)
            assert {h.partition: h.status.value for h in history} == {d: "SUCCEEDED" for d in days}, check_key


SPARK_BACKFILL_GROUPS = os.environ.get("RECSYS_TEST_SPARK_BACKFILL_GROUPS", "data_prep")
"""The groups the Spark backfill test backfills; ``data_prep,collaborative`` adds MLlib ALS and its evaluation
(by hand: ~5 minutes more on this machine, measured under load)."""
GROUPS = tuple(g.strip() for g in SPARK_BACKFILL_GROUPS.split(",") if g.strip())


@needs_java
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_spark_engine_backfill_of_three_days_through_the_daemon(tmp_path, monkeypatch):
    """``RECSYS_ENGINE=spark`` in the deployment: the daemon backfills the data-preparation assets of 3 days, each
    run with its own local Spark session; every partition, run and blocking check succeeds and the engine is
    recorded with each. (With the collaborative group as well -- MLlib ALS over the trailing window at its 15
    iterations -- the same backfill found the missing checkpoint directory; it passes now but adds ~5 minutes on
    this machine, so the suite leaves ALS to test_spark_engine.py and this run is in benchmarks/README.md.)"""
    spark_env = {
        "RECSYS_ENGINE": "spark",
        "RECSYS_SPARK_MASTER": "local[1]",  # two backfill runs at once on two cores
        "RECSYS_SPARK_CONF": "spark.sql.shuffle.partitions=2",
    }
    with run_dagster_dev(tmp_path, **spark_env) as (url, home, _):
        nodes = gql(url, ASSET_KEYS, {})["assetNodes"]
        chosen = [n for n in nodes if n["isMaterializable"] and n["groupName"] in GROUPS]
        want = {"raw_interactions", "filtered_interactions", "item_meta", "item_pairs"}
        if "collaborative" in GROUPS:
            want |= {"als_factors", "als_evaluation"}
        assert want <= {n["assetKey"]["path"][-1] for n in chosen}
        days = ["2026-11-01", "2026-11-02", "2026-11-03"]
        backfill_id, res, elapsed = backfill(url, [n["assetKey"] for n in chosen], days, "spark engine")
        statuses = res["assetBackfillData"]["assetBackfillStatuses"]
        log_tail = (tmp_path / "dagster_dev.log").read_text()[-3000:]
        assert res["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (res["status"], statuses, log_tail)
        partitioned = [s for s in statuses if "numPartitionsTargeted" in s]
        assert len(partitioned) == len(chosen)
        for s in partitioned:
            assert (s["numPartitionsTargeted"], s["numPartitionsMaterialized"], s["numPartitionsFailed"]) == (
                3,
                3,
                0,
            ), s
        print(f"spark-engine backfill of 3 days ({len(chosen)} assets): {elapsed:.0f} s")

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]

        def latest(asset: str, day: str) -> dict:
            record = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day]), limit=1
            ).records[0]
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}

        for day in days:  # the engine that ran each stage is recorded with it
            for asset in ("raw_interactions", "filtered_interactions", "item_meta", "item_pairs"):
                assert "spark" in str(latest(asset, day)["engine"]).lower(), (asset, day)
            if "collaborative" in GROUPS:
                assert latest("als_factors", day)["engine"] == "mllib", day
        if "collaborative" in GROUPS:
            assert latest("als_factors", "2026-11-03")["window_days_used"] == 3
            evaluation = latest("als_evaluation", "2026-11-03")
            assert evaluation["model_partition"] == "2026-11-02" and evaluation["engine"] == "mllib"  # on Spark
        for check_key in [
            dg.AssetCheckKey(dg.AssetKey("raw_interactions"), "quarantine_share_below_max"),
            dg.AssetCheckKey(dg.AssetKey("filtered_interactions"), "no_neutral_rows"),
            dg.AssetCheckKey(dg.AssetKey("item_pairs"), "pairs_unique"),
            *([dg.AssetCheckKey(dg.AssetKey("als_factors"), "factors_finite")] if "collaborative" in GROUPS else []),
        ]:
            history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=20)
            assert {h.partition: h.status.value for h in history} == {d: "SUCCEEDED" for d in days}, check_key
