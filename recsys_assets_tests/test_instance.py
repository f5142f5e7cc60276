"""The Dagster instance: safe creation under concurrent first runs, and runs whose process was killed."""

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from recsys_assets.defs.instance import fail_dead_runs, open_instance

from .conftest import tiny_env

OPEN = "import sys; from recsys_assets.defs.instance import open_instance; open_instance(sys.argv[1]).get_runs()"


@pytest.mark.slow
def test_first_runs_started_together_on_a_fresh_home_all_get_the_instance(tmp_path):
    # Without the lock, two processes creating the SQLite storages at once failed about one time in five here
    # (sqlite3.IntegrityError: UNIQUE constraint failed: alembic_version, or "table runs already exists").
    for round_ in range(3):
        home = tmp_path / f"home{round_}"
        procs = [
            subprocess.Popen([sys.executable, "-c", OPEN, str(home)], stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], errors
        assert "run_monitoring" in (home / "dagster.yaml").read_text()


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_marked_failed(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, **tiny_env(tmp_path), "DAGSTER_HOME": str(home)}
    cmd = [
        sys.executable,
        "-m",
        "recsys_assets.cli",
        "materialize",
        "--job",
        "data_prep_job",
        "--start",
        "2026-11-01",
        "--end",
        "2026-11-03",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    instance = open_instance(home)
    deadline = time.time() + 120
    started: list = []
    while not started:
        assert time.time() < deadline and proc.poll() is None, "the CLI run never started"
        started = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    run_id = started[0].run_id
    # the original failure: the run stays STARTED, nothing ever ends it
    time.sleep(0.5)
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    # now
    assert fail_dead_runs(instance) == [run_id]
    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert f"run process {proc.pid}" in failure.event_log_entry.dagster_event.message
    assert fail_dead_runs(instance) == []  # a live or finished run is never touched


def test_live_runs_are_never_marked():
    instance = dg.DagsterInstance.ephemeral()

    @dg.asset
    def probe(context: dg.AssetExecutionContext) -> int:
        # inside the run: it is STARTED and its process (this one) is alive
        assert fail_dead_runs(context.instance) == []
        return 1

    assert dg.materialize([probe], instance=instance).success
