"""The Spark job of the ``pipes`` engine: one data-preparation stage of one day, run on a cluster's driver.

Launched through Dagster Pipes -- on EMR Serverless by dagster-aws's ``PipesEMRServerlessClient`` (its entry
point is this file of the installed package), or locally by ``PipesSubprocessClient``. The launching asset
passes everything in the Pipes extras (:func:`job_params`): the stage, the day, the input files, the rules,
where each output goes (the IO manager's store and keys) and Spark's scheme map. The job

1. runs the stage with :class:`~recsys_assets.spark.runner.SparkStages` -- the same code as the in-process
   ``spark`` engine;
2. writes each output partition itself (executors write the parts, the manifest publishes them:
   :func:`~recsys_assets.spark.io.write_partition`), so the rows never pass through Dagster's process;
3. reports the stage's statistics, check verdicts and each output's manifest version, row count, schema and
   preview as one Pipes custom message (:func:`encode_report`), which the asset turns into its metadata and
   check results. Logs go to the Dagster run through Pipes.

No Dagster imports beyond ``dagster_pipes`` (the only Dagster package an EMR image needs besides this one).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing

import polars as pl

# absolute imports: EMR runs this file as a script (``entryPoint``) of the installed package
from recsys_assets.stages import filtered_interactions as phase1
from recsys_assets.stages import item_pairs as phase3
from recsys_assets.stages import raw_interactions as raw_stage
from recsys_assets.stages.prep_results import CatalogResult, ItemMetaOutput, PairsOutput, Phase1Output, RawResult
from recsys_assets.storage import open_store

STAGES = ("raw_interactions", "video_catalog", "filtered_interactions", "item_meta", "item_pairs")
REPORT_KIND = "recsys_assets.stage_report"
"""The ``kind`` of the custom message that carries a stage's report (any other message is not a report)."""

OUTPUT_ASSETS: dict[str, dict[str, str]] = {
    "raw_interactions": {"clean": "raw_interactions", "quarantine": "raw_interactions_quarantine"},
    "video_catalog": {"table": "video_catalog"},
    "filtered_interactions": {"table": "filtered_interactions"},
    "item_meta": {"table": "item_meta"},
    "item_pairs": {"table": "item_pairs"},
}
"""Each stage's outputs and the assets they are stored as."""
_RULES: dict[str, type] = {
    "raw_interactions": raw_stage.SnapshotRules,
    "filtered_interactions": phase1.Phase1Rules,
    "item_pairs": phase3.PairRules,
}
_INPUTS: dict[str, tuple[str, ...]] = {
    "raw_interactions": ("snapshot",),
    "video_catalog": ("catalog",),
    "filtered_interactions": ("raw_interactions",),
    "item_meta": ("filtered_interactions", "video_catalog"),
    "item_pairs": ("filtered_interactions", "item_meta"),
}
_OUTPUTS: dict[str, tuple[str, ...]] = {stage: tuple(outputs) for stage, outputs in OUTPUT_ASSETS.items()}


class JobParamsError(ValueError):
    """The extras do not describe a job this entry point can run."""


def job_params(
    stage: str,
    day: dt.date,
    inputs: typing.Mapping[str, typing.Sequence[str]],
    outputs: typing.Mapping[str, str],
    store_url: str,
    scheme_map: typing.Mapping[str, str],
    rules: typing.Any = None,
    min_coverage: float | None = None,
    spark_conf: typing.Mapping[str, str] | None = None,
) -> dict[str, typing.Any]:
    """The Pipes extras of one job, checked by :func:`parse_params` (the same code the job runs)."""
    params = {
        "stage": stage,
        "day": day.isoformat(),
        "inputs": {k: list(v) for k, v in inputs.items()},
        "outputs": dict(outputs),
        "store_url": store_url,
        "scheme_map": dict(scheme_map),
        "rules": dataclasses.asdict(rules) if rules is not None else None,
        "min_coverage": min_coverage,
        "spark_conf": dict(spark_conf or {}),
    }
    parse_params(params)
    return params


