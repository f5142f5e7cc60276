"""Spark reads and writes the same storage layout as the polars IO manager (see :mod:`recsys_assets.storage`).

* Reading: :func:`read_partitions` opens the files of stored partitions -- a polars-written object or a
  Spark-written manifest's parts -- with ``spark.read.parquet``; the driver lists files, never reads rows.
* Writing: :func:`write_partition` has the executors write the part files under ``{key}.parts/{version}/``,
  then publishes them with the manifest (:func:`recsys_assets.storage.commit_parts`): a failed or killed write
  leaves the previous version in place. The row count for the manifest comes from the parts' parquet footers.
"""

from __future__ import annotations

import typing

import polars as pl

from ..storage import (
    PARQUET_ZSTD_LEVEL,
    ObjectStore,
    commit_parts,
    new_parts_version,
    partition_sources,
    parts_prefix,
    source_url,
    storage_options,
)
from .session import spark_path


def read_files(spark, urls: typing.Sequence[str], scheme_map: typing.Mapping[str, str]):
    """``spark.read.parquet`` of storage URLs; columns are matched by name across files (``mergeSchema``)."""
    if not urls:
        raise FileNotFoundError("no parquet files to read")
    return spark.read.option("mergeSchema", "true").parquet(*[spark_path(u, scheme_map) for u in urls])


def read_partitions(spark, store: ObjectStore, keys: typing.Sequence[str], scheme_map: typing.Mapping[str, str]):
    """The stored partitions ``keys`` (each one object or a manifest's parts) as one Spark DataFrame."""
    urls = [u for k in keys for u in partition_sources(store, k)]
    return read_files(spark, urls, scheme_map)


def write_partition(df, store: ObjectStore, key: str, scheme_map: typing.Mapping[str, str]) -> dict:
    """Have Spark write ``df`` as ``key``'s partition (parts + manifest); return the manifest."""
    version = new_parts_version()
    prefix = parts_prefix(key, version)
    (
        df.write.mode("error")
        .option("compression", "zstd")
        .option("parquet.compression.codec.zstd.level", str(PARQUET_ZSTD_LEVEL))  # polars' level (storage)
        .parquet(spark_path(source_url(store, prefix), scheme_map))
    )
    files = [k for k in store.list(prefix) if k.endswith(".parquet") and "/_" not in k and "/." not in k]
    rows = 0
    if files:
        rows = int(
            pl.scan_parquet([source_url(store, f) for f in files], storage_options=storage_options(store) or None)
            .select(pl.len())
            .collect()
            .item()
        )
    fixed = {f.name: int(f.metadata["fixed_size"]) for f in df.schema.fields if "fixed_size" in (f.metadata or {})}
    return commit_parts(store, key, version, rows, written_by="spark", fixed_size=fixed)
