"""Operating the graph: what the host sees of the windows, the conventions every asset carries, the lake
sensor, automation conditions, retries, the failure notifier, progress lines (issue 16). In-process and fast;
the daemon-driven backfills are in test_backfill_daemon.py, the browser in test_browser.py."""

import datetime as dt
import http.server
import json
import threading
import warnings

import dagster as dg
import polars as pl
import pytest

from recsys_assets.definitions import build_definitions
from recsys_assets.defs import automation, conventions
from recsys_assets.defs.guards import is_transient, only_transient_retries
from recsys_assets.defs.partitions import (
    EVAL_WINDOW,
    PREVIOUS_DAY,
    TRAIN_WINDOW,
    after_previous_day,
    window_input,
)
from recsys_assets.progress import Progress
from recsys_assets.simulator.platform import Platform
from recsys_assets.simulator.publish import publish_day

from .conftest import PARTITIONS, tiny_env, tiny_resources


def _keys(subset) -> list[str]:
    return sorted(subset.get_partition_keys())


def _upstream(mapping, day: str) -> list[str]:
    sub = PARTITIONS.empty_subset().with_partition_keys([day])
    return _keys(
        mapping.get_upstream_mapped_partitions_result_for_partitions(sub, PARTITIONS, PARTITIONS).partitions_subset
    )


def _downstream(mapping, day: str) -> list[str]:
    sub = PARTITIONS.empty_subset().with_partition_keys([day])
    return _keys(mapping.get_downstream_partitions_for_partitions(sub, PARTITIONS, PARTITIONS))


def test_day_window_reads_the_window_and_reaches_only_its_own_day_downstream():
    assert _upstream(TRAIN_WINDOW, "2026-11-10") == [f"2026-11-{d:02d}" for d in range(4, 11)]
    assert _upstream(TRAIN_WINDOW, "2026-11-02") == ["2026-11-01", "2026-11-02"]  # before the start: left out
    assert _upstream(EVAL_WINDOW, "2026-11-09") == [f"2026-11-{d:02d}" for d in range(2, 10)]
    assert _upstream(PREVIOUS_DAY, "2026-11-05") == ["2026-11-04"]
    assert _upstream(PREVIOUS_DAY, "2026-11-01") == []
    for mapping in (TRAIN_WINDOW, EVAL_WINDOW, PREVIOUS_DAY):
        assert _downstream(mapping, "2026-11-05") == ["2026-11-05"]  # what a backfill extends to


def test_the_host_sees_same_day_edges_and_the_ordering_dependency(tmp_path):
    """What the UI and the backfill daemon get (the repository snapshot): no DayWindow (so a day range stays
    that range), the built-in dependency of each windowed asset on its previous day."""
    from dagster._core.remote_representation.external_data import RepositorySnap

    defs = build_definitions(tiny_env(tmp_path))
    snap = RepositorySnap.from_def(defs.get_repository_def())
    nodes = {n.asset_key.to_user_string(): n for n in snap.asset_nodes}
    als = {e.parent_asset_key.to_user_string(): e.partition_mapping for e in nodes["als_factors"].parent_edges}
    assert als["filtered_interactions"] is None and als["video_catalog"] is None  # inferred: same day
    assert isinstance(als["als_factors"], dg.TimeWindowPartitionMapping)
    assert (als["als_factors"].start_offset, als["als_factors"].end_offset) == (-1, -1)
    for name in (
        "als_evaluation",
        "item_pca",
        "two_tower_evaluation",
        "content_encoder",
        "pair_blip_scores",
    ):
        parents = {e.parent_asset_key.to_user_string() for e in nodes[name].parent_edges}
        assert name in parents, name


