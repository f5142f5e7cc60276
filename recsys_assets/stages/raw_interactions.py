"""Schema enforcement and quarantine for a daily interaction snapshot ("Daily-Snapshot").

A snapshot may come from any producer, so nothing about it is trusted:

* a missing column, or a column whose type cannot hold the field (a string ``pcc``), fails at
  once with a :class:`SnapshotSchemaError` naming the column;
* a value that cannot be used -- a null id, a NaN/negative/infinite ``timespent_s`` or ``pcc``, one
  above its plausible maximum (``SnapshotRules.max_pcc`` / ``max_timespent_s``: a ``pcc`` of 50 is a
  producer's bug, not fifty plays, and must not become a positive), an unparseable timestamp, an exact
  duplicate of an earlier row -- sends the row to the quarantine with a reason. Nothing is dropped
  silently: ``clean + quarantine == input``.

A whole day can be wrong while every row looks fine; :func:`validate_day` gives the verdicts of the
day-level checks: no rows, a row count far from the trailing median, timestamps outside the partition's
day (another day's folder), or the same content as another day of the window (a re-delivered file).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import statistics
import typing

import numpy as np
import polars as pl

from .frames import repeated_rows

ID_COLUMNS = ("client_id", "session_id", "item_id")
SCHEMA: dict[str, pl.DataType] = {
    "client_id": pl.Int64(),
    "session_id": pl.Int64(),
    "item_id": pl.Int64(),
    "event_ts": pl.Datetime("us", "UTC"),
    "timespent_s": pl.Float64(),
    "pcc": pl.Float64(),
    "liked": pl.Boolean(),
}
DUPLICATE_KEY = ("client_id", "session_id", "item_id", "event_ts")
QUARANTINE_REASON = "quarantine_reason"


class SnapshotSchemaError(ValueError):
    """The snapshot's columns do not fit the interaction schema."""


@dataclasses.dataclass(frozen=True)
class SnapshotRules:
    """What a usable snapshot row is, and what a plausible snapshot day is."""

    max_pcc: float = 10.0
    """Play completion above this (ten full plays) is quarantined as ``pcc_above_max``, never classified."""
    max_timespent_s: float = 86_400.0
    """Time spent above this (one day) is quarantined as ``timespent_s_above_max``."""
    max_quarantine_share: float = 0.05
    """Fail (blocking) when more than this share of the snapshot's rows is quarantined."""
    event_ts_tolerance_s: float = 3_600.0
    """Rows up to this far outside the partition's day still count as in it (late events, clock skew)."""
    max_outside_day_share: float = 0.01
    """Fail (blocking) when more than this share of the rows lies outside the day (with the tolerance)."""
    min_rows_vs_median: float = 0.5
    """Fail (blocking) below this fraction of the median row count of the earlier days in the window ..."""
    max_rows_vs_median: float = 2.0
    """... or above this multiple of it. A day with no row always fails."""
    min_history_days: int = 3
    """The band is checked once at least this many earlier days of the window are known."""
    window_days: int = 7
    """Days on either side whose row counts and content hashes are compared with this day's."""


@dataclasses.dataclass(frozen=True)
class DayRecord:
    """What is known of another day of the same snapshot (from its materialization)."""

    partition: str
    rows: int
    content_hash: typing.Optional[str]


@dataclasses.dataclass(frozen=True)
class EnforcedSnapshot:
    clean: pl.DataFrame
    quarantine: pl.DataFrame
    """The rejected rows, typed as ``clean``, with a ``quarantine_reason`` column."""

    def reason_counts(self) -> dict[str, int]:
        if self.quarantine.is_empty():
            return {}
        vc = self.quarantine[QUARANTINE_REASON].value_counts(sort=True)
        return dict(zip(vc[QUARANTINE_REASON].to_list(), vc["count"].to_list()))