@dataclasses.dataclass(frozen=True)
class Params:
    stage: str
    day: dt.date
    inputs: dict[str, list[str]]
    outputs: dict[str, str]
    store_url: str
    scheme_map: dict[str, str]
    rules: typing.Any
    min_coverage: float | None
    spark_conf: dict[str, str]


def parse_params(extras: typing.Mapping[str, typing.Any]) -> Params:
    """Validate the extras; a wrong or missing field raises :class:`JobParamsError` naming it."""
    stage = extras.get("stage")
    if stage not in STAGES:
        raise JobParamsError(f"stage must be one of {STAGES}, not {stage!r}")
    try:
        day = dt.date.fromisoformat(str(extras.get("day")))
    except ValueError:
        raise JobParamsError(f"day must be an ISO date, not {extras.get('day')!r}") from None
    inputs = extras.get("inputs") or {}
    for name in _INPUTS[stage]:
        urls = inputs.get(name)
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
            raise JobParamsError(f"{stage}: input {name!r} must be a non-empty list of file URLs")
    outputs = extras.get("outputs") or {}
    if set(outputs) != set(_OUTPUTS[stage]) or not all(isinstance(k, str) and k for k in outputs.values()):
        raise JobParamsError(f"{stage}: outputs must map {_OUTPUTS[stage]} to storage keys, got {outputs!r}")
    store_url = extras.get("store_url")
    if not isinstance(store_url, str) or not store_url:
        raise JobParamsError("store_url is required")
    rules_type = _RULES.get(stage)
    rules = None
    if rules_type is not None:
        try:
            rules = rules_type(**(extras.get("rules") or {}))
        except TypeError as e:
            raise JobParamsError(f"{stage}: bad rules: {e}") from None
    min_coverage = extras.get("min_coverage")
    if stage == "item_meta" and not isinstance(min_coverage, (int, float)):
        raise JobParamsError("item_meta: min_coverage is required")
    return Params(
        stage,
        day,
        {k: list(v) for k, v in inputs.items()},
        dict(outputs),
        store_url,
        dict(extras.get("scheme_map") or {}),
        rules,
        float(min_coverage) if min_coverage is not None else None,
        {str(k): str(v) for k, v in (extras.get("spark_conf") or {}).items()},
    )


def frame_to_json(df: pl.DataFrame) -> dict[str, typing.Any]:
    return {"columns": df.columns, "rows": [list(r) for r in df.rows()]}


def frame_from_json(data: typing.Mapping[str, typing.Any]) -> pl.DataFrame:
    return pl.DataFrame(data["rows"], schema=data["columns"], orient="row")


def _json_safe(value: typing.Any) -> typing.Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def encode_report(stage: str, result: typing.Any, written: dict[str, dict[str, typing.Any]]) -> dict[str, typing.Any]:
    """The stage's result as JSON-safe data, its tables replaced by what was ``written`` (per output)."""
    report: dict[str, typing.Any] = {"kind": REPORT_KIND, "stage": stage, "outputs": written}
    if isinstance(result, RawResult):
        report.update(rows_in=result.rows_in, summary=dataclasses.asdict(result.summary))
    elif isinstance(result, CatalogResult):
        report.update(by_language=frame_to_json(result.by_language), uploaded_on_day=result.uploaded_on_day)
    elif isinstance(result, ItemMetaOutput):
        report.update(
            missing_count=result.missing_count,
            missing_sample=list(result.missing_sample),
            coverage=float(result.coverage),
            by_language=frame_to_json(result.by_language),
        )
    elif isinstance(result, PairsOutput):
        report.update(stats=result.stats, top=frame_to_json(result.top))
    elif isinstance(result, Phase1Output):
        report.update(stats=result.stats)
    if not isinstance(result, RawResult):
        report["verdicts"] = {k: [bool(p), md] for k, (p, md) in result.verdicts.items()}
    return _json_safe(report)


