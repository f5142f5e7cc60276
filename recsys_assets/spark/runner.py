"""The data-preparation stages on one Spark session, from stored files to the results the assets report.

One implementation, two callers: the ``spark`` engine runs it in the Dagster process (its session local, a
cluster master or Spark Connect), and the Pipes job (:mod:`recsys_assets.spark.pipes_job`) runs it on the
cluster's driver (EMR Serverless, or a local subprocess). Inputs are file URLs (the driver lists files, never
reads rows); ``keep`` persists a frame that is read more than once until it is stored and released.
No Dagster imports.
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

    def raw_interactions(self, files: typing.Sequence[str], day: dt.date, rules: raw_stage.SnapshotRules) -> RawResult:
        from . import raw_interactions as sraw

        enforced = sraw.enforce_schema(self.read(files), rules)
        self.persisted.append(enforced.typed)
        summary = sraw.summarize(enforced, day, rules)
        return RawResult(
            self.keep(enforced.clean), self.keep(enforced.quarantine), summary.rows + summary.quarantined, summary
        )

    def video_catalog(self, files: typing.Sequence[str], as_of: dt.date) -> CatalogResult:
        from pyspark.sql import functions as F

        from . import item_meta as smeta

        cat = self.keep(smeta.prepare_catalog(self.read(files), as_of=as_of))
        by_language = pl.from_arrow(cat.groupBy("language").count().orderBy(F.desc("count"), "language").toArrow())
        uploaded = cat.filter(F.col("upload_date") == F.lit(as_of)).count()
        return CatalogResult(cat, by_language, int(uploaded), smeta.validate_catalog(cat))

    def filtered_interactions(self, raw: typing.Sequence[str], rules: phase1.Phase1Rules) -> Phase1Output:
        from . import filtered_interactions as sphase1

        result = sphase1.filter_interactions(self.read(raw), rules)
        table = self.keep(result.interactions)
        return Phase1Output(table, result.stats, sphase1.validate(table, rules))

    def item_meta(
        self, filtered: typing.Sequence[str], catalog: typing.Sequence[str], min_coverage: float
    ) -> ItemMetaOutput:
        from pyspark.sql import functions as F

        from . import item_meta as smeta

        result = smeta.build_item_meta(self.read(filtered), self.read(catalog))
        table = self.keep(result.items)
        by_language = pl.from_arrow(table.groupBy("language").count().orderBy(F.desc("count"), "language").toArrow())
        return ItemMetaOutput(
            table,
            result.missing_count,
            result.missing_sample,
            result.coverage,
            by_language,
            smeta.validate_item_meta(table, result.coverage, min_coverage),
        )

    def item_pairs(
        self, filtered: typing.Sequence[str], item_meta: typing.Sequence[str], rules: phase3.PairRules
    ) -> PairsOutput:
        from pyspark.sql import functions as F

        from . import item_pairs as spairs

        result = spairs.build_pairs(self.read(filtered), self.read(item_meta), rules)
        self.persisted.extend(result.persisted)  # the counted pairs, until the output is written
        # checks and top pairs read the cached count; the URLs are joined as the executors write the parts
        keys, table = result.keys, result.pairs
        top = pl.from_arrow(
            keys.orderBy(F.desc("num_clients"), "pair_type", "item_id_1", "item_id_2")
            .limit(10)
            .select("item_id_1", "item_id_2", "pair_type", "num_clients")
            .toArrow()
        )
        return PairsOutput(table, result.stats, top, spairs.validate(keys, rules.min_num_clients))


def table_summary(
    df, preview_rows: int = 5, count: bool = True
) -> tuple[int | None, list[tuple[str, str]], pl.DataFrame]:
    """Row count (None unless ``count``), (column, polars dtype) schema and the first rows of a Spark
    DataFrame (a count and a limit: the rows stay on the executors)."""
    from .raw_interactions import polars_dtype

    schema = [(f.name, str(polars_dtype(f.dataType))) for f in df.schema.fields]
    return (int(df.count()) if count else None), schema, pl.from_arrow(df.limit(preview_rows).toArrow())
