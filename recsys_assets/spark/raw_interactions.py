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
import re
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
from .metrics import Observed, as_int, count_where

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


FILE_BITS = 40
"""A row's :data:`ORDER` is its file's rank << ``FILE_BITS`` | its index in the file (files of < 2**40 rows)."""


def _spellings(path: str) -> list[str]:
    """A listed file's path as the driver's listing (``inputFiles``) and as a row's ``_metadata.file_path``
    may spell it: the same URL, with an empty authority written (``file:///tmp/x``) or left out
    (``file:/tmp/x``)."""
    empty_authority = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*):///(.*)", path, flags=re.DOTALL)
    return [path, f"{empty_authority[1]}:/{empty_authority[2]}"] if empty_authority else [path]


def with_snapshot_order(raw):
    """``raw`` with :data:`ORDER`, a row's place in the snapshot as one long: its file's rank in name order,
    then its row in the file.

    The ranks come from the driver's own file listing (``inputFiles``: no job), joined as a broadcast table (a
    hash lookup per row, for any number of files). A row whose ``_metadata.file_path`` is not in that table fails
    the job with a clear error, never an unordered rank. One long instead of ``(file path, row)`` keeps the path
    string out of the duplicate ranking's shuffle and sorts, and gives the sorts a prefix to compare."""
    from pyspark.sql import functions as F

    files = sorted(raw.inputFiles())
    if len(files) >= 1 << (63 - FILE_BITS):
        raise ValueError(f"a snapshot of {len(files)} files: at most {(1 << (63 - FILE_BITS)) - 1} are ranked")
    listed = [(rank, spelt) for rank, path in enumerate(files) for spelt in _spellings(path)]
    ranks = raw.sparkSession.createDataFrame(listed, "__rank long, __file string")
    located = raw.select("*", F.col("_metadata.file_path").alias("__file"), F.col("_metadata.row_index").alias("__row"))
    rank = F.coalesce(
        F.col("__rank"),
        F.raise_error(F.concat(F.lit("a snapshot row came from a file not listed for ranking: "), F.col("__file"))),
    )
    return (
        located.join(F.broadcast(ranks), "__file", "left")
        .withColumn(ORDER, F.shiftleft(rank, FILE_BITS) + F.col("__row"))
        .drop("__file", "__row", "__rank")
    )


@dataclasses.dataclass
class SparkEnforced:
    clean: typing.Any
    """Spark DataFrame of the accepted rows, in :data:`SCHEMA`; each part in the snapshot's order (parts by
    the duplicate key's hash)."""
    quarantine: typing.Any
    """The rejected rows, typed as ``clean``, with ``quarantine_reason``."""
    observed: typing.Optional[Observed] = None
    """The day summary's counts, attached to ``clean`` and ``quarantine`` by :func:`count_summary`."""

    @property
    def summary(self) -> DaySummary:
        """The day summary counted while ``clean`` and ``quarantine`` were written (after :func:`count_summary`)."""
        if self.observed is None:
            raise ValueError("no summary is attached to the outputs: count_summary them, or summarize")
        return _summary({**self.observed.get("clean"), **self.observed.get("quarantine")})