def test_every_asset_carries_owners_kinds_tags_code_version_and_automation(tmp_path):
    defs = build_definitions(tiny_env(tmp_path))
    graph = defs.resolve_asset_graph()
    externals = {"interaction_snapshots", "video_catalog_delta"}
    assert {k.to_user_string() for k in graph.get_all_asset_keys() if not graph.get(k).is_materializable} == externals
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        if name in externals:  # the sources: shown in the lineage, never materialized by this code location
            assert node.owners == ["team:data-platform"] and node.group_name == "sources"
            continue
        assert node.owners and node.code_version and len(node.code_version) == 12, name
        assert node.tags["tier"] in ("dataset", "features", "model", "evaluation", "report", "index"), name
        assert len(node.kinds) == 2 and node.kinds & {"parquet", "safetensors"}, (name, node.kinds)
        automated = node.is_partitioned and name not in conventions.AUTOMATED_BY_SENSOR
        assert (node.automation_condition is not None) == automated, name
    # the code version follows the stage code the asset uses, and is stable across builds
    again = build_definitions(tiny_env(tmp_path)).resolve_asset_graph()
    assert all(again.get(k).code_version == graph.get(k).code_version for k in graph.get_all_asset_keys())
    assert graph.get(dg.AssetKey("item_meta")).code_version != graph.get(dg.AssetKey("item_pairs")).code_version


def test_a_windowed_asset_without_its_ordering_dependency_is_refused():
    @dg.asset(partitions_def=PARTITIONS, ins={"up": window_input("up", TRAIN_WINDOW)}, group_name="collaborative")
    def windowed(up: dict) -> None:
        return None

    with pytest.raises(dg.DagsterInvalidDefinitionError, match="after_previous_day"):
        conventions.apply([windowed])

    @dg.asset(
        partitions_def=PARTITIONS,
        ins={"up": window_input("up", TRAIN_WINDOW)},
        deps=[after_previous_day("ordered")],
        group_name="collaborative",
    )
    def ordered(up: dict) -> None:
        return None

    conventions.ENGINE.setdefault("ordered", "polars")
    try:
        (applied,) = conventions.apply([ordered])
    finally:
        conventions.ENGINE.pop("ordered")
    assert applied.specs_by_key[dg.AssetKey("ordered")].automation_condition is not None


def test_automation_rebuilds_the_windows_after_a_changed_day():
    """The condition of ``conventions.automation_for`` on a two-asset graph with a DayWindow: re-materializing
    day X of the upstream requests the windowed asset's day X; once that is done, X+1 (through its dependency
    on its previous day), and so on."""
    parts = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_date="2026-11-06")

    @dg.asset(partitions_def=parts)
    def up(context) -> None:
        return None

    @dg.asset(
        partitions_def=parts,
        deps=[dg.AssetDep("up", partition_mapping=TRAIN_WINDOW), after_previous_day("win")],
        automation_condition=conventions.automation_for(dg.AssetKey("win"), ordered=True),
    )
    def win(context) -> None:
        return None

    days = parts.get_partition_keys()
    with dg.instance_for_test() as instance:
        for day in days:
            dg.materialize([up, win], partition_key=day, instance=instance)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = dg.evaluate_automation_conditions(defs=[up, win], instance=instance)
            assert result.total_requested == 0  # everything is up to date
            dg.materialize([up], partition_key="2026-11-03", instance=instance)
            result = dg.evaluate_automation_conditions(defs=[up, win], instance=instance, cursor=result.cursor)
            assert sorted(result.get_requested_partitions(dg.AssetKey("win"))) == ["2026-11-03"]
            dg.materialize([win], partition_key="2026-11-03", instance=instance)
            result = dg.evaluate_automation_conditions(defs=[up, win], instance=instance, cursor=result.cursor)
            assert sorted(result.get_requested_partitions(dg.AssetKey("win"))) == ["2026-11-04"]


