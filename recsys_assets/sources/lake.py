"""Reading the real sources the seeds name: ``Daily-Snapshot`` parquet folders and the ``josh-meta/video``
Delta table."""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import re
from urllib.parse import urlparse

import polars as pl

from ..storage import open_store, read_parquet, source_url


class SnapshotNotFoundError(FileNotFoundError):
    pass


class CatalogReadError(ValueError):
    """The Delta catalog cannot be read; the message names the table (and version)."""


_GLOB = re.compile(r"[*?\[]")


def is_writer_leftover(relative_key: str) -> bool:
    """Files that writers leave beside the data and that are never data: anything under or named with a
    leading ``_`` or ``.`` (``_temporary/``, ``_SUCCESS``, ``_committed_*``, ``.part-0.parquet.crc``), and
    checksum files -- the convention of Hadoop, Spark and Delta."""
    parts = relative_key.split("/")
    return any(p.startswith(("_", ".")) for p in parts) or relative_key.endswith(".crc")


def snapshot_keys(url: str, **s3_options) -> tuple[str, list[str]]:
    """The parquet objects a snapshot URL names: ``(base, [keys under base])``. The URL may name a
    folder (every ``*.parquet`` below it), one ``.parquet`` file, or a glob (``.../part-*.parquet``,
    ``.../*/*.parquet``). Writers' leftovers (:func:`is_writer_leftover`) are never data."""
    parts = url.rstrip("/").split("/")
    first_glob = next((i for i, p in enumerate(parts) if _GLOB.search(p)), None)
    if first_glob is not None:
        base, pattern = "/".join(parts[:first_glob]), "/".join(parts[first_glob:])
        store = open_store(base, **s3_options)
        keys = [k for k in store.list("") if fnmatch.fnmatchcase(k, pattern)]
    elif parts[-1].endswith(".parquet"):
        base = "/".join(parts[:-1])
        store = open_store(base, **s3_options)
        keys = [parts[-1]] if store.exists(parts[-1]) else []
    else:
        base = url.rstrip("/")
        keys = [k for k in open_store(base, **s3_options).list("") if k.endswith(".parquet")]
    return base, sorted(k for k in keys if not is_writer_leftover(k))


SUCCESS_MARKER = "_SUCCESS"
"""Written by the snapshot's writer (Spark, Hadoop, the simulator) after the day's last file: the day is complete."""


def marker_key(url: str) -> tuple[str, str]:
    """``(base, key)`` of the completeness marker of a snapshot URL: ``_SUCCESS`` in the day's folder (the
    folder the URL names, or the one holding its file or glob)."""
    parts = url.rstrip("/").split("/")
    first_glob = next((i for i, p in enumerate(parts) if _GLOB.search(p)), None)
    if first_glob is not None:
        parts = parts[:first_glob]
    elif parts[-1].endswith(".parquet"):
        parts = parts[:-1]
    return "/".join(parts), SUCCESS_MARKER


def snapshot_marker(url_template: str, day: dt.date, **s3_options) -> str | None:
    """The day's ``_SUCCESS`` marker as a fingerprint (object version and content digest), or None while the
    day is incomplete. A re-delivered day rewrites its marker, so its fingerprint changes."""
    base, key = marker_key(snapshot_url(url_template, day))
    store = open_store(base, **s3_options)
    version = store.version(key)
    if version is None:
        return None
    digest = hashlib.sha256(store.read_bytes(key)).hexdigest()[:12]
    return f"{version}-{digest}"


def snapshot_url(url_template: str, day: dt.date) -> str:
    """``url_template`` names the day with ``{date}`` (YYYY-MM-DD) or ``{yyyymmdd}``."""
    if "{date}" not in url_template and "{yyyymmdd}" not in url_template:
        raise ValueError(f"snapshot URL template {url_template!r} must contain {{date}} or {{yyyymmdd}}")
    return url_template.format(date=day.isoformat(), yyyymmdd=day.strftime("%Y%m%d"))


def snapshot_files(url_template: str, day: dt.date, **s3_options) -> list[str]:
    """The day's snapshot files as URLs (local paths or ``s3://``), for an engine that reads them itself;
    the same listing and the same error as :func:`read_snapshot`."""
    url = snapshot_url(url_template, day)
    base, keys = snapshot_keys(url, **s3_options)
    if not keys:
        raise SnapshotNotFoundError(
            f"no snapshot parquet files for {day} at {url} (a folder, a .parquet file or a glob; "
            "files and folders starting with '_' or '.' are writers' leftovers and never read)"
        )
    store = open_store(base, **s3_options)
    return [source_url(store, k) for k in keys]


def read_snapshot(url_template: str, day: dt.date, **s3_options) -> pl.DataFrame:
    """The day's snapshot (see :func:`snapshot_keys` for what the URL may name), concatenated (columns may
    differ in order). An unreadable file fails naming it (``storage.ParquetReadError``)."""
    url = snapshot_url(url_template, day)
    base, keys = snapshot_keys(url, **s3_options)
    if not keys:
        raise SnapshotNotFoundError(
            f"no snapshot parquet files for {day} at {url} (a folder, a .parquet file or a glob; "
            "files and folders starting with '_' or '.' are writers' leftovers and never read)"
        )
    store = open_store(base, **s3_options)
    frames = [read_parquet(store, k) for k in keys]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def delta_storage_options(
    endpoint_url: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    region_name: str | None = None,
    aws_session_token: str | None = None,
) -> dict[str, str]:
    opts = {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": aws_secret_access_key,
        "AWS_REGION": region_name,
        "AWS_SESSION_TOKEN": aws_session_token,
    }
    out = {k: v for k, v in opts.items() if v}
    if endpoint_url and urlparse(endpoint_url).scheme == "http":
        out["AWS_ALLOW_HTTP"] = "true"
    return out


def catalog_version(table_uri: str, **s3_options) -> int | None:
    """The Delta table's current version (its log only, no data read); None if there is no table yet."""
    import deltalake

    opts = delta_storage_options(**s3_options) if table_uri.startswith("s3://") else None
    try:
        return int(deltalake.DeltaTable(table_uri, storage_options=opts).version())
    except deltalake.exceptions.TableNotFoundError:
        return None


def read_catalog(table_uri: str, version: int | None = None, **s3_options) -> pl.DataFrame:
    """The video catalog Delta table (optionally a past ``version``: Delta time travel)."""
    opts = delta_storage_options(**s3_options) if table_uri.startswith("s3://") else None
    try:
        return pl.read_delta(table_uri, version=version, storage_options=opts)
    except Exception as e:  # deltalake and object_store raise many types; all of them mean "cannot read it"
        at = f" at version {version}" if version is not None else ""
        raise CatalogReadError(
            f"cannot read the video catalog Delta table {table_uri}{at}: {type(e).__name__}: {e}. "
            "Expected a Delta table (a folder with _delta_log/) readable with the configured credentials"
        ) from e
