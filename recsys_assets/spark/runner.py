"""The data-preparation stages on one Spark session, from stored files to the results the assets report.

One implementation, two callers: the ``spark`` engine runs it in the Dagster process (its session local, a
cluster master or Spark Connect), and the Pipes job (:mod:`recsys_assets.spark.pipes_job`) runs it on the
cluster's driver (EMR Serverless, or a local subprocess); both through :func:`~recsys_assets.spark.pipes_job.run_stage`.
Inputs are file URLs (the driver lists files, never reads rows). Each stage stores its outputs itself through
``write(name, frame)``, which has the executors write the partition and returns the stored table: statistics
and check counts that Spark counts as it writes (phases 1 and 3) are read after the write, and what is read
again (the top pairs) is read from the stored files, not recomputed. ``keep`` persists a frame that is read
more than once until it is stored and released. No Dagster imports.
"""

from __future__ import annotations

import datetime as dt
import typing

import polars as pl

from ..stages import filtered_interactions as phase1
from ..stages import item_pairs as phase3
from ..stages import raw_interactions as raw_stage
from ..stages.prep_results import CatalogResult, ItemMetaOutput, PairsOutput, Phase1Output, RawResult
from .io import read_files

Write = typing.Callable[[str, typing.Any], typing.Any]
"""``write(output name, Spark DataFrame)`` stores the partition and returns it as stored (a Spark DataFrame)."""


class SparkStages:
    """The stages on ``spark``; ``scheme_map`` rewrites storage URLs for Spark's filesystem."""

    def __init__(self, spark, scheme_map: typing.Mapping[str, str]):
        self.spark = spark
        self.scheme_map = dict(scheme_map)
        self.persisted: list = []

    def read(self, urls: typing.Sequence[str]):
        return read_files(self.spark, urls, self.scheme_map)

    def keep(self, df):
        df = df.persist()
        self.persisted.append(df)
        return df

    def release(self) -> None:
        for df in self.persisted:
            df.unpersist()
        self.persisted.clear()

    def raw_interactions(
        self, files: typing.Sequence[str], day: dt.date, rules: raw_stage.SnapshotRules, write: Write
    ) -> RawResult:
        from . import raw_interactions as sraw

        enforced = sraw.count_summary(sraw.enforce_schema(self.read(files), rules), day, rules)
        # two jobs, each reads the snapshot and ranks the duplicates (no cache: building one cost as much as
        # the second pass); the day summary is counted as they write
        clean = write("clean", enforced.clean)
        quarantine = write("quarantine", enforced.quarantine)
        enforced.observed.ran()
        summary = enforced.summary
        return RawResult(clean, quarantine, summary.rows + summary.quarantined, summary)

    def video_catalog(self, files: typing.Sequence[str], as_of: dt.date, write: Write) -> CatalogResult:
        from pyspark.sql import functions as F

        from . import item_meta as smeta

        cat = self.keep(smeta.prepare_catalog(self.read(files), as_of=as_of))
        by_language = pl.from_arrow(cat.groupBy("language").count().orderBy(F.desc("count"), "language").toArrow())
        uploaded = cat.filter(F.col("upload_date") == F.lit(as_of)).count()
        verdicts = smeta.validate_catalog(cat)
        return CatalogResult(write("table", cat), by_language, int(uploaded), verdicts)

    def filtered_interactions(self, raw: typing.Sequence[str], rules: phase1.Phase1Rules, write: Write) -> Phase1Output:
        from . import filtered_interactions as sphase1

        result = sphase1.filter_interactions(self.read(raw), rules)
        table = write("table", result.interactions)  # one job: the statistics and check counts as it writes
        result.observed.ran()
        return Phase1Output(table, result.stats, result.verdicts)

    def item_meta(
        self, filtered: typing.Sequence[str], catalog: typing.Sequence[str], min_coverage: float, write: Write
    ) -> ItemMetaOutput:
        from pyspark.sql import functions as F

        from . import item_meta as smeta

        result = smeta.build_item_meta(self.read(filtered), self.read(catalog))
        self.persisted.extend(result.persisted)  # the per-item counts, until the items are written
        table = self.keep(result.items)
        by_language = pl.from_arrow(table.groupBy("language").count().orderBy(F.desc("count"), "language").toArrow())
        verdicts = smeta.validate_item_meta(table, result.coverage, min_coverage)
        return ItemMetaOutput(
            write("table", table), result.missing_count, result.missing_sample, result.coverage, by_language, verdicts
        )

    def item_pairs(
        self, filtered: typing.Sequence[str], item_meta: typing.Sequence[str], rules: phase3.PairRules, write: Write
    ) -> PairsOutput:
        from . import item_pairs as spairs

        result = spairs.build_pairs(self.read(filtered), self.read(item_meta), rules)
        stored = write("table", result.pairs)  # one job: the statistics and check counts as it writes
        result.observed.ran()
        return PairsOutput(stored, result.stats, spairs.top_pairs(stored), result.verdicts)


def table_summary(
    df, preview_rows: int = 5, count: bool = True
) -> tuple[int | None, list[tuple[str, str]], pl.DataFrame]:
    """Row count (None unless ``count``), (column, polars dtype) schema and the first rows of a Spark
    DataFrame (a count and a limit: the rows stay on the executors)."""
    from .raw_interactions import polars_dtype

    schema = [(f.name, str(polars_dtype(f.dataType))) for f in df.schema.fields]
    return (int(df.count()) if count else None), schema, pl.from_arrow(df.limit(preview_rows).toArrow())