def _sensor_run(sensor, instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        result = sensor(ctx)
        if isinstance(result, dg.SensorResult):
            delivered = [e.partition for e in result.asset_events]
            assert delivered == [r.partition_key for r in result.run_requests]  # the source asset records each
            return list(result.run_requests), result.cursor, result
        return [], ctx.cursor, result


def test_snapshot_sensor_runs_a_day_when_its_marker_lands_and_again_when_redelivered(tmp_path):
    defs = build_definitions(tiny_env(tmp_path, RECSYS_SENSOR_LOOKBACK_DAYS="400"))
    sensor = defs.resolve_sensor_def("snapshot_sensor")
    assert sensor.job_name == "daily_job"
    resources = tiny_resources(tmp_path)
    resources = {"snapshots": resources["snapshots"], "catalog": resources["catalog"]}
    platform = Platform("tiny", seed=3)
    root = tmp_path / "platform"
    with dg.instance_for_test() as instance:
        requests, cursor, result = _sensor_run(sensor, instance, resources)
        assert requests == [] and isinstance(result, dg.SkipReason)  # nothing delivered yet
        publish_day(platform, root, dt.date(2026, 11, 2))
        requests, cursor, _ = _sensor_run(sensor, instance, resources, cursor)  # the next tick
        assert [r.partition_key for r in requests] == ["2026-11-02"]
        assert requests[0].tags["recsys/trigger"] == "new_day"
        assert requests[0].tags["recsys/catalog_version"] == "None"  # the catalog is not published yet
        requests, cursor, _ = _sensor_run(sensor, instance, resources, cursor)
        assert requests == []  # a cursor: the same delivery never runs twice
        publish_day(platform, root, dt.date(2026, 11, 2), redeliver=True)
        publish_day(platform, root, dt.date(2026, 11, 3))
        requests, cursor, _ = _sensor_run(sensor, instance, resources, cursor)
        by_day = {r.partition_key: r.tags["recsys/trigger"] for r in requests}
        assert by_day == {"2026-11-02": "redelivery", "2026-11-03": "new_day"}
        assert len({r.run_key for r in requests}) == 2


def test_snapshot_sensor_skips_a_day_already_materialized_from_the_same_delivery(tmp_path):
    from recsys_assets.defs import data_prep

    defs = build_definitions(tiny_env(tmp_path, RECSYS_SENSOR_LOOKBACK_DAYS="400"))
    sensor = defs.resolve_sensor_def("snapshot_sensor")
    resources = tiny_resources(tmp_path)
    raw = [a for a in data_prep.build_assets(PARTITIONS) if "raw_interactions" in {k.to_user_string() for k in a.keys}]
    with dg.instance_for_test() as instance:
        assert dg.materialize(raw, partition_key="2026-11-02", resources=resources, instance=instance).success
        requests, _, _ = _sensor_run(
            sensor, instance, {"snapshots": resources["snapshots"], "catalog": resources["catalog"]}
        )
        assert requests == []


def test_transient_errors_are_retried_and_data_errors_are_not():
    from recsys_assets.stages.raw_interactions import SnapshotSchemaError

    class FakeS3Error(Exception):
        response = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}

    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError()) and is_transient(FakeS3Error())
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as e:
            raise OSError("could not read the snapshot") from e
    except OSError as wrapped:
        assert is_transient(wrapped)  # through the chain
    assert not is_transient(SnapshotSchemaError("column play_time has type String"))
    assert not is_transient(FileNotFoundError("no snapshot"))

    attempts = {"transient": 0, "data": 0}

    def build(kind: str, exc: Exception) -> dg.AssetsDefinition:
        @dg.asset(name=kind, retry_policy=dg.RetryPolicy(max_retries=2))
        def flaky() -> int:
            attempts[kind] += 1
            with only_transient_retries():
                if attempts[kind] == 1:
                    raise exc
            return 1

        return flaky

    transient = build("transient", ConnectionResetError("reset by peer"))
    data = build("data", SnapshotSchemaError("column play_time has type String"))
    with dg.instance_for_test() as instance:
        assert dg.materialize([transient], instance=instance).success
        result = dg.materialize([data], instance=instance, raise_on_error=False)
    assert attempts == {"transient": 2, "data": 1}
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "a data error: not retried" in failure.step_failure_data.error.message


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_run_failure_notifier_writes_the_notice_and_posts_it(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notifier = automation.NotifierResource(
        log_path=str(tmp_path / "notices.jsonl"), webhook_url=f"http://127.0.0.1:{server.server_port}/hook"
    )

    @dg.asset
    def broken() -> int:
        raise RuntimeError("the model diverged")

    try:
        with dg.instance_for_test() as instance:
            result = dg.materialize([broken], instance=instance, raise_on_error=False)
            run = instance.get_run_by_id(result.run_id)
            failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
            ctx = dg.build_run_status_sensor_context(
                sensor_name="run_failure_notifier",
                dagster_instance=instance,
                dagster_run=run,
                dagster_event=failure,
                resources={"notifier": notifier},
            ).for_run_failure()
            automation.run_failure_notifier(ctx)
    finally:
        server.shutdown()
    (line,) = (tmp_path / "notices.jsonl").read_text().splitlines()
    notice = json.loads(line)
    assert notice["run_id"] == result.run_id and notice["failed_steps"] == ["broken"]
    assert "failed in broken" in notice["summary"]
    assert _Hook.received and _Hook.received[-1]["notice"]["run_id"] == result.run_id


def test_freshness_checks_cover_the_models(tmp_path):
    defs = build_definitions(tiny_env(tmp_path, RECSYS_MODEL_FRESHNESS_HOURS="4"))
    checked = {k.asset_key.to_user_string() for c in defs.asset_checks for k in c.check_keys}
    assert checked == {*automation.MODELS, "als_user_factors"}  # the ALS multi-asset is one check per output
    job_checks = defs.resolve_job_def("daily_job").asset_layer.asset_graph.asset_check_keys
    assert not [k for k in job_checks if "freshness" in k.name]  # judged by the sensor, not inside a day's run
    with pytest.raises(ValueError, match="RECSYS_MODEL_FRESHNESS_HOURS"):
        build_definitions(tiny_env(tmp_path, RECSYS_MODEL_FRESHNESS_HOURS="30"))


def test_progress_lines_report_done_rate_and_eta():
    now = [0.0]
    lines: list[str] = []
    p = Progress(lines.append, "embedding", 100, unit="videos", every_s=10, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 2.0
        p.update(5)
    p.finish()
    assert lines[0] == "embedding: 25/100 videos (25.0%), 2.5 videos/s, ETA 30s"
    assert lines[1] == "embedding: 50/100 videos (50.0%), 2.5 videos/s, ETA 20s"
    assert lines[-1].startswith("embedding: 50/100 videos") and lines[-1].endswith("done in 20s")
    assert len(lines) == 3


def test_skipped_evaluation_leaves_its_checks_unexecuted(tmp_path):
    """The first day has no model before it: the evaluation materializes an empty table marked skipped and
    yields no check result, which the UI shows as skipped (PLANNED in a successful run), not passed."""
    from recsys_assets.defs import collaborative, data_prep

    assets = [*data_prep.build_assets(PARTITIONS), *collaborative.build_assets(PARTITIONS)]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets, partition_key="2026-11-01", resources=tiny_resources(tmp_path), instance=instance
        )
        assert result.success
        mat = next(
            m
            for m in result.asset_materializations_for_node("als_evaluation")
            if m.asset_key.path == ["als_evaluation"]
        )
        assert "skipped" in mat.metadata
        key = dg.AssetCheckKey(dg.AssetKey("als_evaluation"), "metrics_in_unit_interval")
        (record,) = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
        assert record.status.value == "PLANNED" and record.partition == "2026-11-01"
        assert not [e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["als_evaluation"]]
    assert pl.read_parquet(tmp_path / "assets" / "als_evaluation" / "2026-11-01.parquet").height == 0
