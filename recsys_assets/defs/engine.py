"""The engine that runs the data-preparation phases: a resource, chosen per deployment (``RECSYS_ENGINE``).

* :class:`PolarsEngine` (``polars``, the default): one process, the stages of :mod:`recsys_assets.stages`.
* :class:`SparkEngine` (``spark``): the same phases on Apache Spark (:mod:`recsys_assets.spark`), its session
  from ``dagster_pyspark.LazyPySparkResource`` -- local mode, a cluster master, or Spark Connect
  (``spark.remote``) -- built on first use, so runs that never touch Spark pay nothing. Each stage writes its
  own output partitions from the executors (:class:`SparkJobEngine`).
* :class:`~recsys_assets.defs.pipes_engine.PipesSparkEngine` (``spark-subprocess``, ``emr-serverless``): each
  stage as a Spark job launched through Dagster Pipes (a local process, or EMR Serverless via dagster-aws); the
  job writes the partition and reports the rest (see ``pipes_engine.py``).

The assets in ``data_prep.py`` call the engine and report what it returns; they do not know which engine
runs. Inputs arrive as :class:`~recsys_assets.storage.TableRef` (stored files, not rows): polars scans them
lazily, Spark reads the files on its executors. Outputs are a polars frame (the IO manager writes one parquet
object) or a partition the Spark stage stored itself (part files published with a manifest; the IO manager
checks it): either way the same layout, which both engines and every downstream asset read.
"""

from __future__ import annotations

import datetime as dt
import typing

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from ..stages import filtered_interactions as phase1
from ..stages import item_meta as phase2
from ..stages import item_pairs as phase3
from ..stages import raw_interactions as raw_stage
from ..stages.prep_results import CatalogResult, ItemMetaOutput, PairsOutput, Phase1Output, RawResult
from ..storage import StoredPartition, TableRef
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
            result.pairs,
            result.stats,
            phase3.top_pairs(result.pairs),
            phase3.validate(result.pairs, rules.min_num_clients),
        )

    def table_metadata(self, table) -> dict[str, typing.Any]:
        return frame_metadata(table)


def _spark_schema_metadata(schema: list[tuple[str, str]]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, dtype, description=describe(name)) for name, dtype in schema])


