"""Object storage behind the IO managers and sources: a local folder or an S3 prefix.

Both write atomically per object: readers see the previous version or the new one, never a torn
file. Locally a write goes to a unique temp file in the target folder and is renamed over the
target (``os.replace`` is atomic on POSIX), so concurrent writers of different partitions never
touch each other's files and a killed writer leaves only a temp file behind. On S3 a PUT (and a
completed multipart upload) is atomic by the service's contract, so the object is uploaded
directly.

A partition is one parquet object (``{key}``, written by polars) or a set of part files written by a
distributed engine (Spark) under ``{key}.parts/{version}/`` and published by a small manifest,
``{key}.manifest.json``, listing them. Publishing the manifest is the atomic switch: a reader that finds a
manifest reads its parts, otherwise the single object. :func:`write_parquet` removes a manifest after its
object is in place (and :func:`commit_parts` removes the single object after its manifest is), so every
reader sees one complete version. Both layouts are read by :func:`scan_parquet` / :func:`read_parquet` and
listed for other engines by :func:`partition_sources`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import typing
import uuid
from pathlib import Path
from time import time_ns
from typing import Protocol
from urllib.parse import urlparse

import polars as pl


class ObjectStore(Protocol):
    url: str

    def join(self, *parts: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def read_bytes(self, key: str) -> bytes: ...
    def write_file(self, key: str, local_path: str) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    def version(self, key: str) -> str | None: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...


class LocalStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def join(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in parts if p)

    def path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root != p and self.root not in p.parents:
            raise ValueError(f"key {key!r} escapes the store root {self.root}")
        return p

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def _tmp(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        tmp = self._tmp(target)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def write_file(self, key: str, local_path: str) -> None:
        target = self.path(key)
        if Path(local_path).parent == target.parent:
            os.replace(local_path, target)
            return
        tmp = self._tmp(target)
        try:
            import shutil

            shutil.copyfile(local_path, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove the folder ``prefix`` and all it holds, the dot files :meth:`list` does not show included
        (a writer's temp files, Hadoop's ``.crc`` checksums); never the store's root."""
        base = self.path(prefix)
        if base == self.root:
            raise ValueError(f"refusing to delete the whole store {self.root}")
        if base.is_dir():
            shutil.rmtree(base)
        else:
            base.unlink(missing_ok=True)

    def version(self, key: str) -> str | None:
        """What changes when the object is rewritten (size and modification time); None if absent."""
        try:
            st = self.path(key).stat()
        except FileNotFoundError:
            return None
        return f"{st.st_size}-{st.st_mtime_ns}"

    def temp_path_for(self, key: str) -> str:
        """A temp file beside ``key``'s target, so that :meth:`write_file` can rename it into place."""
        return str(self._tmp(self.path(key)))


class S3Store:
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        region_name: str | None = None,
        aws_session_token: str | None = None,
        client: typing.Any = None,
    ):
        """``client``: the boto3 S3 client to use (the deployment's dagster-aws ``S3Resource.get_client()``);
        without one, a client is built from the same options. The options also go to polars' own reader."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3:// URL: {url!r}")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = url.rstrip("/")
        self._polars_options = {
            k: v
            for k, v in {
                "aws_endpoint_url": endpoint_url or None,
                "aws_access_key_id": aws_access_key_id or None,
                "aws_secret_access_key": aws_secret_access_key or None,
                "aws_region": region_name or None,
                "aws_session_token": aws_session_token or None,
                "aws_allow_http": "true" if (endpoint_url or "").startswith("http://") else None,
            }.items()
            if v is not None
        }
        if client is None:
            import boto3

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                aws_access_key_id=aws_access_key_id or None,
                aws_secret_access_key=aws_secret_access_key or None,
                aws_session_token=aws_session_token or None,
                region_name=region_name or None,
            )
        self.client = client

    def join(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in parts if p)

    def _key(self, key: str) -> str:
        if ".." in key.split("/"):
            raise ValueError(f"key {key!r} escapes the store prefix")
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def write_file(self, key: str, local_path: str) -> None:
        try:
            self.client.upload_file(local_path, self.bucket, self._key(key))
        finally:
            Path(local_path).unlink(missing_ok=True)

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"{self.url}/{key}") from e
            raise

    def list(self, prefix: str) -> list[str]:
        out: list[str] = []
        base = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
            out += [o["Key"][strip:] for o in page.get("Contents", [])]
        return sorted(out)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under the folder ``prefix`` (S3 lists dot files too); never the store's root."""
        if not prefix.strip("/"):
            raise ValueError(f"refusing to delete the whole store {self.url}")
        folder = prefix.rstrip("/") + "/"
        for key in self.list(folder):
            self.delete(key)

    def object_url(self, key: str) -> str:
        """``s3://bucket/prefix/key``: what polars' own S3 reader (object_store, ranged GETs) opens."""
        return f"s3://{self.bucket}/{self._key(key)}"

    def polars_options(self) -> dict[str, str]:
        """The same endpoint and credentials as this store's boto3 client, as polars ``storage_options``
        (absent ones fall back to the environment's AWS credential chain, as boto3 does)."""
        return dict(self._polars_options)

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except ClientError:
            return None

    def version(self, key: str) -> str | None:
        """The object's ETag and last-modified time (a rewrite changes them); None if absent."""
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return f"{head['ETag'].strip(chr(34))}-{head['LastModified'].timestamp():.0f}"

    def temp_path_for(self, key: str) -> str:
        fd, tmp = tempfile.mkstemp(suffix=".tmp")
        os.close(fd)
        return tmp


