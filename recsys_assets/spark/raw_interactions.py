"""Spark version of :mod:`recsys_assets.stages.raw_interactions`: schema enforcement and quarantine.

The schema, its compatibility rule (:func:`~recsys_assets.stages.raw_interactions.check_schema`), the reason
codes and their order (``REASONS``), the thresholds and the day-level verdicts
(:func:`~recsys_assets.stages.raw_interactions.day_verdicts`) are the polars stage's; this module only
computes them on Spark. Row order is the snapshot's: files in name order, rows in file order (``duplicate``
keeps the first of a repeated key, as the polars stage does).

String timestamps are parsed as ISO 8601 (``2026-11-08 10:00:00``, ``2026-11-08T10:00:00Z``); integers are
epoch milliseconds. The content hash is Spark's own (order-independent sums of two row hashes): it is
compared only with days hashed by the same engine, so a re-delivered day can be missed right after a switch
of engine, never falsely flagged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import typing

import polars as pl

from ..stages.raw_interactions import (
    DUPLICATE,
    DUPLICATE_KEY,
    ID_COLUMNS,
    QUARANTINE_REASON,
    REASONS,
    SCHEMA,
    DaySummary,
    SnapshotRules,
    check_schema,
    day_bounds,
)

ORDER = "__order"


def polars_dtype(spark_type) -> pl.DataType:
    """The polars type a Spark column type corresponds to, for the shared schema rule."""
    from pyspark.sql import types as T

    simple = {
        T.LongType: pl.Int64(),
        T.IntegerType: pl.Int32(),
        T.ShortType: pl.Int16(),
        T.ByteType: pl.Int8(),
        T.DoubleType: pl.Float64(),
        T.FloatType: pl.Float32(),
        T.StringType: pl.String(),
        T.BooleanType: pl.Boolean(),
        T.DateType: pl.Date(),
        T.TimestampType: pl.Datetime("us", "UTC"),
        T.TimestampNTZType: pl.Datetime("us"),
        T.NullType: pl.Null(),
        T.BinaryType: pl.Binary(),
    }
    for cls, dtype in simple.items():
        if isinstance(spark_type, cls):
            return dtype
    if isinstance(spark_type, T.DecimalType):
        return pl.Decimal(spark_type.precision, spark_type.scale)
    return pl.Object()


def _cast(name: str, source: pl.DataType):
    from pyspark.sql import functions as F

    col = F.col(name)
    if source == pl.Null:
        return F.lit(None).cast(_spark_type(name))
    if name in ID_COLUMNS:
        if source == pl.String:  # as polars' strict=False cast: an optional sign and digits, else null
            return F.when(col.rlike(r"^[+-]?[0-9]+$"), col.try_cast("bigint"))
        return col.cast("bigint")
    if name == "event_ts":
        if source == pl.String:
            return col.try_cast("timestamp")
        if source.is_integer():
            return F.timestamp_millis(col.cast("bigint"))
        return col.cast("timestamp")
    if name == "liked":
        if source == pl.String:
            low = F.lower(F.trim(col))
            return F.when(low.isin("true", "1", "yes"), F.lit(True)).when(low.isin("false", "0", "no"), F.lit(False))
        return col.cast("boolean")
    return col.cast("double")


def _spark_type(name: str) -> str:
    return {
        "client_id": "bigint",
        "session_id": "bigint",
        "item_id": "bigint",
        "event_ts": "timestamp",
        "timespent_s": "double",
        "pcc": "double",
        "liked": "boolean",
    }[name]


def _conditions(rules: SnapshotRules) -> dict[str, typing.Any]:
    from pyspark.sql import functions as F

    had = {n: F.col(f"__had_{n}") for n in SCHEMA}
    c: dict[str, typing.Any] = {}
    for n in ID_COLUMNS:
        c[f"null_{n}"] = ~had[n] & F.col(n).isNull()
        c[f"unparseable_{n}"] = had[n] & F.col(n).isNull()
    c["null_event_ts"] = ~had["event_ts"]
    c["unparseable_event_ts"] = had["event_ts"] & F.col("event_ts").isNull()
    for n in ("timespent_s", "pcc"):
        v = F.col(n)
        c[f"bad_{n}"] = v.isNull() | F.isnan(v) | (v == float("inf")) | (v == float("-inf")) | (v < 0)
    # NaN compares above every number in Spark, but NaN rows were claimed by bad_* first (REASONS' order)
    c["pcc_above_max"] = F.col("pcc") > rules.max_pcc
    c["timespent_s_above_max"] = F.col("timespent_s") > rules.max_timespent_s
    c["unparseable_liked"] = had["liked"] & F.col("liked").isNull()
    c["null_liked"] = ~had["liked"]
    return c


@dataclasses.dataclass
class SparkEnforced:
    clean: typing.Any
    """Spark DataFrame of the accepted rows, in :data:`SCHEMA`; each part in the snapshot's order (parts by
    the duplicate key's hash)."""
    quarantine: typing.Any
    """The rejected rows, typed as ``clean``, with ``quarantine_reason``."""
    typed: typing.Any
    """Both, persisted (release with :meth:`release`)."""

    def release(self) -> None:
        self.typed.unpersist()