def enforce_schema(raw, rules: SnapshotRules = SnapshotRules()) -> SparkEnforced:
    """Cast the Spark DataFrame ``raw`` (read with its ``_metadata`` column available) to :data:`SCHEMA` and
    split off unusable rows with the polars stage's reason codes."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    schema = {f.name: polars_dtype(f.dataType) for f in raw.schema.fields}
    check_schema(schema)
    typed = with_snapshot_order(raw).select(
        *[_cast(n, schema[n]).alias(n) for n in SCHEMA],
        *[F.col(n).isNotNull().alias(f"__had_{n}") for n in SCHEMA],
        ORDER,
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
        # the key's columns first: the sort's prefix is then client_id, not a boolean that nearly every row shares
        "__rank",
        F.row_number().over(Window.partitionBy(*DUPLICATE_KEY, "__valid").orderBy(ORDER)),
    )
    typed = typed.withColumn(
        QUARANTINE_REASON, F.when(valid & (F.col("__rank") > 1), F.lit(DUPLICATE)).otherwise(F.col(QUARANTINE_REASON))
    ).drop("__valid", "__rank")
    # each part in snapshot order; no global sort (a shuffle of the whole day more): readers sort what they use
    clean = typed.filter(F.col(QUARANTINE_REASON).isNull()).sortWithinPartitions(ORDER).select(*SCHEMA)
    quarantine = (
        typed.filter(F.col(QUARANTINE_REASON).isNotNull())
        .sortWithinPartitions(ORDER)
        .select(*SCHEMA, QUARANTINE_REASON)
    )
    # not persisted: each output is one job that reads the snapshot (a cache of the typed day cost as much)
    return SparkEnforced(clean, quarantine)


def _clean_metrics(day: dt.date, rules: SnapshotRules) -> dict[str, typing.Any]:
    """The day summary's counts of the accepted rows, as aggregates over them (name -> Column).

    The content hash sums two 64-bit row hashes, exactly: each hash's high and low 32-bit halves are summed
    apart as longs (no overflow below 2**31 rows a day; above, Spark's ANSI mode fails the job) and joined on
    the driver, which gives the sum a decimal would, without decimal arithmetic per row."""
    from pyspark.sql import functions as F

    start, end = day_bounds(day, rules)
    ts = F.col("event_ts")
    metrics = {
        "rows": F.count(F.lit(1)),
        "null_keys": count_where(F.greatest(*[F.col(c).isNull() for c in ID_COLUMNS])),
        "outside": count_where((ts < F.lit(start)) | (ts >= F.lit(end))),
        "first": F.min(F.unix_micros(ts)),
        "last": F.max(F.unix_micros(ts)),
    }
    for name, row_hash in (
        ("h1", F.xxhash64(*[F.col(c) for c in SCHEMA])),
        ("h2", F.xxhash64(F.lit("recsys"), *[F.col(c) for c in SCHEMA])),
    ):
        metrics[f"{name}_high"] = F.sum(F.shiftright(row_hash, 32))
        metrics[f"{name}_low"] = F.sum(row_hash.bitwiseAND(F.lit(0xFFFFFFFF)))
    return metrics


def _quarantine_metrics() -> dict[str, typing.Any]:
    """The day summary's counts of the rejected rows: how many, and how many of each reason code."""
    from pyspark.sql import functions as F

    metrics = {"quarantined": F.count(F.lit(1))}
    for reason in dict.fromkeys((*REASONS, DUPLICATE)):
        metrics[f"reason:{reason}"] = count_where(F.col(QUARANTINE_REASON) == reason)
    return metrics


def _summary(values: typing.Mapping[str, typing.Any]) -> DaySummary:
    """:class:`DaySummary` from the values of :func:`_clean_metrics` and :func:`_quarantine_metrics`."""
    rows = as_int(values["rows"])

    def when(us) -> typing.Optional[str]:
        if us is None:
            return None
        return str(dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=int(us)))

    h1, h2 = ((as_int(values[f"{h}_high"]) << 32) + as_int(values[f"{h}_low"]) for h in ("h1", "h2"))
    digest = (
        hashlib.sha256(f"spark:{rows}:{h1}:{h2}".encode()).hexdigest() if rows else hashlib.sha256(b"empty").hexdigest()
    )
    counted = {k.partition(":")[2]: as_int(v) for k, v in values.items() if k.startswith("reason:") and as_int(v)}
    return DaySummary(
        rows=rows,
        quarantined=as_int(values["quarantined"]),
        reason_counts=dict(sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))),
        rows_with_null_key=as_int(values["null_keys"]),
        rows_outside_day=as_int(values["outside"]),
        first_event=when(values["first"]),
        last_event=when(values["last"]),
        content_hash=digest,
    )


def count_summary(enforced: SparkEnforced, day: dt.date, rules: SnapshotRules) -> SparkEnforced:
    """``enforced`` whose outputs count the day summary as they are written: the accepted rows' counts and
    content hash on ``clean``, the reason counts on ``quarantine`` (no scan of their own). Write both, then
    read ``.summary``."""
    observed = Observed()
    clean = observed.attach("clean", enforced.clean, **_clean_metrics(day, rules))
    quarantine = observed.attach("quarantine", enforced.quarantine, **_quarantine_metrics())
    return dataclasses.replace(enforced, clean=clean, quarantine=quarantine, observed=observed)


def summarize(enforced: SparkEnforced, day: dt.date, rules: SnapshotRules) -> DaySummary:
    """The day summary of ``enforced`` by scans of its own: the aggregates :func:`count_summary` counts as the
    outputs are written, over ``clean`` and over ``quarantine``."""

    def agg(df, metrics: dict) -> dict:
        return df.agg(*[c.alias(k) for k, c in metrics.items()]).collect()[0].asDict()

    return _summary(
        {**agg(enforced.clean, _clean_metrics(day, rules)), **agg(enforced.quarantine, _quarantine_metrics())}
    )
