"""What a data-preparation engine returns for each stage, whichever engine ran it (polars, Spark in this
process, or a Spark job launched through Dagster Pipes): the table (a polars frame, a Spark DataFrame, or a
partition the job already stored), plus the statistics and check verdicts the assets report. Plain data."""

from __future__ import annotations

import dataclasses
import typing

import polars as pl

from . import raw_interactions as raw_stage

Verdicts = dict[str, tuple[bool, dict]]


@dataclasses.dataclass
class RawResult:
    clean: typing.Any
    quarantine: typing.Any
    rows_in: int
    summary: raw_stage.DaySummary


@dataclasses.dataclass
class CatalogResult:
    table: typing.Any
    by_language: pl.DataFrame
    uploaded_on_day: int
    verdicts: Verdicts


@dataclasses.dataclass
class Phase1Output:
    table: typing.Any
    stats: dict[str, int]
    verdicts: Verdicts


@dataclasses.dataclass
class ItemMetaOutput:
    table: typing.Any
    missing_count: int
    missing_sample: list[int]
    coverage: float
    by_language: pl.DataFrame
    verdicts: Verdicts


@dataclasses.dataclass
class PairsOutput:
    table: typing.Any
    stats: dict[str, int]
    top: pl.DataFrame
    verdicts: Verdicts
