"""The one daily partitioning every dataset and model shares, and the windows that read it.

The start date comes from :class:`recsys_assets.settings.Settings` (``RECSYS_START_DATE``): the asset
modules build their assets for a partitions definition handed to them by ``definitions.py``, so
``build_definitions(env)`` decides it, not the process environment at import time.
"""

import datetime as dt
import typing
import warnings

import dagster as dg
import polars as pl

WINDOW_DAYS = 7
"""The trailing training window of every model (seed 000 and seed 001: one week)."""


class DayWindow(dg.PartitionMapping):
    """Day D of an asset reads days D+start_offset .. D+end_offset of its upstream -- a trailing window.

    Why not ``TimeWindowPartitionMapping(start_offset=-6)``: Dagster's host processes (the UI's
    Materialize dialog, the backfill daemon) extend a backfill downstream through every mapping they can
    see, so with the built-in mapping "all assets, 2 days" became 8-9 days of every windowed asset, most of
    whose same-day inputs did not exist (issue 16). What a user means by a day range is *those days*, each
    window built from the days that exist. So this mapping is resolved in the code location only:

    * upstream (what a run loads): the window, exactly as the built-in mapping with
      ``allow_nonexistent_upstream_partitions`` computes it -- days before the first partition are left
      out, days never materialized are skipped by the IO manager and reported by the asset;
    * downstream (what a change of day X reaches): day X only.

    Dagster does not send mappings other than its own to the host processes (``external_data.py`` keeps
    only built-in types), which therefore see a same-day edge: a backfill of a range targets exactly that
    range. The order across days comes from :func:`after_previous_day` instead: each windowed asset also
    depends on its own previous day, so a backfill advances one day at a time and day D runs after every
    upstream day inside its window that the same backfill rebuilds.
    """

    def __init__(self, start_offset: int, end_offset: int, name: str):
        self.start_offset, self.end_offset, self.name = start_offset, end_offset, name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)
            self._upstream = dg.TimeWindowPartitionMapping(
                start_offset=start_offset, end_offset=end_offset, allow_nonexistent_upstream_partitions=True
            )
        self._same_day = dg.TimeWindowPartitionMapping()

    def validate_partition_mapping(self, upstream_partitions_def, downstream_partitions_def) -> None:
        self._upstream.validate_partition_mapping(upstream_partitions_def, downstream_partitions_def)

    def get_upstream_mapped_partitions_result_for_partitions(
        self,
        downstream_partitions_subset,
        downstream_partitions_def,
        upstream_partitions_def,
        current_time=None,
        dynamic_partitions_store=None,
    ):
        return self._upstream.get_upstream_mapped_partitions_result_for_partitions(
            downstream_partitions_subset,
            downstream_partitions_def,
            upstream_partitions_def,
            current_time,
            dynamic_partitions_store,
        )

    def get_downstream_partitions_for_partitions(
        self,
        upstream_partitions_subset,
        upstream_partitions_def,
        downstream_partitions_def,
        current_time=None,
        dynamic_partitions_store=None,
    ):
        return self._same_day.get_downstream_partitions_for_partitions(
            upstream_partitions_subset,
            upstream_partitions_def,
            downstream_partitions_def,
            current_time,
            dynamic_partitions_store,
        )

    @property
    def description(self) -> str:
        if self.start_offset == self.end_offset:
            return f"{self.name}: day D{self.end_offset:+d} of the upstream"
        return f"{self.name}: days D{self.start_offset:+d} .. D{self.end_offset:+d} of the upstream"

    def __repr__(self) -> str:
        return f"DayWindow({self.start_offset}, {self.end_offset}, {self.name!r})"


# Dagster warns "Non-built-in PartitionMappings, such as DayWindow ... will not work with asset reconciliation"
# each time an asset with such an input is defined. That is the point of DayWindow (see its docstring), so
# exactly that warning is silenced, wherever the assets are built.
warnings.filterwarnings(
    "ignore", message="Non-built-in PartitionMappings, such as DayWindow", category=DeprecationWarning
)

TRAIN_WINDOW = DayWindow(-(WINDOW_DAYS - 1), 0, "training window")
"""A model of day D trains on the daily partitions D-6 .. D."""
PREVIOUS_DAY = DayWindow(-1, -1, "previous day")
"""An evaluation of day D reads the model of D-1 ..."""
EVAL_WINDOW = DayWindow(-WINDOW_DAYS, 0, "evaluation window")
"""... and D-7 .. D of its data: the model's training window (seen items, popularity) and D itself."""
PREVIOUS_AND_SAME_DAY = DayWindow(-1, 0, "previous and same day")
"""Both D-1 and D of one asset (Dagster allows one input per upstream asset): an evaluation that compares the
model of D-1 with the one of D."""

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    _SELF_PREVIOUS_DAY = dg.TimeWindowPartitionMapping(
        start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
    )


