import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import typing
from pathlib import Path

import polars as pl
import pytest
import requests

from recsys_assets.defs.partitions import daily_partitions
from recsys_assets.simulator.platform import Platform

REPO = Path(__file__).resolve().parents[1]
DAEMON_SITE = Path(__file__).resolve().parent / "daemon_site"  # sitecustomize for the dagster dev tests
DAY = dt.date(2026, 11, 2)
PARTITIONS = daily_partitions("2026-11-01")
"""The partitions the test assets are built for (the simulator's profiles start on 2026-11-01)."""


def tiny_env(root: Path, **extra: str) -> dict[str, str]:
    """The settings of a tiny simulated deployment whose data all lives under ``root``."""
    return {
        "RECSYS_DATA_DIR": str(root),
        "RECSYS_SIM_PROFILE": "tiny",
        "RECSYS_SIM_SEED": "3",
        "RECSYS_DEVICE": "cpu",
        "RECSYS_ALS_THREADS": "1",
        **extra,
    }


def tiny_resources(root: Path, **extra: str) -> dict[str, typing.Any]:
    """The resources of that deployment, built the way the code location builds them
    (``build_resources``); only the frames per video are fewer, to keep the tests fast."""
    from recsys_assets.definitions import build_resources

    resources = build_resources(tiny_env(root, **extra))
    resources["content_models"] = resources["content_models"].model_copy(update={"n_frames": 4})
    return resources


def tiny_assets(*stages: typing.Any) -> list:
    """The daily assets of the given ``defs`` stage modules, for :data:`PARTITIONS`."""
    return [a for stage in stages for a in stage.build_assets(PARTITIONS)]


SERVER_FIXTURES = {"moto_server", "s3_env", "http_base", "dagster_dev", "spark_connect"}
"""Fixtures that start a server (moto's S3 API, a loopback HTTP server, ``dagster dev``): tests using them
are ``slow``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_platform() -> Platform:
    return Platform("tiny", seed=3)


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 API over HTTP on loopback (moto's threaded server)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    """Credentials and endpoint for the moto server, plus a fresh bucket; returns (endpoint, bucket, client)."""
    import uuid

    import boto3

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "RECSYS_S3_ENDPOINT_URL": moto_server,
    }.items():
        monkeypatch.setenv(k, v)
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return moto_server, bucket, client


def interactions(rows: list[dict], **defaults) -> pl.DataFrame:
    """A typed interaction frame from short row dicts (defaults fill the rest)."""
    base = {
        "client_id": 1,
        "session_id": 10,
        "item_id": 100,
        "event_ts": dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.timezone.utc),
        "timespent_s": 20.0,
        "pcc": 0.5,
        "liked": False,
    }
    base.update(defaults)
    full = []
    for i, r in enumerate(rows):
        row = {**base, **r}
        if "event_ts" not in r:
            row["event_ts"] = base["event_ts"] + dt.timedelta(seconds=i)
        full.append(row)
    return pl.DataFrame(
        full,
        schema={
            "client_id": pl.Int64,
            "session_id": pl.Int64,
            "item_id": pl.Int64,
            "event_ts": pl.Datetime("us", "UTC"),
            "timespent_s": pl.Float64,
            "pcc": pl.Float64,
            "liked": pl.Boolean,
        },
    )


@contextlib.contextmanager
def run_dagster_dev(tmp_path: Path, **extra_env: str) -> typing.Iterator[tuple[str, Path, Path]]:
    """``dagster dev -w workspace.yaml`` (webserver and daemons) on the tiny simulator, with the shipped
    ``dagster.yaml`` and ``extra_env``; yields ``(url, DAGSTER_HOME, tmp_path)``, stops it on exit."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "recsys_assets" / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RECSYS_DATA_DIR": str(tmp_path / "data"),
        "RECSYS_SIM_PROFILE": "tiny",
        "RECSYS_SIM_SEED": "3",
        # the backfill daemon's pause between iterations: 3 s instead of Dagster's fixed 30 s (daemon_site/)
        "PYTHONPATH": os.pathsep.join(p for p in (str(DAEMON_SITE), os.environ.get("PYTHONPATH")) if p),
        "RECSYS_TEST_DAEMON_INTERVAL_S": "3",
        **extra_env,
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
        kill_processes_of(home)


def kill_processes_of(home: Path) -> None:
    """SIGKILL every process left with ``DAGSTER_HOME=home``: dagster dev starts its code server in a session
    of its own, and a run still in flight when dagster dev stops keeps it alive (a failed test once left one
    running for the rest of the suite)."""
    marker = f"DAGSTER_HOME={home}".encode()
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc_dir.name) != os.getpid() and marker in (proc_dir / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc_dir.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue  # gone already, or not ours to read


@pytest.fixture
def dagster_dev(tmp_path):
    """:func:`run_dagster_dev` with the default (polars) engine."""
    with run_dagster_dev(tmp_path) as served:
        yield served
