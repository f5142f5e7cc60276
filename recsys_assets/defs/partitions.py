"""The one daily partitioning every dataset and model shares, and the windows that read it.

The start date comes from :class:`recsys_assets.settings.Settings` (``RECSYS_START_DATE``): the asset
modules build their assets for a partitions definition handed to them by ``definitions.py``, so
``build_definitions(env)`` decides it, not the process environment at import time.
"""

import datetime as dt
import typing
import warnings

import dagster as dg

WINDOW_DAYS = 7
"""The trailing training window of every model (seed 000 and seed 001: one week)."""

# Partitions before the first one do not exist and are left out (the assets say so in their metadata);
# allow_nonexistent_upstream_partitions is beta in Dagster 1.13.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    TRAIN_WINDOW = dg.TimeWindowPartitionMapping(
        start_offset=-(WINDOW_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
    )
    """A model of day D trains on the daily partitions D-6 .. D."""
    PREVIOUS_DAY = dg.TimeWindowPartitionMapping(
        start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
    )
    """An evaluation of day D reads the model of D-1 ..."""
    EVAL_WINDOW = dg.TimeWindowPartitionMapping(
        start_offset=-WINDOW_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
    )
    """... and D-7 .. D of its data: the model's training window (seen items, popularity) and D itself."""


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
