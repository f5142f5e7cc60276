"""Reading the real sources the seeds name: ``Daily-Snapshot`` parquet folders and the ``josh-meta/video``
Delta table."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlparse

import polars as pl

from ..storage import open_store, read_parquet


class SnapshotNotFoundError(FileNotFoundError):
    pass


def snapshot_url(url_template: str, day: dt.date) -> str:
    """``url_template`` names the day with ``{date}`` (YYYY-MM-DD) or ``{yyyymmdd}``."""
    if "{date}" not in url_template and "{yyyymmdd}" not in url_template:
        raise ValueError(f"snapshot URL template {url_template!r} must contain {{date}} or {{yyyymmdd}}")
    return url_template.format(date=day.isoformat(), yyyymmdd=day.strftime("%Y%m%d"))


def read_snapshot(url_template: str, day: dt.date, **s3_options) -> pl.DataFrame:
    """Every ``*.parquet`` object under the day's folder, concatenated (columns may differ in order)."""
    url = snapshot_url(url_template, day)
    store = open_store(url.rstrip("/"), **s3_options)
    keys = [k for k in store.list("") if k.endswith(".parquet")]
    if not keys:
        raise SnapshotNotFoundError(f"no snapshot parquet files for {day} under {url}")
    frames = [read_parquet(store, k) for k in keys]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def delta_storage_options(
    endpoint_url: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    region_name: str | None = None,
) -> dict[str, str]:
    opts = {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": aws_secret_access_key,
        "AWS_REGION": region_name,
    }
    out = {k: v for k, v in opts.items() if v}
    if endpoint_url and urlparse(endpoint_url).scheme == "http":
        out["AWS_ALLOW_HTTP"] = "true"
    return out


def read_catalog(table_uri: str, version: int | None = None, **s3_options) -> pl.DataFrame:
    """The video catalog Delta table (optionally a past ``version``: Delta time travel)."""
    opts = delta_storage_options(**s3_options) if table_uri.startswith("s3://") else None
    return pl.read_delta(table_uri, version=version, storage_options=opts)
