"""The engine that runs the data-preparation phases: a resource, chosen per deployment (``RECSYS_ENGINE``).

* :class:`PolarsEngine` (``polars``, the default): one process, the stages of :mod:`recsys_assets.stages`.
* :class:`SparkEngine` (``spark``): the same phases on Apache Spark (:mod:`recsys_assets.spark`), its session
  from ``dagster_pyspark.LazyPySparkResource`` -- local mode, a cluster master, or Spark Connect
  (``spark.remote``) -- built on first use, so runs that never touch Spark pay nothing.

The assets in ``data_prep.py`` call the engine and report what it returns; they do not know which engine
runs. Inputs arrive as :class:`~recsys_assets.storage.TableRef` (stored files, not rows): polars scans them
lazily, Spark reads the files on its executors. Outputs are a polars frame (the IO manager writes one parquet
object) or a Spark DataFrame (the IO manager has Spark write its part files and publishes them with a
manifest): either way the same layout, which both engines and every downstream asset read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing

import dagster as dg
import polars as pl
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr

from ..stages import filtered_interactions as phase1
from ..stages import item_meta as phase2
from ..stages import item_pairs as phase3
from ..stages import raw_interactions as raw_stage
from ..storage import TableRef
from .metadata import describe, frame_metadata, markdown_table

if typing.TYPE_CHECKING:
    from .resources import CatalogSource, SnapshotSource

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


class DataPrepEngine(dg.ConfigurableResource):
    """Interface of the data-preparation engines (see the module's docstring)."""

    def describe(self) -> str:
        raise NotImplementedError

    def raw_interactions(self, snapshots: SnapshotSource, day: dt.date, rules: raw_stage.SnapshotRules) -> RawResult:
        raise NotImplementedError

    def video_catalog(self, catalog: CatalogSource, as_of: dt.date) -> CatalogResult:
        raise NotImplementedError

    def filtered_interactions(self, raw: TableRef, rules: phase1.Phase1Rules) -> Phase1Output:
        raise NotImplementedError

    def item_meta(self, filtered: TableRef, catalog: TableRef, min_coverage: float) -> ItemMetaOutput:
        raise NotImplementedError

    def item_pairs(self, filtered: TableRef, item_meta: TableRef, rules: phase3.PairRules) -> PairsOutput:
        raise NotImplementedError

    def table_metadata(self, table: typing.Any) -> dict[str, typing.Any]:
        raise NotImplementedError

    def release(self, *tables: typing.Any) -> None:
        """Free what the engine kept for ``tables`` (Spark's persisted frames) once they are stored."""


def _top_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    return (
        pairs.sort("num_clients", descending=True)
        .head(10)
        .select("item_id_1", "item_id_2", pl.col("pair_type").cast(pl.String), "num_clients")
    )


class PolarsEngine(DataPrepEngine):
    """The phases in this process with polars (the default)."""

    def describe(self) -> str:
        return "polars"

    def raw_interactions(self, snapshots, day, rules) -> RawResult:
        from .guards import only_transient_retries

        with only_transient_retries():
            raw = snapshots.load(day)
        enforced = raw_stage.enforce_schema(raw, rules)
        return RawResult(enforced.clean, enforced.quarantine, raw.height, raw_stage.summarize(enforced, day, rules))

    def video_catalog(self, catalog, as_of) -> CatalogResult:
        from .guards import only_transient_retries

        with only_transient_retries():
            cat = phase2.prepare_catalog(catalog.load(), as_of=as_of)
        return CatalogResult(
            cat,
            cat["language"].value_counts(sort=True),
            int((cat["upload_date"] == as_of).sum()),
            phase2.validate_catalog(cat),
        )

    def filtered_interactions(self, raw, rules) -> Phase1Output:
        result = phase1.filter_interactions(raw.scan(), rules)
        return Phase1Output(result.interactions, result.stats, phase1.validate(result.interactions, rules))

    def item_meta(self, filtered, catalog, min_coverage) -> ItemMetaOutput:
        result = phase2.build_item_meta(filtered.scan(), catalog.scan().collect())
        return ItemMetaOutput(
            result.items,
            result.missing.height,
            result.missing["item_id"].head(20).to_list(),
            result.coverage,
            result.items["language"].value_counts(sort=True),
            phase2.validate_item_meta(result.items, result.coverage, min_coverage),
        )

    def item_pairs(self, filtered, item_meta, rules) -> PairsOutput:
        result = phase3.build_pairs(filtered.scan(), item_meta.scan(), rules)
        return PairsOutput(
            result.pairs, result.stats, _top_pairs(result.pairs), phase3.validate(result.pairs, rules.min_num_clients)
        )

    def table_metadata(self, table) -> dict[str, typing.Any]:
        return frame_metadata(table)


def _spark_schema_metadata(df) -> dg.TableSchema:
    from ..spark.raw_interactions import polars_dtype

    return dg.TableSchema(
        columns=[
            dg.TableColumn(f.name, str(polars_dtype(f.dataType)), description=describe(f.name))
            for f in df.schema.fields
        ]
    )


class SparkEngine(DataPrepEngine):
    """The phases on Apache Spark. ``pyspark`` is dagster-pyspark's lazy session resource (its
    ``spark_config`` holds ``spark.master`` or ``spark.remote``); ``scheme_map`` rewrites storage URLs for
    Spark's filesystem (``s3`` -> ``s3a`` by default; ``s3=s3`` on EMR)."""

    pyspark: LazyPySparkResource
    scheme_map: dict[str, str] = {"s3": "s3a"}

    _persisted: list = PrivateAttr(default_factory=list)

    @property
    def spark(self):
        from ..spark.session import prepare_mode

        prepare_mode(self.pyspark.spark_config or {})
        return self.pyspark.spark_session

    def describe(self) -> str:
        conf = self.pyspark.spark_config or {}
        return f"spark ({conf.get('spark.remote') or conf.get('spark.master', 'default master')})"

    def read_files(self, urls: list[str]):
        from ..spark.io import read_files

        return read_files(self.spark, urls, self.scheme_map)

    def _keep(self, df):
        df = df.persist()
        self._persisted.append(df)
        return df

    def raw_interactions(self, snapshots, day, rules) -> RawResult:
        from ..spark import raw_interactions as sraw
        from .guards import only_transient_retries

        with only_transient_retries():
            files = snapshots.files(day)
        raw = self.read_files(files)
        enforced = sraw.enforce_schema(raw, rules)
        self._persisted.append(enforced.typed)
        summary = sraw.summarize(enforced, day, rules)
        return RawResult(
            self._keep(enforced.clean),
            self._keep(enforced.quarantine),
            summary.rows + summary.quarantined,
            summary,
        )

    def video_catalog(self, catalog, as_of) -> CatalogResult:
        from pyspark.sql import functions as F

        from ..spark import item_meta as smeta
        from .guards import only_transient_retries

        with only_transient_retries():
            files = catalog.files()
        cat = self._keep(smeta.prepare_catalog(self.read_files(files), as_of=as_of))
        by_language = pl.from_arrow(cat.groupBy("language").count().orderBy(F.desc("count"), "language").toArrow())
        uploaded = cat.filter(F.col("upload_date") == F.lit(as_of)).count()
        return CatalogResult(cat, by_language, int(uploaded), smeta.validate_catalog(cat))

    def filtered_interactions(self, raw, rules) -> Phase1Output:
        from ..spark import filtered_interactions as sphase1

        result = sphase1.filter_interactions(self.read_files(raw.sources()), rules)
        table = self._keep(result.interactions)
        return Phase1Output(table, result.stats, sphase1.validate(table, rules))

    def item_meta(self, filtered, catalog, min_coverage) -> ItemMetaOutput:
        from pyspark.sql import functions as F

        from ..spark import item_meta as smeta

        result = smeta.build_item_meta(self.read_files(filtered.sources()), self.read_files(catalog.sources()))
        table = self._keep(result.items)
        by_language = pl.from_arrow(table.groupBy("language").count().orderBy(F.desc("count"), "language").toArrow())
        return ItemMetaOutput(
            table,
            result.missing_count,
            result.missing_sample,
            result.coverage,
            by_language,
            smeta.validate_item_meta(table, result.coverage, min_coverage),
        )

    def item_pairs(self, filtered, item_meta, rules) -> PairsOutput:
        from pyspark.sql import functions as F

        from ..spark import item_pairs as spairs

        result = spairs.build_pairs(self.read_files(filtered.sources()), self.read_files(item_meta.sources()), rules)
        self._persisted.extend(result.persisted)  # the counted pairs, until the output is written
        # checks and top pairs read the cached count; the URLs are joined as the executors write the parts
        keys, table = result.keys, result.pairs
        top = pl.from_arrow(
            keys.orderBy(F.desc("num_clients"), "pair_type", "item_id_1", "item_id_2")
            .limit(10)
            .select("item_id_1", "item_id_2", "pair_type", "num_clients")
            .toArrow()
        )
        return PairsOutput(table, result.stats, top, spairs.validate(keys, rules.min_num_clients))

    def table_metadata(self, table) -> dict[str, typing.Any]:
        preview = pl.from_arrow(table.limit(5).toArrow())
        return {
            "dagster/row_count": dg.MetadataValue.int(int(table.count())),
            "dagster/column_schema": _spark_schema_metadata(table),
            "preview": dg.MetadataValue.md(markdown_table(preview, 5)),
        }

    def release(self, *tables) -> None:
        for df in self._persisted:
            df.unpersist()
        self._persisted.clear()


def engine_resource(name: str, master: str, remote: typing.Optional[str], conf: dict, scheme_map: dict):
    """The engine resource for ``RECSYS_ENGINE`` (``polars`` or ``spark``) and the Spark settings."""
    if name == "polars":
        return PolarsEngine()
    if name == "spark":
        from ..spark.session import spark_config

        return SparkEngine(
            pyspark=LazyPySparkResource(spark_config=spark_config(master, remote, conf)), scheme_map=scheme_map
        )
    raise ValueError(f"RECSYS_ENGINE must be 'polars' or 'spark', not {name!r}")
