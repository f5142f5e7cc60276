"""The ``emr-serverless`` engine: the Pipes job's parameters and report, and the launch request on moto.

moto (5.2) implements EMR Serverless' CreateApplication / StartJobRun / GetJobRun / ListJobRuns and
CloudWatch Logs, over real HTTP. What it does not do is run the job: a job run is ``SUCCESS`` at once. The
test plays that part of EMR: a stand-in driver takes the request moto received, runs the submitted entry
point file with its driver environment (spark-submit's master: local Spark), and puts the driver's
stdout/stderr into moto's CloudWatch Logs where EMR puts them; GetJobRun answers only once the driver has
exited, as EMR's does. Everything else -- the request, dagster-aws's client and CloudWatch message reader, the
job, the manifest check -- is the real code. The ``spark-subprocess`` engine (the same entry point in a local
process) runs every stage in ``test_spark_engine.py``.
"""

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from recsys_assets.spark import pipes_job
from recsys_assets.stages import item_pairs as phase3
from recsys_assets.stages.prep_results import PairsOutput

from .conftest import tiny_assets, tiny_resources

DAY = "2026-11-02"


def _params(**change):
    base = {
        "stage": "item_pairs",
        "day": DAY,
        "inputs": {"filtered_interactions": ["/data/f.parquet"], "item_meta": ["/data/m.parquet"]},
        "outputs": {"table": f"item_pairs/{DAY}.parquet"},
        "store_url": "/data/assets",
        "scheme_map": {"s3": "s3a"},
        "rules": {"min_num_clients": 3},
    }
    return {**base, **change}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stage": "rm -rf"}, "stage must be one of"),
        ({"day": "yesterday"}, "day must be an ISO date"),
        ({"inputs": {"filtered_interactions": ["/data/f.parquet"]}}, "input 'item_meta'"),
        ({"inputs": {"filtered_interactions": [], "item_meta": ["/m"]}}, "input 'filtered_interactions'"),
        ({"outputs": {"table": ""}}, "outputs must map"),
        ({"outputs": {"table": "k", "extra": "k2"}}, "outputs must map"),
        ({"store_url": None}, "store_url is required"),
        ({"rules": {"min_num_clients": 3, "drop_tables": True}}, "bad rules"),
    ],
)
def test_the_job_refuses_extras_it_cannot_run(change, message):
    with pytest.raises(pipes_job.JobParamsError, match=message):
        pipes_job.parse_params(_params(**change))


def test_job_params_round_trip_and_the_report_decodes_to_the_engines_result():
    params = pipes_job.parse_params(_params())
    assert params.rules == phase3.PairRules(min_num_clients=3) and params.day == dt.date(2026, 11, 2)
    built = pipes_job.job_params(
        "item_pairs",
        dt.date(2026, 11, 2),
        _params()["inputs"],
        _params()["outputs"],
        "/data/assets",
        {"s3": "s3a"},
        rules=phase3.PairRules(min_num_clients=3),
    )
    assert pipes_job.parse_params(built) == params
    top = pl.DataFrame({"item_id_1": [1], "item_id_2": [2], "pair_type": ["positive"], "num_clients": [5]})
    result = PairsOutput(None, {"pairs": 7}, top, {"pairs_canonical": (True, {"bad_rows": 0})})
    written = {"table": {"store_url": "/data/assets", "key": "k", "version": "v1", "rows": 7, "schema": []}}
    report = pipes_job.encode_report("item_pairs", result, written)
    back = pipes_job.decode_report(report, {"table": "stored"})
    assert back.table == "stored" and back.stats == {"pairs": 7} and back.top.equals(top)
    assert back.verdicts == {"pairs_canonical": (True, {"bad_rows": 0})}


def _driver_env(request: dict) -> dict[str, str]:
    """The driver environment a StartJobRun request asks for (``spark.emr-serverless.driverEnv.*``)."""
    prefix = "spark.emr-serverless.driverEnv."
    parts = request["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"].split("--conf ")[1:]
    pairs = (part.strip().split("=", 1) for part in parts)
    return {k[len(prefix) :]: v for k, v in pairs if k.startswith(prefix)}


DRIVER_TIMEOUT_S = 900
"""How long the stand-in driver may run (a Spark job of a tiny day: seconds, minutes on a loaded machine)."""


def _emr_driver_stand_in(endpoint: str, app: str, done: dict, finished: threading.Event) -> None:
    try:
        _drive(endpoint, app, done)
    except Exception as e:  # reported by the test
        done["stderr"] = f"stand-in driver failed: {e!r}"
    finally:
        finished.set()


