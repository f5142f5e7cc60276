"""The engine that runs the data-preparation phases: a resource, chosen per deployment (``RECSYS_ENGINE``).

* :class:`PolarsEngine` (``polars``, the default): one process, the stages of :mod:`recsys_assets.stages`.
* :class:`SparkEngine` (``spark``): the same phases on Apache Spark (:mod:`recsys_assets.spark`), its session
  from ``dagster_pyspark.LazyPySparkResource`` -- local mode, a cluster master, or Spark Connect
  (``spark.remote``) -- built on first use, so runs that never touch Spark pay nothing.
* :class:`~recsys_assets.defs.pipes_engine.PipesSparkEngine` (``spark-subprocess``, ``emr-serverless``): each
  stage as a Spark job launched through Dagster Pipes (a local process, or EMR Serverless via dagster-aws); the
  job writes the partition and reports the rest (see ``pipes_engine.py``).

The assets in ``data_prep.py`` call the engine and report what it returns; they do not know which engine
runs. Inputs arrive as :class:`~recsys_assets.storage.TableRef` (stored files, not rows): polars scans them
lazily, Spark reads the files on its executors. Outputs are a polars frame (the IO manager writes one parquet
object) or a Spark DataFrame (the IO manager has Spark write its part files and publishes them with a
manifest): either way the same layout, which both engines and every downstream asset read.
"""

from __future__ import annotations

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
from ..stages.prep_results import CatalogResult, ItemMetaOutput, PairsOutput, Phase1Output, RawResult
from ..storage import TableRef
from .metadata import describe, frame_metadata, markdown_table

if typing.TYPE_CHECKING:
    from .resources import CatalogSource, SnapshotSource


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
        raw = snapshots.load(day)
        enforced = raw_stage.enforce_schema(raw, rules)
        return RawResult(enforced.clean, enforced.quarantine, raw.height, raw_stage.summarize(enforced, day, rules))

    def video_catalog(self, catalog, as_of) -> CatalogResult:
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


def _spark_schema_metadata(schema: list[tuple[str, str]]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, dtype, description=describe(name)) for name, dtype in schema])


class SparkEngine(DataPrepEngine):
    """The phases on Apache Spark in this process (:class:`recsys_assets.spark.runner.SparkStages`).
    ``pyspark`` is dagster-pyspark's lazy session resource (its ``spark_config`` holds ``spark.master`` or
    ``spark.remote``); ``scheme_map`` rewrites storage URLs for Spark's filesystem (``s3`` -> ``s3a`` by
    default; ``s3=s3`` on EMR)."""

    pyspark: LazyPySparkResource
    scheme_map: dict[str, str] = {"s3": "s3a"}

    _stages: typing.Any = PrivateAttr(default=None)

    @property
    def spark(self):
        from ..spark.session import prepare_mode

        prepare_mode(self.pyspark.spark_config or {})
        return self.pyspark.spark_session

    @property
    def stages(self):
        if self._stages is None:
            from ..spark.runner import SparkStages

            self._stages = SparkStages(self.spark, self.scheme_map)
        return self._stages

    def describe(self) -> str:
        conf = self.pyspark.spark_config or {}
        return f"spark ({conf.get('spark.remote') or conf.get('spark.master', 'default master')})"

    def read_files(self, urls: list[str]):
        return self.stages.read(urls)

    def raw_interactions(self, snapshots, day, rules) -> RawResult:
        files = snapshots.files(day)
        return self.stages.raw_interactions(files, day, rules)

    def video_catalog(self, catalog, as_of) -> CatalogResult:
        files = catalog.files()
        return self.stages.video_catalog(files, as_of)

    def filtered_interactions(self, raw, rules) -> Phase1Output:
        return self.stages.filtered_interactions(raw.sources(), rules)

    def item_meta(self, filtered, catalog, min_coverage) -> ItemMetaOutput:
        return self.stages.item_meta(filtered.sources(), catalog.sources(), min_coverage)

    def item_pairs(self, filtered, item_meta, rules) -> PairsOutput:
        return self.stages.item_pairs(filtered.sources(), item_meta.sources(), rules)

    def table_metadata(self, table) -> dict[str, typing.Any]:
        from ..spark.runner import table_summary

        rows, schema, preview = table_summary(table)
        return {
            "dagster/row_count": dg.MetadataValue.int(int(rows or 0)),
            "dagster/column_schema": _spark_schema_metadata(schema),
            "preview": dg.MetadataValue.md(markdown_table(preview, 5)),
        }

    def release(self, *tables) -> None:
        if self._stages is not None:
            self._stages.release()


def engine_resource(
    name: str,
    master: str,
    remote: typing.Optional[str],
    conf: dict,
    scheme_map: dict,
    emr: typing.Optional[typing.Mapping[str, str]] = None,
):
    """The engine resource for ``RECSYS_ENGINE`` and the Spark / EMR settings (see ``settings.py``)."""
    from ..spark.session import spark_config

    if name == "polars":
        return PolarsEngine()
    if name == "spark":
        return SparkEngine(
            pyspark=LazyPySparkResource(spark_config=spark_config(master, remote, conf)), scheme_map=scheme_map
        )
    if name in ("spark-subprocess", "emr-serverless"):
        from .pipes_engine import EmrServerlessLauncher, PipesSparkEngine, SubprocessLauncher

        if name == "spark-subprocess":
            launcher = SubprocessLauncher(spark_conf=spark_config(master, None, conf))
        else:
            emr = dict(emr or {})
            launcher = EmrServerlessLauncher(
                application_id=emr["RECSYS_EMR_APPLICATION_ID"],
                execution_role_arn=emr["RECSYS_EMR_EXECUTION_ROLE_ARN"],
                entry_point=emr["RECSYS_EMR_ENTRY_POINT"],
                spark_submit_parameters=emr.get("RECSYS_EMR_SPARK_SUBMIT_PARAMETERS", ""),
                endpoint_url=emr.get("RECSYS_EMR_ENDPOINT_URL"),
            )
        return PipesSparkEngine(launcher=launcher, scheme_map=scheme_map)
    raise ValueError(f"unknown engine {name!r}")
