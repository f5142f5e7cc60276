"""The one daily partitioning every dataset and model shares."""

import datetime as dt
import os

import dagster as dg

START_DATE = os.environ.get("RECSYS_START_DATE", "2026-11-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE)


def partition_date(context: dg.AssetExecutionContext | dg.OutputContext | dg.InputContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)
