import datetime as dt
import socket

import polars as pl
import pytest

from recsys_assets.simulator.platform import Platform

DAY = dt.date(2026, 11, 2)


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