def _drive(endpoint: str, app: str, done: dict) -> None:
    """What EMR Serverless does and moto does not: run the submitted entry point file as the driver (the
    master is the platform's: ``local[2]`` here) with the request's driver environment, and put its stdout and
    stderr into CloudWatch Logs where EMR puts them, for Pipes to read."""
    import boto3

    emr = boto3.client("emr-serverless", endpoint_url=endpoint)
    logs = boto3.client("logs", endpoint_url=endpoint)
    deadline = time.monotonic() + 120
    while True:  # moto answers ResourceNotFound for an application without job runs yet
        try:
            if emr.list_job_runs(applicationId=app)["jobRuns"]:
                break
        except emr.exceptions.ResourceNotFoundException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("no job run was started")
        time.sleep(0.2)
    [run] = emr.list_job_runs(applicationId=app)["jobRuns"]
    request = emr.get_job_run(applicationId=app, jobRunId=run["id"])["jobRun"]
    entry = request["jobDriver"]["sparkSubmit"]["entryPoint"]
    submit = "--master local[2] --conf spark.sql.shuffle.partitions=2 --conf spark.ui.enabled=false pyspark-shell"
    env = {**os.environ, **_driver_env(request), "PYSPARK_SUBMIT_ARGS": submit}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, entry.removeprefix("local://")],
        env=env,
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT_S,
    )
    done.update(request=request, returncode=proc.returncode, stderr=proc.stderr)
    group, stream = "/aws/emr-serverless", f"/applications/{app}/jobs/{run['id']}/SPARK_DRIVER"
    logs.create_log_group(logGroupName=group)
    now = int(time.time() * 1000)
    for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        logs.create_log_stream(logGroupName=group, logStreamName=f"{stream}/{name}")
        events = [{"timestamp": now, "message": line} for line in text.splitlines() if line.strip()]
        for i in range(0, len(events), 1000):
            logs.put_log_events(logGroupName=group, logStreamName=f"{stream}/{name}", logEvents=events[i : i + 1000])


