"""`dagster dev` (webserver + daemons, the shipped dagster.yaml) for real: backfills launched through GraphQL
as the UI launches them -- a range of data-prep and ALS partitions, and every asset of the graph over 3 days."""

import time

import dagster as dg
import pytest
import requests

ASSETS = [
    "raw_interactions",
    "raw_interactions_quarantine",
    "video_catalog",
    "filtered_interactions",
    "item_meta",
    "item_pairs",
    "als_factors",
    "als_user_factors",
]
START, END = "2026-11-01", "2026-11-03"

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""
POLL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}"""


def gql(url: str, query: str, variables: dict) -> dict:
    r = requests.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.mark.slow
def test_backfill_of_a_date_range_through_the_daemon(dagster_dev, monkeypatch):
    url, home, tmp_path = dagster_dev
    params = {
        "partitionsByAssets": [
            {"assetKey": {"path": [a]}, "partitions": {"range": {"start": START, "end": END}}} for a in ASSETS
        ],
        "title": "test backfill",
    }
    launched = gql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    deadline = time.time() + 420
    status = None
    while time.time() < deadline:
        res = gql(url, POLL, {"id": backfill_id})["partitionBackfillOrError"]
        status = res.get("status")
        if status not in ("REQUESTED", "CANCELING", "FAILING", None):
            break
        time.sleep(3)
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (
        f"backfill ended {status}; log:\n" + (tmp_path / "dagster_dev.log").read_text()[-4000:]
    )

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        for asset in ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {
                "2026-11-01",
                "2026-11-02",
                "2026-11-03",
            }, asset
        for check in ("no_neutral_rows", "no_client_above_ctr"):
            key = dg.AssetCheckKey(dg.AssetKey("filtered_interactions"), check)
            history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
            seen = [(h.partition, h.status.value) for h in history]
            succeeded = {p for p, s in seen if s == "SUCCEEDED"}
            assert succeeded == {"2026-11-01", "2026-11-02", "2026-11-03"}, seen
            assert not [x for x in seen if x[1] == "FAILED"], seen
        # the windowed asset ran after every day of its window was there
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("als_factors"), asset_partitions=["2026-11-03"]), limit=1
        ).records
        md = records[0].asset_materialization.metadata
        assert md["window_days_used"].value == 3 and md["window_rows"].value > 0
    assert (tmp_path / "data" / "assets" / "item_pairs" / "2026-11-03.parquet").exists()


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
ASSET_KEYS = """{ assetNodes { assetKey { path } isMaterializable isPartitioned } }"""


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
    params = {"assetSelection": every_asset, "partitionNames": days, "title": "whole graph"}
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
    elapsed = time.time() - started
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
            assert by_day["2026-11-02"] == "SUCCEEDED" and by_day["2026-11-03"] == "SUCCEEDED", by_day
            assert by_day["2026-11-01"] == "PLANNED", by_day  # the run succeeded: the UI shows it skipped
        # no blocking check failed anywhere in the backfill
        for check_key in [
            dg.AssetCheckKey(dg.AssetKey("filtered_interactions"), "no_neutral_rows"),
            dg.AssetCheckKey(dg.AssetKey("als_factors"), "factors_finite"),
        ]:
            history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=20)
            assert {h.partition: h.status.value for h in history} == {d: "SUCCEEDED" for d in days}, check_key
