"""`dagster dev` (webserver + daemons) for real: a partition backfill over phases 1-3 and the windowed ALS
factors, launched as the UI does it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests

from .conftest import free_port

REPO = Path(__file__).resolve().parents[1]
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


@pytest.fixture
def dagster_dev(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RECSYS_DATA_DIR": str(tmp_path / "data"),
        "RECSYS_SIM_PROFILE": "tiny",
        "RECSYS_SIM_SEED": "3",
    }
    port = free_port()
    log = open(tmp_path / "dagster_dev.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "dagster_dev.log").read_text()[-4000:]
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, "dagster dev did not come up in 180 s"
            time.sleep(1)
        yield url, home, tmp_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


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
