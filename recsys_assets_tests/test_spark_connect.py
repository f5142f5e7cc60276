"""The data-preparation assets through Spark Connect: a real Connect server started from pyspark's own
distribution on 127.0.0.1 (``sbin/start-connect-server.sh``, the spark-connect jar in the wheel), the assets
configured only by ``RECSYS_SPARK_REMOTE``; their outputs equal the polars engine's."""

import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import pyspark
import pytest

from recsys_assets.defs import data_prep
from recsys_assets.storage import LocalStore, read_manifest

from .conftest import free_port, tiny_assets, tiny_resources
from .test_spark_engine import PREP, _stored, _verdicts, needs_java


@pytest.fixture(scope="module")
def spark_connect(tmp_path_factory):
    home = Path(pyspark.__file__).parent
    scratch = tmp_path_factory.mktemp("connect")
    port = free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOG_DIR": str(scratch / "logs"),
        "SPARK_PID_DIR": str(scratch / "pids"),
        "SPARK_IDENT_STRING": f"recsys-test-{port}",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    start = [
        "bash",
        str(home / "sbin" / "start-connect-server.sh"),
        "--master",
        "local[2]",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.sql.shuffle.partitions=2",
        "--conf",
        "spark.ui.enabled=false",
    ]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    import socket

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        logs = "\n".join(p.read_text()[-3000:] for p in (scratch / "logs").glob("*.out"))
        subprocess.run(["bash", str(home / "sbin" / "stop-connect-server.sh")], env=env, timeout=120)
        pytest.fail(f"the Spark Connect server did not listen on 127.0.0.1:{port} within 120 s:\n{logs}")
    url = f"sc://127.0.0.1:{port}"
    yield url
    # release the client's session while the server is up (else the client retries against a stopped server)
    from pyspark.sql import SparkSession

    SparkSession.builder.remote(url).getOrCreate().stop()
    # pyspark has now marked this process Connect-only (SPARK_CONNECT_MODE_ENABLED); the classic sessions of
    # test_spark_engine, collected after this module, check that prepare_mode clears it
    subprocess.run(["bash", str(home / "sbin" / "stop-connect-server.sh")], env=env, capture_output=True, timeout=120)


@needs_java
def test_data_prep_through_spark_connect_equals_polars(spark_connect, tmp_path_factory):
    assets = [a for a in tiny_assets(data_prep) if a.keys & {dg.AssetKey(k) for k in PREP}]
    platform = {"RECSYS_SIM_ROOT": str(tmp_path_factory.mktemp("platform"))}
    day = "2026-11-02"
    roots, results = {}, {}
    for engine, extra in (
        ("polars", {}),
        ("connect", {"RECSYS_ENGINE": "spark", "RECSYS_SPARK_REMOTE": spark_connect}),
    ):
        roots[engine] = tmp_path_factory.mktemp(engine)
        resources = tiny_resources(roots[engine], **platform, **extra)
        results[engine] = dg.materialize(
            assets, partition_key=day, resources=resources, instance=dg.DagsterInstance.ephemeral()
        )
        assert results[engine].success
    assert _verdicts(results["connect"]) == _verdicts(results["polars"])
    md = results["connect"].asset_materializations_for_node("item_pairs")[0].metadata
    assert md["engine"].value == f"spark ({spark_connect})"
    store = LocalStore(roots["connect"] / "assets")
    for key in PREP:
        assert read_manifest(store, f"{key}/{day}.parquet")["written_by"] == "spark", key
        assert _stored(roots["connect"], key, day).equals(_stored(roots["polars"], key, day)), key
