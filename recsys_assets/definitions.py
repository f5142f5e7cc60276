"""The code location: assets, checks, jobs, schedules and resources.

Everything deployment-specific comes from one :class:`~recsys_assets.settings.Settings` object, read from
the environment when the code location loads (the variables are listed in ``settings.py``), so the same
graph runs on the embedded simulator, on local files, or on S3 -- no code change, no test branch.
``build_definitions(env)`` builds the whole location for any mapping of those variables.
"""

import os
import typing
from pathlib import Path

import dagster as dg

from .defs import cold_start, collaborative, content, conventions, data_prep, retrieval, serving
from .defs.automation import NotifierResource, build_freshness, build_snapshot_sensor, run_failure_notifier
from .defs.engine import engine_resource
from .defs.instance import dead_run_sensor
from .defs.io_manager import MODEL_IO, PolarsParquetIOManager, SafetensorsIOManager
from .defs.partitions import daily_partitions
from .defs.resources import (
    AlsEngineResource,
    ContentModelsResource,
    DeltaCatalogSource,
    EmbeddingCacheResource,
    GeneratedContentResource,
    MediaFetchResource,
    ParquetSnapshotSource,
    ReportStoreResource,
    SimulatedCatalogSource,
    SimulatedPlatformResource,
    SimulatedSnapshotSource,
    SimulatedTruthResource,
    TruthResource,
    TwoTowerRulesResource,
)
from .defs.s3 import S3Resource
from .settings import Settings
from .simulator.profiles import get_profile

Env = typing.Mapping[str, str]


def _settings(env: "Env | Settings") -> Settings:
    return env if isinstance(env, Settings) else Settings.from_env(env)