def enforce_schema(raw, rules: SnapshotRules = SnapshotRules()) -> SparkEnforced:
    """Cast the Spark DataFrame ``raw`` (read with its ``_metadata`` column available) to :data:`SCHEMA` and
    split off unusable rows with the polars stage's reason codes."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    schema = {f.name: polars_dtype(f.dataType) for f in raw.schema.fields}
    check_schema(schema)
    order = F.struct(F.col("_metadata.file_path"), F.col("_metadata.row_index"))
    typed = raw.select(
        *[_cast(n, schema[n]).alias(n) for n in SCHEMA],
        *[F.col(n).isNotNull().alias(f"__had_{n}") for n in SCHEMA],
        order.alias(ORDER),
    )
    cond = _conditions(rules)
    reason = F.lit(None).cast("string")
    for name in reversed(REASONS):
        reason = F.when(cond[name], F.lit(name)).otherwise(reason)
    typed = typed.withColumn(QUARANTINE_REASON, reason).drop(*[f"__had_{n}" for n in SCHEMA])
    # a valid row repeating an earlier valid row's key is a duplicate: rank the valid rows of each key in
    # snapshot order (rows with a reason fall into their own groups and are never ranked against them)
    valid = F.col(QUARANTINE_REASON).isNull()
    typed = typed.withColumn("__valid", valid).withColumn(
        "__rank", F.row_number().over(Window.partitionBy("__valid", *DUPLICATE_KEY).orderBy(ORDER))
    )
    typed = typed.withColumn(
        QUARANTINE_REASON, F.when(valid & (F.col("__rank") > 1), F.lit(DUPLICATE)).otherwise(F.col(QUARANTINE_REASON))
    ).drop("__valid", "__rank")
    typed = typed.persist()
    columns = list(SCHEMA)
    # each part in snapshot order; no global sort (a shuffle of the whole day more): readers sort what they use
    clean = typed.filter(F.col(QUARANTINE_REASON).isNull()).sortWithinPartitions(ORDER).select(*columns)
    quarantine = (
        typed.filter(F.col(QUARANTINE_REASON).isNotNull())
        .sortWithinPartitions(ORDER)
        .select(*columns, QUARANTINE_REASON)
    )
    return SparkEnforced(clean, quarantine, typed)


def summarize(enforced: SparkEnforced, day: dt.date, rules: SnapshotRules) -> DaySummary:
    """The counts behind the day-level verdicts, in one aggregation over the enforced rows (plus the reason
    counts): the driver receives a handful of numbers."""
    from pyspark.sql import functions as F

    start, end = day_bounds(day, rules)
    typed = enforced.typed
    ok = F.col(QUARANTINE_REASON).isNull()
    ts = F.col("event_ts")
    row_hash = F.xxhash64(*[F.col(c) for c in SCHEMA]).cast("decimal(38,0)")
    row_hash2 = F.xxhash64(F.lit("recsys"), *[F.col(c) for c in SCHEMA]).cast("decimal(38,0)")
    agg = typed.agg(
        F.sum(ok.cast("long")).alias("rows"),
        F.sum((~ok).cast("long")).alias("quarantined"),
        F.sum((ok & F.greatest(*[F.col(c).isNull() for c in ID_COLUMNS])).cast("long")).alias("null_keys"),
        F.sum((ok & ((ts < F.lit(start)) | (ts >= F.lit(end)))).cast("long")).alias("outside"),
        F.min(F.when(ok, F.unix_micros(ts))).alias("first"),
        F.max(F.when(ok, F.unix_micros(ts))).alias("last"),
        F.sum(F.when(ok, row_hash)).alias("h1"),
        F.sum(F.when(ok, row_hash2)).alias("h2"),
    ).collect()[0]
    reasons = {
        r[QUARANTINE_REASON]: int(r["count"])
        for r in typed.filter(~ok)
        .groupBy(QUARANTINE_REASON)
        .count()
        .orderBy(F.desc("count"), QUARANTINE_REASON)
        .collect()
    }
    rows = int(agg["rows"] or 0)

    def when(us) -> typing.Optional[str]:
        if us is None:
            return None
        return str(dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=int(us)))

    digest = (
        hashlib.sha256(f"spark:{rows}:{agg['h1']}:{agg['h2']}".encode()).hexdigest()
        if rows
        else hashlib.sha256(b"empty").hexdigest()
    )
    return DaySummary(
        rows=rows,
        quarantined=int(agg["quarantined"] or 0),
        reason_counts=reasons,
        rows_with_null_key=int(agg["null_keys"] or 0),
        rows_outside_day=int(agg["outside"] or 0),
        first_event=when(agg["first"]),
        last_event=when(agg["last"]),
        content_hash=digest,
    )