def open_store(url: str, **s3_options) -> ObjectStore:
    """``s3://bucket/prefix`` -> :class:`S3Store`; a path or ``file://`` URL -> :class:`LocalStore`."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return S3Store(url, **s3_options)
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # a plain path (or a Windows drive letter)
        return LocalStore(url)
    raise ValueError(f"unsupported storage URL {url!r}: use a local path, file:// or s3://")


PARQUET_ZSTD_LEVEL = 1
"""Every stored table is zstd-compressed at this level, whoever writes it (polars here, Spark in
``spark.io``): faster than zstd's default 3 for somewhat larger files (the bench day on Spark: phase 3 written in
36.1-38.2 s against 38.4-40.7 s, 131 against 132 MB; phase 1 in 19.4-20.8 s against 20.2-22.3 s, 208 against
182 MB; benchmarks/README.md)."""

ROW_GROUP_BYTES = 64 * 1024 * 1024
"""Target in-memory size of one parquet row group: a reader that streams a large partition (or scans it with
a predicate) holds about one group of the columns it reads at a time."""


def rows_per_group(df: pl.DataFrame, target_bytes: int = ROW_GROUP_BYTES) -> int:
    """Rows of ``df`` per row group so that a group holds about ``target_bytes`` (at least 1 024 rows)."""
    per_row = df.estimated_size() / max(df.height, 1)
    return max(1024, int(target_bytes / max(per_row, 1.0)))


STREAMED_ROW_GROUP_ROWS = 262_144
"""At most this many rows per row group when a lazy frame is streamed to parquet; fewer for wide rows
(:func:`streamed_rows_per_group`)."""


def _dtype_bytes(dtype: pl.DataType) -> int:
    """Bytes one value of ``dtype`` takes in memory (strings and nested lists: a guess of 32)."""
    if isinstance(dtype, pl.Array):
        return dtype.size * _dtype_bytes(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return sum(_dtype_bytes(f.dtype) for f in dtype.fields)
    for types, size in (
        ((pl.Boolean, pl.Int8, pl.UInt8), 1),
        ((pl.Int16, pl.UInt16, pl.Float16), 2),
        ((pl.Int32, pl.UInt32, pl.Float32, pl.Date), 4),
    ):
        if any(dtype == t for t in types):
            return size
    if dtype.is_numeric() or dtype.is_temporal():
        return 8
    return 32


def streamed_rows_per_group(schema: pl.Schema, target_bytes: int = ROW_GROUP_BYTES) -> int:
    """Rows per row group for a streamed write of ``schema``: about ``target_bytes`` of it in memory. A day of
    per-frame vectors (8 x 512 float16 a row) gets ~8 k rows a group, not 262 k (2 GiB a group, buffered by
    the writer)."""
    per_row = sum(_dtype_bytes(t) for t in schema.values())
    return int(min(STREAMED_ROW_GROUP_ROWS, max(1024, target_bytes // max(per_row, 1))))


def write_parquet(
    store: ObjectStore, key: str, df: pl.DataFrame | pl.LazyFrame, row_group_bytes: int = ROW_GROUP_BYTES
) -> int:
    """Write ``df`` as one parquet object, atomically, in row groups of about ``row_group_bytes`` with column
    statistics (so scans can skip groups by predicate). A ``LazyFrame`` is streamed (``sink_parquet``): it
    never exists in memory whole. Returns the object's size in bytes."""
    tmp = store.temp_path_for(key)
    try:
        if isinstance(df, pl.LazyFrame):
            df.sink_parquet(
                tmp,
                compression="zstd",
                compression_level=PARQUET_ZSTD_LEVEL,
                statistics=True,
                row_group_size=streamed_rows_per_group(df.collect_schema(), row_group_bytes),
            )
            size = os.path.getsize(tmp)
            store.write_file(key, tmp)
            _retire_parts(store, key)
            return size
        df.write_parquet(
            tmp,
            compression="zstd",
            compression_level=PARQUET_ZSTD_LEVEL,
            statistics=True,
            row_group_size=rows_per_group(df, row_group_bytes),
        )
        size = os.path.getsize(tmp)
        store.write_file(key, tmp)
        _retire_parts(store, key)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return size


