"""Object storage behind the IO managers and sources: a local folder or an S3 prefix.

Both write atomically per object: readers see the previous version or the new one, never a torn
file. Locally a write goes to a unique temp file in the target folder and is renamed over the
target (``os.replace`` is atomic on POSIX), so concurrent writers of different partitions never
touch each other's files and a killed writer leaves only a temp file behind. On S3 a PUT (and a
completed multipart upload) is atomic by the service's contract, so the object is uploaded
directly.
"""

from __future__ import annotations

import os
import tempfile
import typing
import uuid
from pathlib import Path
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
    ):
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
                "aws_allow_http": "true" if (endpoint_url or "").startswith("http://") else None,
            }.items()
            if v is not None
        }
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            aws_access_key_id=aws_access_key_id or None,
            aws_secret_access_key=aws_secret_access_key or None,
            region_name=region_name or None,
        )

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


ROW_GROUP_BYTES = 64 * 1024 * 1024
"""Target in-memory size of one parquet row group: a reader that streams a large partition (or scans it with
a predicate) holds about one group of the columns it reads at a time."""


def rows_per_group(df: pl.DataFrame, target_bytes: int = ROW_GROUP_BYTES) -> int:
    """Rows of ``df`` per row group so that a group holds about ``target_bytes`` (at least 1 024 rows)."""
    per_row = df.estimated_size() / max(df.height, 1)
    return max(1024, int(target_bytes / max(per_row, 1.0)))


STREAMED_ROW_GROUP_ROWS = 262_144
"""Rows per row group when a lazy frame is streamed to parquet (its size per row is not known up front)."""


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
                compression_level=1,
                statistics=True,
                row_group_size=STREAMED_ROW_GROUP_ROWS,
            )
            size = os.path.getsize(tmp)
            store.write_file(key, tmp)
            return size
        df.write_parquet(
            tmp,
            compression="zstd",
            compression_level=1,
            statistics=True,
            row_group_size=rows_per_group(df, row_group_bytes),
        )
        size = os.path.getsize(tmp)
        store.write_file(key, tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return size


class ParquetReadError(ValueError):
    """A file that should be parquet cannot be read as parquet; the message names it."""


def _source(store: ObjectStore, key: str) -> tuple[str, dict[str, str]]:
    """Where polars opens ``key`` (a local path, or ``s3://`` with the store's options); FileNotFoundError if absent."""
    if isinstance(store, LocalStore):
        path = store.path(key)
        if not path.exists():
            raise FileNotFoundError(str(path))
        return str(path), {}
    if isinstance(store, S3Store):
        if not store.exists(key):
            raise FileNotFoundError(f"{store.url}/{key}")
        return store.object_url(key), store.polars_options()
    raise TypeError(f"no parquet reader for {type(store).__name__}")


def scan_parquet(store: ObjectStore, key: str) -> pl.LazyFrame:
    """A lazy scan of one parquet object: columns the query selects and row groups its predicate rules out
    are never read (locally: never paged in; on S3: never fetched -- ranged GETs of the needed column chunks).
    A missing object raises ``FileNotFoundError`` now; an unreadable one fails when collected."""
    source, options = _source(store, key)
    return pl.scan_parquet(source, storage_options=options or None)


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
        size = store.path(key).stat().st_size if isinstance(store, LocalStore) else store.size(key)
        raise ParquetReadError(
            f"{store.url}/{key} ({size} bytes) is not a readable parquet file: {type(e).__name__}: {e}. "
            "Expected a complete parquet file (a partial or foreign file in the data folder?)"
        ) from e
