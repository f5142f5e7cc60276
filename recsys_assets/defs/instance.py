"""The Dagster instance the project's runs are recorded in: created safely, and kept honest.

* :func:`open_instance`: the instance at ``DAGSTER_HOME``, created under a file lock, so two first runs
  started at once on a fresh home do not both create the SQLite schemas (one used to die with ``table
  runs already exists`` / ``UNIQUE constraint failed: alembic_version``). It writes ``dagster.yaml`` when
  there is none (:data:`INSTANCE_YAML`, the shipped ``recsys_assets/dagster.yaml``).
* :func:`fail_dead_runs`: a run whose process was killed (``kill -9``, OOM) never writes RUN_FAILURE and
  would stay STARTED for ever. Runs of this machine whose recorded process is gone are marked failed,
  with the pid in the message. ``recsys-assets`` does it when it starts, and the ``dead_run_sensor`` does
  it every two minutes under ``dagster dev``. Dagster's own run monitoring (enabled in the shipped
  ``dagster.yaml``) covers runs that never start and a maximum runtime; it cannot tell that the default
  run launcher's worker died, which is what this is for.
"""

import os
import socket
import typing
from pathlib import Path

import dagster as dg
import psutil
from filelock import FileLock

INSTANCE_YAML = (Path(__file__).resolve().parents[1] / "dagster.yaml").read_text()
"""The shipped ``recsys_assets/dagster.yaml``: run queue limits, the GPU pool's limit, run monitoring."""
HOST_TAG = "recsys/host"
"""Set on the runs ``recsys-assets`` executes, so that only this machine judges whether their process lives."""


def open_instance(home: str | os.PathLike) -> dg.DagsterInstance:
    """The instance at ``home`` (created, with :data:`INSTANCE_YAML`, if new); safe to call concurrently."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(str(home / ".instance.lock"), timeout=300):
        cfg = home / "dagster.yaml"
        if not cfg.exists():
            cfg.write_text(INSTANCE_YAML)
        instance = dg.DagsterInstance.from_config(str(home))
        # touch every storage while holding the lock: their schemas are created on first use
        instance.get_runs(limit=1)
        instance.fetch_materializations(dg.AssetKey("__init__"), limit=1)
        instance.all_instigator_state()
    return instance


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> typing.Optional[int]:
    """The pid of the process that executes the run (recorded on its RUN_START event)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    if not records or records[0].event_log_entry.dagster_event is None:
        return None
    return records[0].event_log_entry.dagster_event.pid


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the STARTED runs of this machine whose process no longer exists; returns their ids.

    Only with the default run launcher (runs are processes of this machine) and only for runs without a
    ``recsys/host`` tag or with this host's: a run on another machine is never judged from here."""
    from dagster._core.launcher import DefaultRunLauncher

    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return []
    here = socket.gethostname()
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if run.tags.get(HOST_TAG, here) != here:
            continue
        pid = _run_pid(instance, run.run_id)
        if pid is None or pid == os.getpid() or psutil.pid_exists(pid):
            continue
        instance.report_run_failed(
            run,
            f"run process {pid} on {here} no longer exists (killed, or out of memory) and never reported an end; "
            "marked failed by recsys-assets. Partitions it was writing keep their previous version.",
        )
        failed.append(run.run_id)
    return failed


@dg.sensor(minimum_interval_seconds=120, default_status=dg.DefaultSensorStatus.RUNNING)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Marks failed the runs whose process died without a word (see ``defs/instance.py``)."""
    failed = fail_dead_runs(context.instance)
    return dg.SkipReason(f"marked failed: {failed}" if failed else "no dead run")
