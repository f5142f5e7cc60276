"""What starts runs and what watches them: the lake sensor, model freshness, and failure notices.

* :func:`build_snapshot_sensor` -- ``snapshot_sensor`` launches ``daily_job`` for a day as soon as that day's
  snapshot is complete (its ``_SUCCESS`` marker exists), with the marker's fingerprint and the catalog's Delta
  version as run tags. Its cursor maps each day to the marker it ran for: a re-delivered day (a rewritten
  marker) runs again, an unchanged one never does. A day whose ``raw_interactions`` was already materialized
  from the same marker (by hand, by a backfill) is not run twice. The windows of the following days are
  brought up to date by the assets' automation conditions (``defs/conventions.py``), not by this sensor.
* :func:`build_freshness` -- each model must be materialized for day D within ``freshness_hours`` after D ends
  (when D's snapshot is complete): a check per model, and the sensor that evaluates them.
* ``run_failure_notifier`` -- every failed run is appended to the notifier (a JSON line per failure in a file,
  and a POST to a webhook when one is configured).
"""

import datetime as dt
import json
import typing
import urllib.request
import warnings
from pathlib import Path

import dagster as dg

from .data_prep import SNAPSHOTS
from .metadata import latest_partition_metadata
from .resources import CatalogSource, SnapshotSource

MODELS = ("als_factors", "content_encoder", "item_pca", "two_tower_model", "item_collab_index", "two_tower_item_index")
"""What serving depends on being fresh: the models and the retrieval indexes built from them."""


def build_snapshot_sensor(
    job: typing.Any, partitions: dg.TimeWindowPartitionsDefinition, lookback_days: int
) -> dg.SensorDefinition:
    @dg.sensor(
        name="snapshot_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Runs daily_job for a day when its snapshot's _SUCCESS marker appears or changes (re-delivery); "
            f"looks at the last {lookback_days} days."
        ),
    )
    def snapshot_sensor(context: dg.SensorEvaluationContext, snapshots: SnapshotSource, catalog: CatalogSource):
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        markers = {
            key: snapshots.marker(dt.date.fromisoformat(key))
            for key in partitions.get_partition_keys()[-lookback_days:]
        }
        waiting = [key for key, marker in markers.items() if marker is None]
        changed = {key: marker for key, marker in markers.items() if marker is not None and seen.get(key) != marker}
        # days new to the cursor may have been materialized from this very delivery already (by hand, a backfill)
        materialized = latest_partition_metadata(
            context.instance, dg.AssetKey("raw_interactions"), [k for k in changed if k not in seen]
        )
        catalog_version = None
        requests = []
        for key, marker in changed.items():
            redelivery = key in seen
            seen[key] = marker
            if not redelivery and materialized.get(key, {}).get("snapshot_marker") == marker:
                continue
            if catalog_version is None:
                catalog_version = catalog.version()
            requests.append(
                dg.RunRequest(
                    run_key=f"{key}:{marker}",
                    partition_key=key,
                    tags={
                        "recsys/snapshot_marker": marker,
                        "recsys/catalog_version": str(catalog_version),
                        "recsys/trigger": "redelivery" if redelivery else "new_day",
                    },
                )
            )
        if not requests:
            context.update_cursor(json.dumps(seen, sort_keys=True))
            return dg.SkipReason(f"no new or re-delivered day; incomplete: {', '.join(waiting[-3:]) or 'none'}")
        delivered = [
            dg.AssetMaterialization(
                asset_key=SNAPSHOTS,
                partition=r.partition_key,
                metadata={
                    "snapshot_marker": r.tags["recsys/snapshot_marker"],
                    "catalog_version": r.tags["recsys/catalog_version"],
                    "trigger": r.tags["recsys/trigger"],
                    "source": snapshots.describe(dt.date.fromisoformat(r.partition_key)),
                },
            )
            for r in requests
        ]
        return dg.SensorResult(run_requests=requests, asset_events=delivered, cursor=json.dumps(seen, sort_keys=True))

    return snapshot_sensor


def build_freshness(
    assets: typing.Sequence[dg.AssetsDefinition], hours: int
) -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """A time-partition freshness check on every model and index: day D's partition must exist by D+1
    ``hours``:00 UTC."""
    models = [a for a in assets if any(k.to_user_string() in MODELS for k in a.keys)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # freshness checks are marked beta/preview in 1.13
        checks = dg.build_time_partition_freshness_checks(
            assets=models, deadline_cron=f"0 {hours} * * *", timezone="UTC", severity=dg.AssetCheckSeverity.WARN
        )
        sensor = dg.build_sensor_for_freshness_checks(
            freshness_checks=checks, minimum_interval_seconds=600, name="model_freshness_sensor"
        )
    return list(checks), sensor


class NotifierResource(dg.ConfigurableResource):
    """Where failure notices go: appended as JSON lines to ``log_path``, and POSTed to ``webhook_url`` (Slack-
    style ``{"text": ...}``) when it is set. Configure with ``RECSYS_NOTIFY_LOG`` / ``RECSYS_NOTIFY_WEBHOOK``."""

    log_path: str
    webhook_url: typing.Optional[str] = None
    timeout_s: float = 10.0

    def notify(self, notice: dict) -> None:
        path = Path(self.log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(notice, sort_keys=True) + "\n")
        if self.webhook_url:
            body = json.dumps({"text": notice["summary"], "notice": notice}).encode()
            req = urllib.request.Request(
                self.webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(req, timeout=self.timeout_s):  # noqa: S310 (operator-configured URL)
                pass


@dg.run_failure_sensor(
    name="run_failure_notifier",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
)
def run_failure_notifier(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
    run = context.dagster_run
    failed_steps = [e.step_key for e in context.get_step_failure_events()]
    partition = run.tags.get("dagster/partition")
    notice = {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": partition,
        "backfill": run.tags.get("dagster/backfill"),
        "failed_steps": failed_steps,
        "error": (context.failure_event.message or "")[:2000],
        "summary": (
            f"recsys_assets: run {run.run_id[:8]} of {run.job_name}"
            + (f" [{partition}]" if partition else "")
            + f" failed in {', '.join(failed_steps) or 'run setup'}"
        ),
    }
    notifier.notify(notice)