def window_input(
    asset_key: str, mapping: DayWindow, columns: typing.Optional[typing.Sequence[str]] = None, **kwargs: typing.Any
) -> dg.AssetIn:
    """An input that reads other days of ``asset_key`` through ``mapping``: a ``dict[day, value]`` of the days
    that exist -- a day never materialized is left out with a warning (``allow_missing_partitions``) and the
    asset reports how many it used (:func:`window_metadata`). ``columns``: read only these (see
    ``io_manager``)."""
    metadata: dict[str, typing.Any] = {"allow_missing_partitions": True}
    if columns is not None:
        metadata["columns"] = list(columns)
    return dg.AssetIn(asset_key, partition_mapping=mapping, metadata=metadata, **kwargs)


def columns_input(asset_key: str, columns: typing.Sequence[str], **kwargs: typing.Any) -> dg.AssetIn:
    """An input of the same day of ``asset_key`` that reads only ``columns`` (see ``io_manager``)."""
    return dg.AssetIn(asset_key, metadata={"columns": list(columns)}, **kwargs)


def after_previous_day(asset_key: str) -> dg.AssetDep:
    """The ordering dependency of an asset whose inputs reach other days (see :class:`DayWindow`): its day D
    runs after its day D-1. Built-in, so the backfill daemon sees it and walks a range day by day; Dagster
    never extends a backfill along an asset's dependency on itself."""
    return dg.AssetDep(asset_key, partition_mapping=_SELF_PREVIOUS_DAY)


def daily_partitions(start_date: dt.date | str) -> dg.DailyPartitionsDefinition:
    start = start_date.isoformat() if isinstance(start_date, dt.date) else start_date
    return dg.DailyPartitionsDefinition(start_date=start)


def partition_date(context: dg.AssetExecutionContext | dg.OutputContext | dg.InputContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def first_partition(context: dg.AssetExecutionContext) -> dt.date:
    partitions_def = typing.cast(dg.TimeWindowPartitionsDefinition, context.assets_def.partitions_def)
    return partitions_def.start.date()


def window_metadata(context: dg.AssetExecutionContext, window: typing.Mapping[str, typing.Any], rows: int) -> dict:
    """What a TRAIN_WINDOW input held: its days, how many were there, and whether it was cut by the
    first partition."""
    day = partition_date(context)
    wanted = [(day - dt.timedelta(days=i)).isoformat() for i in reversed(range(WINDOW_DAYS))]
    first = first_partition(context).isoformat()
    before_start = [d for d in wanted if d < first]
    meta: dict[str, typing.Any] = {
        "window": f"{wanted[0]} .. {wanted[-1]}",
        "window_days_used": len(window),
        "window_rows": rows,
    }
    if before_start:
        meta["partial_window"] = (
            f"the window reaches {len(before_start)} day(s) before the first partition "
            f"({first}): trained on {len(window)} of {WINDOW_DAYS} days"
        )
    return meta


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def train_window_start(day: dt.date) -> dt.datetime:
    """The first instant of the TRAIN_WINDOW ending on ``day``."""
    return midnight(day - dt.timedelta(days=WINDOW_DAYS - 1))


def latest_per_item(
    window: typing.Mapping[str, pl.LazyFrame],
    items: typing.Optional[pl.Series] = None,
    where: typing.Optional[pl.Expr] = None,
) -> pl.DataFrame:
    """The union of a window of per-item partitions (lazy inputs), one row per item -- the latest day's --
    sorted by item (:func:`latest_queries_per_item`, collected, concatenated and sorted)."""
    parts = [q.collect(engine="streaming") for q in latest_queries_per_item(window, items=items, where=where)]
    if not parts:
        return pl.DataFrame() if not window else window[max(window)].head(0).collect()
    return pl.concat(parts, how="vertical_relaxed", rechunk=False).sort("item_id")


def latest_queries_per_item(
    window: typing.Mapping[str, pl.LazyFrame],
    items: typing.Optional[pl.Series] = None,
    where: typing.Optional[pl.Expr] = None,
) -> list[pl.LazyFrame]:
    """One row per item of a window of per-item partitions (lazy inputs) -- the latest day's -- as one query per
    day, in (day, stored) order. Reads every day's item ids first; each query then reads from its day only the
    rows that day is the latest for: an item's vectors are loaded once, not once per day it appears in (and keep
    their stored dtype). A reader may stream the queries (``collect_batches``) into its own arrays, so that the
    rows are never held as frames as well. ``items``: only these items (the others are never read); ``where``:
    of the latest rows keep those that pass (applied in the scan, after the latest day is chosen: an item whose
    latest row fails is left out, not replaced by an older row)."""
    days = sorted(window)
    if not days:
        return []
    ids = pl.concat(
        [window[d].select("item_id").collect().with_columns(day=pl.lit(k, pl.Int32)) for k, d in enumerate(days)]
    )
    if items is not None:
        ids = ids.filter(pl.col("item_id").is_in(items.implode()))
    owner = ids.group_by("item_id").agg(pl.col("day").max())
    queries = []
    for k, d in enumerate(days):
        mine = owner.filter(pl.col("day") == k)["item_id"]
        if mine.len():
            pred = pl.col("item_id").is_in(mine.implode())
            queries.append(window[d].filter(pred if where is None else pred & where))
    return queries