def build_resources(env: "Env | Settings" = os.environ) -> dict[str, typing.Any]:
    """Every resource of the location, chosen by the settings (source, storage, models, allowlists)."""
    settings = _settings(env)

    def from_env(name: str) -> typing.Optional[dg.EnvVar]:
        return dg.EnvVar(name) if name in settings.s3_env_set else None

    # dagster-aws's S3Resource: the one place S3 clients and credentials come from (see defs/s3.py)
    s3 = S3Resource(
        endpoint_url=from_env("RECSYS_S3_ENDPOINT_URL"),
        aws_access_key_id=from_env("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=from_env("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=from_env("AWS_SESSION_TOKEN"),
        region_name=from_env("AWS_REGION"),
    )
    media_roots = list(settings.media_allowed_roots)
    truth: TruthResource
    if settings.source == "simulator":
        sim = SimulatedPlatformResource(profile=settings.sim_profile, seed=settings.sim_seed, root=settings.sim_root)
        snapshots, catalog = SimulatedSnapshotSource(simulator=sim), SimulatedCatalogSource(simulator=sim)
        truth = SimulatedTruthResource(simulator=sim)
        media_roots.append(str(Path(sim.root).resolve() / "media"))
    else:
        snapshots = ParquetSnapshotSource(url_template=settings.snapshot_url_template, s3=s3)
        catalog = DeltaCatalogSource(table_uri=settings.catalog_uri, s3=s3)
        truth = TruthResource()
    models = {k: v for k, v in (("image_model", settings.image_model), ("audio_model", settings.audio_model)) if v}
    content_models = ContentModelsResource(
        **models,
        image_pretrained=settings.image_pretrained,
        audio_checkpoint=settings.audio_checkpoint,
        device=settings.device,
        s3=s3,
    )
    if settings.source == "simulator" and not get_profile(settings.sim_profile).media:
        # a platform without videos (the scale profile): content vectors generated from its true content
        content_models = GeneratedContentResource(simulator=sim, device=settings.device)
    storage_url = settings.storage_url
    prep_engine = engine_resource(
        settings.engine,
        settings.spark_master,
        settings.spark_remote,
        dict(settings.spark_conf),
        dict(settings.spark_scheme_map),
        settings.emr,
    )
    return {
        "s3": s3,
        "io_manager": PolarsParquetIOManager(
            base_url=storage_url, s3=s3, spark_scheme_map=dict(settings.spark_scheme_map)
        ),
        "prep_engine": prep_engine,
        MODEL_IO: SafetensorsIOManager(base_url=storage_url, s3=s3),
        "snapshots": snapshots,
        "catalog": catalog,
        "als_engine": AlsEngineResource(
            name="mllib" if settings.engine == "spark" else "implicit",
            num_threads=settings.als_threads,
            spark=prep_engine if settings.engine == "spark" else None,
        ),
        "media_fetch": MediaFetchResource(
            allowed_schemes=list(settings.media_allowed_schemes),
            allowed_hosts=list(settings.media_allowed_hosts),
            allowed_roots=media_roots,
            allowed_networks=list(settings.media_allowed_networks),
            s3=s3,
        ),
        "content_models": content_models,
        "truth": truth,
        "two_tower_rules": TwoTowerRulesResource(),
        "reports": ReportStoreResource(base_url=storage_url.rstrip("/") + "/reports", s3=s3),
        "embedding_cache": EmbeddingCacheResource(
            base_url=storage_url.rstrip("/") + "/_cache/item_content_embeddings", s3=s3
        ),
        "notifier": NotifierResource(log_path=settings.notify_log, webhook_url=settings.notify_webhook),
    }


def build_definitions(env: "Env | Settings" = os.environ) -> dg.Definitions:
    """The code location for one deployment: partitions from ``RECSYS_START_DATE``, resources as above."""
    settings = _settings(env)
    partitions = daily_partitions(settings.start_date)
    data_prep_assets = conventions.apply(data_prep.build_assets(partitions))
    daily_assets = [
        *data_prep_assets,
        *conventions.apply(
            [
                *collaborative.build_assets(partitions),
                *content.build_assets(partitions),
                *cold_start.build_assets(partitions),
                *retrieval.build_assets(partitions),
                *serving.build_assets(partitions),
            ]
        ),
    ]
    report_assets = conventions.apply(retrieval.REPORT_ASSETS)
    freshness_checks, freshness_sensor = build_freshness(daily_assets, settings.model_freshness_hours)
    daily_job = dg.define_asset_job(
        "daily_job",
        # freshness is judged by its sensor against the clock, not inside a run of some (maybe past) day
        selection=dg.AssetSelection.assets(*daily_assets) - dg.AssetSelection.checks(*freshness_checks),
        partitions_def=partitions,
        description="Every daily asset for one day, in dependency order (what the daily schedule runs).",
    )
    jobs = [
        daily_job,
        dg.define_asset_job(
            "data_prep_job",
            selection=dg.AssetSelection.assets(*data_prep_assets),
            partitions_def=partitions,
            description="Seed 000 phases 1-3 for one day: snapshot -> filtered interactions -> item meta -> pairs.",
        ),
        dg.define_asset_job(
            "report_job",
            selection=dg.AssetSelection.assets(*report_assets),
            description="The experiment table across every evaluated day (not partitioned).",
        ),
    ]
    resources = build_resources(settings)
    sources = data_prep.source_specs(
        partitions, resources["snapshots"].describe_template(), resources["catalog"].describe()
    )
    return dg.Definitions(
        assets=[*sources, *daily_assets, *report_assets],
        asset_checks=freshness_checks,
        jobs=jobs,
        schedules=[dg.build_schedule_from_partitioned_job(daily_job, hour_of_day=3)],
        sensors=[
            build_snapshot_sensor(daily_job, partitions, settings.sensor_lookback_days),
            freshness_sensor,
            run_failure_notifier,
            dead_run_sensor,
        ],
        resources=resources,
        executor=dg.in_process_executor if settings.executor == "in_process" else dg.multiprocess_executor,
    )


defs = build_definitions()
