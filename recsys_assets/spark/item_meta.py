"""Spark version of :mod:`recsys_assets.stages.item_meta` (seed 000, phase 2) and of the catalog's
normalisation: the same catalog schema, as-of rule, output columns and order, and check verdicts.

The catalog is a Delta table; Spark reads it without the delta-spark jar: ``deltalake`` lists the table's
active parquet files as of a version (:func:`catalog_files`) and Spark reads those files. (Tables with
deletion vectors or column mapping need delta-spark: that reader refuses them, naming the feature.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing

from ..stages.item_meta import CATALOG_SCHEMA, META_COLUMNS, CatalogSchemaError, catalog_verdicts, item_meta_verdicts

_SPARK_TYPES = {
    "item_id": "bigint",
    "language": "string",
    "duration_s": "double",
    "upload_date": "date",
    "creator_id": "bigint",
    "download_url": "string",
}
assert set(_SPARK_TYPES) == set(CATALOG_SCHEMA)


def catalog_files(table_uri: str, version: typing.Optional[int] = None, storage_options=None) -> list[str]:
    """The Delta table's active data files at ``version`` (latest when None), as URLs; refuses features this
    file-list reader cannot honour."""
    import deltalake

    table = deltalake.DeltaTable(table_uri, version=version, storage_options=storage_options)
    protocol = table.protocol()
    features = set(protocol.reader_features or [])
    unsupported = features & {"deletionVectors", "columnMapping", "v2Checkpoint"}
    if unsupported:
        raise CatalogSchemaError(
            f"the Delta table {table_uri} uses {sorted(unsupported)}: read it with delta-spark on the cluster"
        )
    if table.metadata().partition_columns:
        raise CatalogSchemaError(
            f"the Delta table {table_uri} is partitioned by {table.metadata().partition_columns}: its partition "
            "values are not in the files; read it with delta-spark on the cluster"
        )
    return list(table.file_uris())


def prepare_catalog(catalog, as_of: typing.Optional[dt.date] = None):
    """Type the catalog (a Spark DataFrame), keep rows uploaded by ``as_of``; extra columns after the known ones."""
    from pyspark.sql import functions as F

    have = catalog.columns
    missing = [c for c in ("item_id", "download_url", "language") if c not in have]
    if missing:
        raise CatalogSchemaError(f"video catalog is missing column(s) {missing}; it has {list(have)}")
    casts = [(F.col(c).cast(t) if c in have else F.lit(None).cast(t)).alias(c) for c, t in _SPARK_TYPES.items()]
    extra = [F.col(c) for c in have if c not in CATALOG_SCHEMA]
    out = catalog.select(*casts, *extra)
    if as_of is not None:
        out = out.filter(F.col("upload_date").isNull() | (F.col("upload_date") <= F.lit(as_of)))
    return out


def validate_catalog(cat) -> dict[str, tuple[bool, dict]]:
    from pyspark.sql import functions as F

    row = cat.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("item_id").isNull().cast("long")).alias("null_ids"),
        F.countDistinct("item_id").alias("distinct_ids"),
        F.sum(F.col("download_url").isNull().cast("long")).alias("null_urls"),
    ).collect()[0]
    null_ids = int(row["null_ids"] or 0)
    # polars counts null as one distinct value; Spark's countDistinct leaves it out
    distinct = int(row["distinct_ids"] or 0) + (1 if null_ids else 0)
    return catalog_verdicts(null_ids, int(row["rows"]) - distinct, int(row["null_urls"] or 0))


@dataclasses.dataclass
class SparkItemMeta:
    items: typing.Any
    missing_count: int
    missing_sample: list[int]
    items_count: int
    persisted: list = dataclasses.field(default_factory=list)
    """The per-item counts (every job of the stage reads them); unpersist once the items are written."""

    @property
    def coverage(self) -> float:
        total = self.items_count + self.missing_count
        return 1.0 if total == 0 else self.items_count / total


def build_item_meta(interactions, catalog) -> SparkItemMeta:
    """The day's items with their catalog row and counts. The per-item counts (the one pass over the day's
    interactions) are persisted: the missing items' count, the items' count and every later job of the
    stage (its summary, checks and write) read them instead of counting the day again."""
    from pyspark.sql import functions as F

    counts = interactions.groupBy("item_id").agg(
        F.count(F.lit(1)).alias("num_interactions"),
        F.sum(F.col("is_positive").cast("long")).alias("num_positive"),
        F.countDistinct("client_id").alias("num_clients"),
    )
    counts = counts.persist()
    try:
        items = (
            counts.join(catalog, "item_id", "inner")
            .select(*META_COLUMNS, "num_interactions", "num_positive", "num_clients")
            .orderBy("item_id")
        )
        missing = counts.join(catalog, "item_id", "left_anti").select("item_id")
        n_missing = missing.count()
        sample = [r["item_id"] for r in missing.orderBy("item_id").limit(20).collect()] if n_missing else []
        return SparkItemMeta(items, int(n_missing), sample, int(items.count()), [counts])
    except BaseException:
        counts.unpersist()  # nobody else holds it yet
        raise


def validate_item_meta(items, coverage: float, min_coverage: float) -> dict[str, tuple[bool, dict]]:
    from pyspark.sql import functions as F

    row = items.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("item_id").alias("distinct"),
        F.sum(F.col("item_id").isNull().cast("long")).alias("null_ids"),
        F.sum(F.col("download_url").isNull().cast("long")).alias("null_urls"),
    ).collect()[0]
    null_ids = int(row["null_ids"] or 0)
    dup = int(row["rows"]) - int(row["distinct"] or 0) - (1 if null_ids else 0)
    return item_meta_verdicts(dup, null_ids, int(row["null_urls"] or 0), coverage, min_coverage)