class SparkJobEngine(DataPrepEngine):
    """The Spark engines: each stage is one run of :func:`recsys_assets.spark.pipes_job.run_stage` -- in this
    process (:class:`SparkEngine`) or as a job launched through Dagster Pipes
    (:class:`~recsys_assets.defs.pipes_engine.PipesSparkEngine`). The stage writes each output partition into
    the IO manager's store at the IO manager's key (both looked up from the running asset, not configured
    twice) and reports a manifest version per output; the asset yields a
    :class:`~recsys_assets.storage.StoredPartition` and the IO manager checks that the store holds that
    version instead of writing. The rows never pass through this process."""

    scheme_map: dict[str, str] = {"s3": "s3a"}
    """Storage URL rewrites for Spark's filesystem (``s3`` -> ``s3a``; ``s3=s3`` on EMR, whose EMRFS reads
    ``s3://``)."""

    def _execute(
        self, context: dg.AssetExecutionContext, extras: dict[str, typing.Any], name: str
    ) -> tuple[list[typing.Any], tuple[tuple[str, str], ...]]:
        """Run the stage job ``extras``: (the custom messages it reported, launch metadata)."""
        raise NotImplementedError

    def _run(self, stage: str, day: dt.date, inputs: dict[str, list[str]], **params) -> typing.Any:
        from ..spark.pipes_job import OUTPUT_ASSETS, REPORT_KIND, decode_report, frame_from_json, job_params

        context = dg.AssetExecutionContext.get()
        io = context.resources.io_manager  # where the IO manager would store each output: the stage writes there
        pk = context.partition_key
        outputs = {name: io.key_for(dg.AssetKey(asset), pk) for name, asset in OUTPUT_ASSETS[stage].items()}
        extras = job_params(stage, day, inputs, outputs, io.store.url, self.scheme_map, **params)
        messages, launch = self._execute(context, extras, f"recsys_assets {stage} {pk}")
        reports = [m for m in messages if isinstance(m, dict) and m.get("kind") == REPORT_KIND]
        if len(reports) != 1:
            raise dg.Failure(
                f"the {stage} job for {pk} ended without reporting its result ({len(reports)} reports): nothing "
                "is recorded. Its log (CloudWatch for EMR Serverless) says why.",
                metadata={"engine": self.describe()},
                allow_retries=False,  # a launched job is not an IO hiccup: retried by a person, not a policy
            )
        report = reports[0]
        tables = {
            name: StoredPartition(
                w["store_url"],
                w["key"],
                w["version"],
                int(w["rows"]),
                tuple(map(tuple, w["schema"])),
                frame_from_json(w["preview"]),
                launch,
            )
            for name, w in report["outputs"].items()
        }
        return decode_report(report, tables)

    def raw_interactions(self, snapshots, day, rules) -> RawResult:
        files = snapshots.files(day)
        return self._run("raw_interactions", day, {"snapshot": files}, rules=rules)

    def video_catalog(self, catalog, as_of) -> CatalogResult:
        files = catalog.files()
        return self._run("video_catalog", as_of, {"catalog": files})

    def filtered_interactions(self, raw, rules) -> Phase1Output:
        return self._run("filtered_interactions", _day(), {"raw_interactions": raw.sources()}, rules=rules)

    def item_meta(self, filtered, catalog, min_coverage) -> ItemMetaOutput:
        inputs = {"filtered_interactions": filtered.sources(), "video_catalog": catalog.sources()}
        return self._run("item_meta", _day(), inputs, min_coverage=min_coverage)

    def item_pairs(self, filtered, item_meta, rules) -> PairsOutput:
        inputs = {"filtered_interactions": filtered.sources(), "item_meta": item_meta.sources()}
        return self._run("item_pairs", _day(), inputs, rules=rules)

    def table_metadata(self, table: StoredPartition) -> dict[str, typing.Any]:
        return {
            "dagster/row_count": dg.MetadataValue.int(table.rows),
            "dagster/column_schema": _spark_schema_metadata(list(table.schema)),
            "preview": dg.MetadataValue.md(markdown_table(table.preview, 5)),
            "manifest_version": table.version,
            **{k: dg.MetadataValue.text(v) for k, v in table.launch},
        }


def _day() -> dt.date:
    from .partitions import partition_date

    return partition_date(dg.AssetExecutionContext.get())


class SparkEngine(SparkJobEngine):
    """The phases on Apache Spark in this process: each stage is :func:`recsys_assets.spark.pipes_job.run_stage`
    on the session of ``pyspark``, dagster-pyspark's lazy session resource (its ``spark_config`` holds
    ``spark.master`` or ``spark.remote``) -- the same code the Pipes job runs on a cluster's driver."""

    pyspark: LazyPySparkResource

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

    def table_metadata(self, table) -> dict[str, typing.Any]:
        """A stage's stored partition, or a Spark DataFrame the IO manager is about to write (ALS on MLlib):
        its row count, schema and first rows (a count and a limit: the rows stay on the executors)."""
        if isinstance(table, StoredPartition):
            return super().table_metadata(table)
        from ..spark.runner import table_summary

        rows, schema, preview = table_summary(table)
        return {
            "dagster/row_count": dg.MetadataValue.int(int(rows or 0)),
            "dagster/column_schema": _spark_schema_metadata(schema),
            "preview": dg.MetadataValue.md(markdown_table(preview, 5)),
        }

    def _execute(self, context, extras, name):
        from ..spark.pipes_job import parse_params, run_stage

        return [run_stage(self.spark, parse_params(extras), log=context.log.info)], ()


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