def test_phase_1_on_emr_serverless_through_pipes_on_moto(s3_env, tmp_path):
    """The engine asks EMR Serverless (moto) to run the packaged entry point file with the Pipes context as
    driver environment; a stand-in driver runs that request as EMR would, and the asset records what the job
    wrote and reported through CloudWatch Logs (moto): the same table and verdicts as polars."""
    import boto3
    from dagster_pipes import PipesDefaultContextLoader, decode_param

    from recsys_assets.defs import data_prep
    from recsys_assets.storage import LocalStore, read_manifest

    endpoint, _, _ = s3_env
    emr = boto3.client("emr-serverless", endpoint_url=endpoint)
    app = emr.create_application(name="recsys", releaseLabel="emr-7.1.0", type="SPARK")["applicationId"]
    env = {
        "RECSYS_ENGINE": "emr-serverless",
        "RECSYS_EMR_APPLICATION_ID": app,
        "RECSYS_EMR_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/recsys-emr",
        # on EMR: the file of the package installed in the application's image
        "RECSYS_EMR_ENTRY_POINT": "local://" + str(Path(pipes_job.__file__).resolve()),
        "RECSYS_EMR_SPARK_SUBMIT_PARAMETERS": "--conf spark.executor.memory=8g",
        "RECSYS_EMR_ENDPOINT_URL": endpoint,
    }
    assets = tiny_assets(data_prep)
    instance = dg.DagsterInstance.ephemeral()
    roots = {"polars": tmp_path / "polars", "emr": tmp_path / "emr"}
    for root in roots.values():
        raw = dg.materialize(
            assets,
            selection=["raw_interactions", "raw_interactions_quarantine"],
            partition_key=DAY,
            resources=tiny_resources(root),
            instance=instance,
        )
        assert raw.success
    polars = dg.materialize(
        assets, selection=["filtered_interactions"], partition_key=DAY, resources=tiny_resources(roots["polars"])
    )
    resources = tiny_resources(roots["emr"], **env)
    assert resources["prep_engine"].describe() == f"spark job via Dagster Pipes (EMR Serverless application {app})"
    done: dict = {}
    finished = threading.Event()
    driver = threading.Thread(target=_emr_driver_stand_in, args=(endpoint, app, done, finished), daemon=True)
    driver.start()

    def running_until_the_driver_exits(**kwargs) -> None:
        """moto reports SUCCESS at once; EMR reports it when the driver has exited: GetJobRun waits for it."""
        # past the driver's own timeout: a slow machine fails in the driver, not as a missing report
        finished.wait(timeout=DRIVER_TIMEOUT_S + 120)

    session = boto3._get_default_session()  # the one the launcher's clients come from
    session.events.register("before-call.emr-serverless.GetJobRun", running_until_the_driver_exits)
    try:
        run = dg.materialize(
            assets,
            selection=["filtered_interactions"],
            partition_key=DAY,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
    finally:
        session.events.unregister("before-call.emr-serverless.GetJobRun", running_until_the_driver_exits)
    driver.join(timeout=60)
    assert done.get("returncode") == 0, done.get("stderr", "")[-3000:]
    assert run.success, [e.event_specific_data.error.message for e in run.get_step_failure_events()]

    # the request EMR received
    request = done["request"]
    assert request["executionRole"] == env["RECSYS_EMR_EXECUTION_ROLE_ARN"]
    assert request["name"] == f"recsys_assets filtered_interactions {DAY}"
    assert request["tags"]["dagster/run-id"] == run.run_id
    assert request["configurationOverrides"]["monitoringConfiguration"]["cloudWatchLoggingConfiguration"]["enabled"]
    submit = request["jobDriver"]["sparkSubmit"]
    assert submit["entryPoint"] == env["RECSYS_EMR_ENTRY_POINT"]
    assert submit["sparkSubmitParameters"].startswith("--conf spark.executor.memory=8g")
    context = decode_param(_driver_env(request)["DAGSTER_PIPES_CONTEXT"])[PipesDefaultContextLoader.DIRECT_KEY]
    extras = pipes_job.parse_params(context["extras"])  # what the job ran, checked by the job's own parser
    io = resources["io_manager"]
    assert extras.stage == "filtered_interactions" and extras.day == dt.date(2026, 11, 2)
    assert extras.outputs == {"table": io.key_for(dg.AssetKey("filtered_interactions"), DAY)}
    assert extras.inputs["raw_interactions"] and all(u.endswith(".parquet") for u in extras.inputs["raw_interactions"])
    assert context["partition_key"] == DAY

    # what the asset recorded: the job's partition (written by Spark, checked by the IO manager), its report
    store = LocalStore(roots["emr"] / "assets")
    manifest = read_manifest(store, f"filtered_interactions/{DAY}.parquet")
    assert manifest is not None and manifest["written_by"] == "spark"
    md = run.asset_materializations_for_node("filtered_interactions")[0].metadata
    expected = polars.asset_materializations_for_node("filtered_interactions")[0].metadata
    assert md["engine"].value.startswith("spark job via Dagster Pipes (EMR Serverless")
    assert md["AWS EMR Serverless Job Run ID"].value == request["jobRunId"]
    assert md["manifest_version"].value == manifest["version"]
    for name in ("dagster/row_count", "positive", "negative", "neutral", "rows_dropped_with_clients"):
        assert md[name].value == expected[name].value, name
    checks = {e.check_name: e.passed for e in run.get_asset_check_evaluations()}
    assert checks == {e.check_name: e.passed for e in polars.get_asset_check_evaluations()} and all(checks.values())
    # the same rows as polars (Spark's parts are each in polars' order; types as the other engine tests compare)
    from .test_spark_engine import _stored

    assert _stored(roots["emr"], "filtered_interactions", DAY).equals(
        _stored(roots["polars"], "filtered_interactions", DAY)
    )


def test_a_job_that_reports_nothing_stores_nothing(tmp_path):
    """A job that ends without its report (here an interpreter that runs nothing: exit 0, no Pipes messages)
    fails the run, saying so, launches once, and records no partition."""
    from recsys_assets.defs import data_prep
    from recsys_assets.defs.pipes_engine import PipesSparkEngine, SubprocessLauncher

    resources = tiny_resources(tmp_path)
    resources["prep_engine"] = PipesSparkEngine(launcher=SubprocessLauncher(python="true"))
    run = dg.materialize(
        tiny_assets(data_prep),
        selection=["video_catalog"],
        partition_key=DAY,
        resources=resources,
        raise_on_error=False,
    )
    assert not run.success
    [failure] = run.get_step_failure_events()  # no retry of a launched job by the IO retry policy
    assert "ended without reporting its result" in failure.event_specific_data.error.message
    assert not (tmp_path / "assets" / "video_catalog").exists()