def decode_report(report: typing.Mapping[str, typing.Any], tables: typing.Mapping[str, typing.Any]) -> typing.Any:
    """The stage's result back from :func:`encode_report`, with ``tables`` (per output) as its tables."""
    stage = report["stage"]
    verdicts = {k: (bool(p), dict(md)) for k, (p, md) in (report.get("verdicts") or {}).items()}
    if stage == "raw_interactions":
        summary = raw_stage.DaySummary(**report["summary"])
        return RawResult(tables["clean"], tables["quarantine"], int(report["rows_in"]), summary)
    if stage == "video_catalog":
        return CatalogResult(
            tables["table"], frame_from_json(report["by_language"]), int(report["uploaded_on_day"]), verdicts
        )
    if stage == "filtered_interactions":
        return Phase1Output(tables["table"], dict(report["stats"]), verdicts)
    if stage == "item_meta":
        return ItemMetaOutput(
            tables["table"],
            int(report["missing_count"]),
            list(report["missing_sample"]),
            float(report["coverage"]),
            frame_from_json(report["by_language"]),
            verdicts,
        )
    if stage == "item_pairs":
        return PairsOutput(tables["table"], dict(report["stats"]), frame_from_json(report["top"]), verdicts)
    raise JobParamsError(f"unknown stage {stage!r} in the report")


def run_stage(spark, params: Params, log: typing.Callable[[str], None] = print) -> dict[str, typing.Any]:
    """Run ``params``' stage on ``spark``; the stage writes each output (the executors write the parts, the
    manifest publishes them) and this returns the report (:func:`encode_report`)."""
    from recsys_assets.spark.io import read_partitions, write_partition
    from recsys_assets.spark.runner import SparkStages, table_summary

    stages = SparkStages(spark, params.scheme_map)
    store = open_store(params.store_url)
    written: dict[str, dict[str, typing.Any]] = {}

    def write(name: str, df):
        key = params.outputs[name]
        manifest = write_partition(df, store, key, params.scheme_map)
        stored = read_partitions(spark, store, [key], params.scheme_map)  # the preview reads stored rows
        _, schema, preview = table_summary(stored, count=False)
        written[name] = {
            "store_url": store.url,
            "key": key,
            "version": manifest["version"],
            "rows": int(manifest["rows"]),
            "schema": schema,
            "preview": frame_to_json(preview),
        }
        log(f"{params.stage}: wrote {name} ({manifest['rows']} rows) to {store.url}/{key} v{manifest['version']}")
        return stored

    i = params.inputs
    try:
        if params.stage == "raw_interactions":
            result = stages.raw_interactions(i["snapshot"], params.day, params.rules, write)
        elif params.stage == "video_catalog":
            result = stages.video_catalog(i["catalog"], params.day, write)
        elif params.stage == "filtered_interactions":
            result = stages.filtered_interactions(i["raw_interactions"], params.rules, write)
        elif params.stage == "item_meta":
            result = stages.item_meta(i["filtered_interactions"], i["video_catalog"], params.min_coverage, write)
        else:
            result = stages.item_pairs(i["filtered_interactions"], i["item_meta"], params.rules, write)
    finally:
        stages.release()
    return encode_report(params.stage, result, written)


def main() -> None:
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        params = parse_params(pipes.extras)
        from pyspark.sql import SparkSession

        from recsys_assets.spark.session import BASE_CONF, prepare_mode

        builder = SparkSession.builder.appName(f"recsys_assets {params.stage} {params.day}")
        # BASE_CONF is the storage contract (UTC, microsecond timestamps), on every cluster; then the launcher's
        # settings (a local master; on a cluster spark-submit has set the master)
        conf = {**BASE_CONF, **params.spark_conf}
        # the job is a classic driver whatever environment launched it (a parent process that had made a Spark
        # Connect session passes on pyspark's Connect-only mark, and getOrCreate then refuses)
        prepare_mode(conf)
        for k, v in conf.items():
            builder = builder.config(k, v)
        spark = builder.getOrCreate()
        pipes.log.info(f"{params.stage} {params.day} on Spark {spark.version} ({spark.sparkContext.master})")
        report = run_stage(spark, params, log=pipes.log.info)
        pipes.report_custom_message(report)


if __name__ == "__main__":
    main()