def _cast_expr(name: str, dtype: pl.DataType, source: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if name == "event_ts":
        if source == pl.String:
            return col.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
        if isinstance(source, pl.Datetime):
            return col.dt.replace_time_zone("UTC") if source.time_zone is None else col.dt.convert_time_zone("UTC")
        if source == pl.Date:
            return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        if source.is_integer():  # epoch milliseconds, as event logs often carry
            return pl.from_epoch(col, time_unit="ms").dt.replace_time_zone("UTC")
    if name == "liked" and source == pl.String:
        low = col.str.to_lowercase().str.strip_chars()
        return pl.when(low.is_in(["true", "1", "yes"])).then(True).when(low.is_in(["false", "0", "no"])).then(False)
    return col.cast(dtype, strict=False)


def _compatible(name: str, source: pl.DataType) -> bool:
    if source == pl.Null:
        return True
    if name in ID_COLUMNS:
        return source.is_integer() or source == pl.String
    if name == "event_ts":
        return isinstance(source, (pl.Datetime, pl.Date)) or source == pl.String or source.is_integer()
    if name in ("timespent_s", "pcc"):
        return source.is_numeric()
    if name == "liked":
        return source == pl.Boolean or source.is_integer() or source == pl.String
    return False


def check_schema(schema: pl.Schema | dict[str, pl.DataType]) -> None:
    """Raise :class:`SnapshotSchemaError` naming the first offending column(s)."""
    missing = [c for c in SCHEMA if c not in schema]
    if missing:
        raise SnapshotSchemaError(
            f"snapshot is missing column(s) {missing}; it has {list(schema)}; expected {list(SCHEMA)}"
        )
    for name in SCHEMA:
        if not _compatible(name, schema[name]):
            raise SnapshotSchemaError(
                f"snapshot column {name!r} has type {schema[name]}, which cannot hold {SCHEMA[name]}"
            )


def _mark_duplicates(typed: pl.DataFrame) -> pl.Series:
    """The reason column with ``duplicate`` set on every valid row that repeats an earlier valid row's
    (client, session, item, timestamp); the first one is kept."""
    reason = typed[QUARANTINE_REASON]
    later = repeated_rows(typed, DUPLICATE_KEY, where=reason.is_null())
    if later.len() == 0:
        return reason
    return reason.scatter(later, DUPLICATE)


REASONS: tuple[str, ...] = (
    *(f"{kind}_{n}" for n in ID_COLUMNS for kind in ("null", "unparseable")),
    "null_event_ts",
    "unparseable_event_ts",
    "bad_timespent_s",
    "bad_pcc",
    "pcc_above_max",
    "timespent_s_above_max",
    "unparseable_liked",
    "null_liked",
)
"""The quarantine reason codes in priority order: a row gets the first that applies (``duplicate`` is decided
afterwards, among the rows with none of these). Every engine implements exactly these, in this order."""
DUPLICATE = "duplicate"


def enforce_schema(raw: pl.DataFrame | pl.LazyFrame, rules: SnapshotRules = SnapshotRules()) -> EnforcedSnapshot:
    """Cast ``raw`` to :data:`SCHEMA` (extra columns are dropped) and split off unusable rows."""
    lf = raw.lazy()
    schema = lf.collect_schema()
    check_schema(schema)
    typed = lf.select(
        [_cast_expr(n, t, schema[n]).alias(n) for n, t in SCHEMA.items()]
        + [pl.col(n).is_not_null().alias(f"__had_{n}") for n in SCHEMA]
    )
    conditions: dict[str, pl.Expr] = {}
    for n in ID_COLUMNS:
        conditions[f"null_{n}"] = pl.col(f"__had_{n}").not_() & pl.col(n).is_null()
        conditions[f"unparseable_{n}"] = pl.col(f"__had_{n}") & pl.col(n).is_null()
    conditions["null_event_ts"] = pl.col("__had_event_ts").not_()
    conditions["unparseable_event_ts"] = pl.col("__had_event_ts") & pl.col("event_ts").is_null()
    for n in ("timespent_s", "pcc"):
        conditions[f"bad_{n}"] = pl.col(n).is_null() | pl.col(n).is_nan() | pl.col(n).is_infinite() | (pl.col(n) < 0)
    conditions["pcc_above_max"] = pl.col("pcc") > rules.max_pcc
    conditions["timespent_s_above_max"] = pl.col("timespent_s") > rules.max_timespent_s
    conditions["unparseable_liked"] = pl.col("__had_liked") & pl.col("liked").is_null()
    conditions["null_liked"] = pl.col("__had_liked").not_()
    checks = [(name, conditions[name]) for name in REASONS]
    reason = pl.lit(None, dtype=pl.String)
    for name, cond in reversed(checks):
        reason = pl.when(cond).then(pl.lit(name)).otherwise(reason)
    typed = typed.with_columns(reason.alias(QUARANTINE_REASON)).drop([f"__had_{n}" for n in SCHEMA])
    out = typed.collect()
    out = out.with_columns(_mark_duplicates(out))
    bad = out[QUARANTINE_REASON].is_not_null()
    return EnforcedSnapshot(clean=out.filter(~bad).drop(QUARANTINE_REASON), quarantine=out.filter(bad))


def content_hash(clean: pl.DataFrame) -> str:
    """A digest of the day's rows that ignores their order and the files they came in: two deliveries of the
    same rows hash alike. (polars' row hash may change between polars versions: after an upgrade, days
    hashed before it only stop matching -- a missed duplicate, never a false alarm.)"""
    if clean.is_empty():
        return hashlib.sha256(b"empty").hexdigest()
    row_hashes = np.sort(clean.select(list(SCHEMA)).hash_rows(seed=0).to_numpy())
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class DaySummary:
    """What the day-level checks need of an enforced snapshot: counts and bounds, computed by any engine."""

    rows: int
    """Accepted (clean) rows."""
    quarantined: int
    reason_counts: dict[str, int]
    rows_with_null_key: int
    rows_outside_day: int
    first_event: typing.Optional[str]
    last_event: typing.Optional[str]
    content_hash: str


def day_bounds(day: dt.date, rules: SnapshotRules) -> tuple[dt.datetime, dt.datetime]:
    """``[start, end)`` of the partition's day widened by the tolerance (UTC)."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc) - dt.timedelta(
        seconds=rules.event_ts_tolerance_s
    )
    return start, start + dt.timedelta(days=1, seconds=2 * rules.event_ts_tolerance_s)


def summarize(
    enforced: EnforcedSnapshot, day: dt.date, rules: SnapshotRules, digest: typing.Optional[str] = None
) -> DaySummary:
    clean = enforced.clean
    start, end = day_bounds(day, rules)
    null_keys = (
        clean.select(pl.any_horizontal(pl.col(c).is_null() for c in ID_COLUMNS).sum()).item() if clean.height else 0
    )
    outside = int(clean.filter((pl.col("event_ts") < start) | (pl.col("event_ts") >= end)).height)
    return DaySummary(
        rows=clean.height,
        quarantined=enforced.quarantine.height,
        reason_counts=enforced.reason_counts(),
        rows_with_null_key=int(null_keys or 0),
        rows_outside_day=outside,
        first_event=str(clean["event_ts"].min()) if clean.height else None,
        last_event=str(clean["event_ts"].max()) if clean.height else None,
        content_hash=digest or content_hash(clean),
    )


def validate_day(
    enforced: EnforcedSnapshot,
    day: dt.date,
    others: typing.Sequence[DayRecord],
    rules: SnapshotRules,
    digest: typing.Optional[str] = None,
) -> dict[str, tuple[bool, dict]]:
    """Verdicts of raw_interactions' checks for ``day``; ``others``: the other days of the window that are
    known (any order, ``day`` itself left out)."""
    return day_verdicts(summarize(enforced, day, rules, digest), day, others, rules)


def day_verdicts(
    summary: DaySummary, day: dt.date, others: typing.Sequence[DayRecord], rules: SnapshotRules
) -> dict[str, tuple[bool, dict]]:
    """The verdicts from a :class:`DaySummary` -- the one place the day-level rules are decided."""
    rows = summary.rows
    total = rows + summary.quarantined
    share = summary.quarantined / max(total, 1)
    earlier = [o.rows for o in others if o.partition < day.isoformat()]
    band: dict[str, typing.Any] = {"rows": rows, "earlier_days_known": len(earlier)}
    if rows == 0:
        rows_ok = False
        band["problem"] = "the day has no usable row"
    elif len(earlier) >= rules.min_history_days:
        median = statistics.median(earlier)
        low, high = rules.min_rows_vs_median * median, rules.max_rows_vs_median * median
        rows_ok = low <= rows <= high
        band.update({"trailing_median": float(median), "band_low": float(low), "band_high": float(high)})
    else:
        rows_ok = True
        band["note"] = f"fewer than {rules.min_history_days} earlier days known: only the empty day is checked"

    outside_share = summary.rows_outside_day / max(rows, 1)
    ts = {
        "rows_outside_day": summary.rows_outside_day,
        "outside_share": outside_share,
        "max_outside_day_share": rules.max_outside_day_share,
    }
    if rows:
        ts.update({"first_event": summary.first_event, "last_event": summary.last_event})

    digest = summary.content_hash
    same = sorted(o.partition for o in others if o.content_hash == digest and rows)
    return {
        "keys_not_null": (summary.rows_with_null_key == 0, {"rows_with_null_key": summary.rows_with_null_key}),
        "quarantine_share_below_max": (
            share <= rules.max_quarantine_share,
            {"quarantine_share": share, "max_quarantine_share": rules.max_quarantine_share, **summary.reason_counts},
        ),
        "row_count_within_band": (rows_ok, band),
        "event_ts_within_day": (outside_share <= rules.max_outside_day_share, ts),
        "content_unique_in_window": (
            not same,
            {"content_hash": digest, "same_content_as": same, "days_compared": len(others)},
        ),
    }