MANIFEST_SUFFIX = ".manifest.json"
PARTS_SUFFIX = ".parts"


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


def parts_prefix(key: str, version: str) -> str:
    """Where a distributed writer puts the part files of one version of ``key``'s partition."""
    if not version or "/" in version or version.startswith((".", "_")):
        raise ValueError(f"bad parts version {version!r}")
    return f"{key}{PARTS_SUFFIX}/{version}"


def new_parts_version() -> str:
    return f"v{time_ns()}-{uuid.uuid4().hex[:8]}"


def read_manifest(store: ObjectStore, key: str) -> dict | None:
    """The manifest of ``key``'s partition, or None when it is a single object (or absent)."""
    try:
        raw = store.read_bytes(manifest_key(key))
    except FileNotFoundError:
        return None
    manifest = json.loads(raw)
    files = manifest.get("files")
    prefix = f"{key}{PARTS_SUFFIX}/"
    if not isinstance(files, list) or not all(isinstance(f, str) and f.startswith(prefix) for f in files):
        raise ValueError(f"{store.url}/{manifest_key(key)} is not a parts manifest of {key}")
    return manifest


def commit_parts(
    store: ObjectStore, key: str, version: str, rows: int, written_by: str, fixed_size: dict[str, int] | None = None
) -> dict:
    """Publish the part files a distributed writer put under ``parts_prefix(key, version)`` as ``key``'s
    partition: list them (writers' leftovers -- ``_SUCCESS``, ``.crc``, ``_temporary/`` -- are not data), write
    the manifest (the atomic switch), then remove the previous version (a single object or other parts).
    ``fixed_size``: list columns of a fixed length (Spark has no fixed-size array type): readers get polars'
    ``Array`` of that length, as a polars writer would have stored them."""
    prefix = parts_prefix(key, version)
    files = [
        k
        for k in store.list(prefix)
        if k.endswith(".parquet") and not any(p.startswith(("_", ".")) for p in k[len(prefix) + 1 :].split("/"))
    ]
    if not files:
        raise FileNotFoundError(f"no part files under {store.url}/{prefix}: nothing to publish")
    manifest = {
        "format": "parquet-parts",
        "version": version,
        "files": files,
        "rows": int(rows),
        "written_by": written_by,
        "fixed_size": dict(fixed_size or {}),
    }
    store.write_bytes(manifest_key(key), json.dumps(manifest, indent=1).encode())
    if store.exists(key):
        store.delete(key)
    # earlier versions go whole, writers' leftovers with them (a local Spark write leaves a .crc per part)
    folder = f"{key}{PARTS_SUFFIX}/"
    earlier: set[str] = set()
    for k in store.list(folder):
        name, sep, _ = k[len(folder) :].partition("/")
        if not sep:
            store.delete(k)  # a stray file beside the version folders
        elif name not in (version, "", ".", ".."):
            earlier.add(name)
    for name in sorted(earlier):
        store.delete_prefix(folder + name)
    return manifest


def _retire_parts(store: ObjectStore, key: str) -> None:
    """After a single object was written at ``key``: drop a manifest (so readers switch to it) and its parts."""
    if store.exists(manifest_key(key)):
        store.delete(manifest_key(key))
        store.delete_prefix(f"{key}{PARTS_SUFFIX}")


class ParquetReadError(ValueError):
    """A file that should be parquet cannot be read as parquet; the message names it."""


def source_url(store: ObjectStore, key: str) -> str:
    """Where engines open ``key``: a local path, or ``s3://bucket/prefix/key``."""
    if isinstance(store, LocalStore):
        return str(store.path(key))
    if isinstance(store, S3Store):
        return store.object_url(key)
    raise TypeError(f"no parquet reader for {type(store).__name__}")


def partition_sources(store: ObjectStore, key: str) -> list[str]:
    """The parquet files that hold ``key``'s partition -- the single object, or the parts its manifest lists
    -- as local paths or ``s3://`` URLs (what polars, Spark or any other engine opens). FileNotFoundError if
    the partition was never written."""
    manifest = read_manifest(store, key)
    if manifest is not None:
        return [source_url(store, f) for f in manifest["files"]]
    if not store.exists(key):
        raise FileNotFoundError(f"{store.url}/{key}")
    return [source_url(store, key)]


