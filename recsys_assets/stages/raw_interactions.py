"""Schema enforcement and quarantine for a daily interaction snapshot ("Daily-Snapshot").

A snapshot may come from any producer, so nothing about it is trusted:

* a missing column, or a column whose type cannot hold the field (a string ``pcc``), fails at
  once with a :class:`SnapshotSchemaError` naming the column;
* a value that cannot be used -- a null id, a NaN/negative/infinite ``timespent_s`` or ``pcc``,
  an unparseable timestamp, an exact duplicate of an earlier row -- sends the row to the
  quarantine with a reason. Nothing is dropped silently: ``clean + quarantine == input``.
"""

from __future__ import annotations

import dataclasses

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
    return reason.scatter(later, "duplicate")


def enforce_schema(raw: pl.DataFrame | pl.LazyFrame) -> EnforcedSnapshot:
    """Cast ``raw`` to :data:`SCHEMA` (extra columns are dropped) and split off unusable rows."""
    lf = raw.lazy()
    schema = lf.collect_schema()
    check_schema(schema)
    typed = lf.select(
        [_cast_expr(n, t, schema[n]).alias(n) for n, t in SCHEMA.items()]
        + [pl.col(n).is_not_null().alias(f"__had_{n}") for n in SCHEMA]
    )
    checks: list[tuple[str, pl.Expr]] = []
    for n in ID_COLUMNS:
        checks.append((f"null_{n}", pl.col(f"__had_{n}").not_() & pl.col(n).is_null()))
        checks.append((f"unparseable_{n}", pl.col(f"__had_{n}") & pl.col(n).is_null()))
    checks += [
        ("null_event_ts", pl.col("__had_event_ts").not_()),
        ("unparseable_event_ts", pl.col("__had_event_ts") & pl.col("event_ts").is_null()),
    ]
    for n in ("timespent_s", "pcc"):
        checks.append(
            (f"bad_{n}", pl.col(n).is_null() | pl.col(n).is_nan() | pl.col(n).is_infinite() | (pl.col(n) < 0))
        )
    checks += [
        ("unparseable_liked", pl.col("__had_liked") & pl.col("liked").is_null()),
        ("null_liked", pl.col("__had_liked").not_()),
    ]
    reason = pl.lit(None, dtype=pl.String)
    for name, cond in reversed(checks):
        reason = pl.when(cond).then(pl.lit(name)).otherwise(reason)
    typed = typed.with_columns(reason.alias(QUARANTINE_REASON)).drop([f"__had_{n}" for n in SCHEMA])
    out = typed.collect()
    out = out.with_columns(_mark_duplicates(out))
    bad = out[QUARANTINE_REASON].is_not_null()
    return EnforcedSnapshot(clean=out.filter(~bad).drop(QUARANTINE_REASON), quarantine=out.filter(bad))
