"""The data-preparation and collaborative assets through Spark Connect: a real Connect server started from
pyspark's own distribution on 127.0.0.1 (``sbin/start-connect-server.sh``, the spark-connect jar in the wheel),
the assets configured only by ``RECSYS_SPARK_REMOTE``; their outputs equal the polars engine's, and MLlib's
factors are evaluated on the server as in process."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyspark
import pytest

from recsys_assets.defs import data_prep
from recsys_assets.storage import LocalStore, read_manifest

from .conftest import free_port, tiny_assets, tiny_resources
from .test_spark_engine import PREP, _stored, _verdicts, assert_evaluation_engines_agree, needs_java


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
        # the server's Python workers (als_evaluation's ranking) import this package: this interpreter's
        "PYSPARK_PYTHON": sys.executable,
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
        # MLlib ALS's checkpoints: a server setting (a Connect client cannot set it), as on a cluster
        "--conf",
        f"spark.checkpoint.dir={scratch / 'checkpoints'}",
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


@needs_java
def test_mllib_als_and_its_evaluation_through_spark_connect(spark_connect, tmp_path_factory):
    """The collaborative assets with only ``RECSYS_SPARK_REMOTE`` set: MLlib's ALS fits on the Connect server and
    its factors are stored by the server's executors as polars' fixed-size vectors; ``als_evaluation`` ranks on
    the server's Python workers and gives the table that the in-process evaluation gives from the same factors."""
    import polars as pl

    from recsys_assets.defs import collaborative

    assets = tiny_assets(data_prep, collaborative)
    platform = {"RECSYS_SIM_ROOT": str(tmp_path_factory.mktemp("platform"))}
    root = tmp_path_factory.mktemp("connect-als")
    connect = {"RECSYS_ENGINE": "spark", "RECSYS_SPARK_REMOTE": spark_connect}
    model_day, next_day = "2026-11-02", "2026-11-03"
    for day, selection in ((model_day, list(PREP)), (next_day, ["raw_interactions", "filtered_interactions"])):
        stored = dg.materialize(  # by polars: the Connect server reads what polars wrote
            assets,
            selection=selection + (["raw_interactions_quarantine"] if day == next_day else []),
            partition_key=day,
            resources=tiny_resources(root, **platform),
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert stored.success
    config = {"ops": {"als_factors": {"config": {"min_cells_per_language": 50, "iterations": 2}}}}
    als = dg.materialize(
        assets,
        selection=["als_factors", "als_user_factors"],
        partition_key=model_day,
        resources=tiny_resources(root, **platform, **connect),
        instance=dg.DagsterInstance.ephemeral(),
        run_config=config,
    )
    assert als.success
    assert als.asset_materializations_for_node("als_factors")[0].metadata["engine"].value == "mllib"
    store = LocalStore(root / "assets")
    assert read_manifest(store, f"als_factors/{model_day}.parquet")["written_by"] == "spark"
    factors = _stored(root, "als_factors", model_day)
    assert factors.schema["vector"] == pl.Array(pl.Float32, 16) and factors.height > 0
    assert_evaluation_engines_agree(assets, root, platform, connect, next_day, model_day)