def storage_options(store: ObjectStore) -> dict[str, str]:
    return store.polars_options() if isinstance(store, S3Store) else {}


@dataclasses.dataclass(frozen=True)
class TableRef:
    """Stored partitions of a table, not yet read: what an engine that reads files itself (Spark) is handed
    instead of the rows. ``scan()`` gives polars' lazy scan of the same partitions."""

    store: ObjectStore
    keys: tuple[str, ...]
    columns: typing.Optional[tuple[str, ...]] = None

    def sources(self) -> list[str]:
        return [u for k in self.keys for u in partition_sources(self.store, k)]

    def scan(self) -> pl.LazyFrame:
        lf = pl.concat([scan_parquet(self.store, k) for k in self.keys], how="diagonal_relaxed")
        return lf.select(list(self.columns)) if self.columns is not None else lf


@dataclasses.dataclass(frozen=True, eq=False)
class StoredPartition:
    """A partition that another process already wrote and published with a manifest (a Spark job launched
    through Dagster Pipes): the IO manager checks that it is the manifest version the job reported, at the
    key the IO manager itself would use, and writes nothing."""

    store_url: str
    key: str
    version: str
    rows: int
    schema: tuple[tuple[str, str], ...]
    """(column, polars dtype) pairs, as the job saw them."""
    preview: pl.DataFrame
    launch: tuple[tuple[str, str], ...] = ()
    """What the launcher reported about the job (EMR application and job run ids), for the asset's metadata."""


def verify_stored(store: ObjectStore, key: str, stored: StoredPartition) -> dict:
    """The manifest of ``stored`` if it is what ``store``/``key`` now holds; else a ``ValueError`` saying what
    differs (a job that wrote elsewhere, or a newer write that replaced it)."""
    if stored.store_url.rstrip("/") != store.url.rstrip("/") or stored.key != key:
        raise ValueError(
            f"the job wrote {stored.store_url}/{stored.key}, but this partition is stored at {store.url}/{key}: "
            "the job and the IO manager must use the same storage"
        )
    manifest = read_manifest(store, key)
    if manifest is None or manifest.get("version") != stored.version:
        found = manifest.get("version") if manifest else "no manifest"
        raise ValueError(f"{store.url}/{key}: the job reported version {stored.version}, the store holds {found}")
    return manifest


def scan_parquet(store: ObjectStore, key: str) -> pl.LazyFrame:
    """A lazy scan of one partition (one object or a manifest's parts): columns the query selects and row
    groups its predicate rules out are never read (locally: never paged in; on S3: never fetched -- ranged GETs
    of the needed column chunks). A missing partition raises ``FileNotFoundError`` now; an unreadable one fails
    when collected."""
    manifest = read_manifest(store, key)
    sources = [source_url(store, f) for f in manifest["files"]] if manifest else partition_sources(store, key)
    scan = pl.scan_parquet(sources, storage_options=storage_options(store) or None)
    fixed = (manifest or {}).get("fixed_size") or {}
    if fixed:
        schema = scan.collect_schema()
        scan = scan.with_columns(
            pl.col(c).list.to_array(n) for c, n in fixed.items() if isinstance(schema.get(c), pl.List)
        )
    return scan


def read_parquet(store: ObjectStore, key: str, columns: typing.Sequence[str] | None = None) -> pl.DataFrame:
    """One parquet object, or only ``columns`` of it (the others are not read). A missing object raises
    ``FileNotFoundError``; an unreadable one (0 bytes, truncated, not parquet) :class:`ParquetReadError` naming
    the object and its size; a column it does not have, ``KeyError`` naming the ones it has."""
    scan = scan_parquet(store, key)
    try:
        if columns is not None:
            have = scan.collect_schema().names()
            absent = [c for c in columns if c not in have]
            if absent:
                raise KeyError(f"{store.url}/{key} has no column(s) {absent}; it has {have}")
            scan = scan.select(list(columns))
        return scan.collect()
    except (pl.exceptions.PolarsError, OSError) as e:
        try:
            size = store.path(key).stat().st_size if isinstance(store, LocalStore) else store.size(key)
        except OSError:
            size = None  # a manifest's parts
        raise ParquetReadError(
            f"{store.url}/{key} ({size} bytes) is not a readable parquet file: {type(e).__name__}: {e}. "
            "Expected a complete parquet file (a partial or foreign file in the data folder?)"
        ) from e
