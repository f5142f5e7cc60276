"""The code location: assets, checks, jobs, schedules and resources.

Resources are chosen by environment variables (read when the code location loads), so the same
graph runs on the embedded simulator, on local files, or on S3 -- no code change, no test branch:

==============================  =====================================================================
``RECSYS_DATA_DIR``             local working folder (default ``.recsys_data``)
``RECSYS_STORAGE_URL``          where assets are stored: a path or ``s3://bucket/prefix``
                                (default ``$RECSYS_DATA_DIR/assets``)
``RECSYS_S3_ENDPOINT_URL``      an S3-compatible endpoint (optional; AWS itself when unset)
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_REGION``  S3 credentials (read via EnvVar)
``RECSYS_SOURCE``               ``simulator`` (default) or ``lake``
``RECSYS_SIM_PROFILE``          ``demo`` (default), ``tiny`` or ``bench``
``RECSYS_SIM_SEED``             the simulator's seed (default 7)
``RECSYS_SIM_ROOT``             where the simulator publishes (default ``$RECSYS_DATA_DIR/platform``)
``RECSYS_SNAPSHOT_URL_TEMPLATE``  lake: daily snapshot folder, e.g. ``s3://josh-recsys/snapshot/dt={date}/``
``RECSYS_CATALOG_URI``          lake: the video catalog Delta table, e.g. ``s3://josh-meta/video``
``RECSYS_START_DATE``           first daily partition (default 2026-11-01)
``RECSYS_ALS_THREADS``          threads for the ALS solver (default 0 = all cores)
``RECSYS_IMAGE_MODEL``          open_clip architecture (default ``recsys-ViT-tiny-16``, random weights)
``RECSYS_IMAGE_PRETRAINED``     open_clip pretrained tag or checkpoint path/URL (unset = random weights)
``RECSYS_AUDIO_MODEL``          Whisper size: tiny/base/small/medium/large-v3 (default ``random-small``)
``RECSYS_AUDIO_CHECKPOINT``     Whisper checkpoint path/URL, openai ``.pt`` or ``.safetensors`` (unset = random)
``RECSYS_DEVICE``               ``auto`` (default: CUDA when present), ``cpu``, ``cuda``
``RECSYS_MEDIA_ALLOWED_SCHEMES``  comma list for download_url (default ``file,s3,https``)
``RECSYS_MEDIA_ALLOWED_HOSTS``  comma list of http(s) hosts / s3 buckets media may come from
``RECSYS_MEDIA_ALLOWED_ROOTS``  comma list of local folders file:// media may come from
                                (simulator: its media folder is always allowed)
==============================  =====================================================================
"""

import os
import typing
from pathlib import Path

import dagster as dg

from .defs.cold_start import COLD_START_ASSETS
from .defs.collaborative import COLLABORATIVE_ASSETS
from .defs.content import CONTENT_ASSETS
from .defs.data_prep import DATA_PREP_ASSETS, GROUP
from .defs.io_manager import PolarsParquetIOManager, SafetensorsIOManager
from .defs.partitions import daily_partitions
from .defs.resources import (
    AlsEngineResource,
    ContentModelsResource,
    DeltaCatalogSource,
    EmbeddingCacheResource,
    MediaFetchResource,
    ParquetSnapshotSource,
    ReportStoreResource,
    SimulatedCatalogSource,
    SimulatedPlatformResource,
    SimulatedSnapshotSource,
    SimulatedTruthResource,
    TruthResource,
)
from .defs.retrieval import REPORT_ASSETS, RETRIEVAL_ASSETS
from .defs.s3 import S3Config


def _env_or_none(env: typing.Mapping[str, str], name: str) -> typing.Optional[dg.EnvVar]:
    return dg.EnvVar(name) if env.get(name) else None


def build_resources(env: typing.Mapping[str, str] = os.environ) -> dict[str, typing.Any]:
    data_dir = Path(env.get("RECSYS_DATA_DIR", ".recsys_data")).resolve()
    s3 = S3Config(
        endpoint_url=_env_or_none(env, "RECSYS_S3_ENDPOINT_URL"),
        aws_access_key_id=_env_or_none(env, "AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_env_or_none(env, "AWS_SECRET_ACCESS_KEY"),
        region_name=_env_or_none(env, "AWS_REGION"),
    )

    def csv(name: str, default: str = "") -> list[str]:
        return [v.strip() for v in env.get(name, default).split(",") if v.strip()]

    media_roots = csv("RECSYS_MEDIA_ALLOWED_ROOTS")
    source = env.get("RECSYS_SOURCE", "simulator")
    if source == "simulator":
        sim = SimulatedPlatformResource(
            profile=env.get("RECSYS_SIM_PROFILE", "demo"),
            seed=int(env.get("RECSYS_SIM_SEED", "7")),
            root=env.get("RECSYS_SIM_ROOT", str(data_dir / "platform")),
        )
        snapshots, catalog = SimulatedSnapshotSource(simulator=sim), SimulatedCatalogSource(simulator=sim)
        truth: TruthResource = SimulatedTruthResource(simulator=sim)
        media_roots.append(str(Path(sim.root).resolve() / "media"))
    elif source == "lake":
        missing = [n for n in ("RECSYS_SNAPSHOT_URL_TEMPLATE", "RECSYS_CATALOG_URI") if not env.get(n)]
        if missing:
            raise ValueError(f"RECSYS_SOURCE=lake needs {', '.join(missing)}")
        snapshots = ParquetSnapshotSource(url_template=env["RECSYS_SNAPSHOT_URL_TEMPLATE"], s3=s3)
        catalog = DeltaCatalogSource(table_uri=env["RECSYS_CATALOG_URI"], s3=s3)
        truth = TruthResource()
    else:
        raise ValueError(f"RECSYS_SOURCE must be 'simulator' or 'lake', not {source!r}")
    storage_url = env.get("RECSYS_STORAGE_URL", str(data_dir / "assets"))
    return {
        "io_manager": PolarsParquetIOManager(base_url=storage_url, s3=s3),
        "model_io_manager": SafetensorsIOManager(base_url=storage_url, s3=s3),
        "snapshots": snapshots,
        "catalog": catalog,
        "als_engine": AlsEngineResource(num_threads=int(env.get("RECSYS_ALS_THREADS", "0"))),
        "media_fetch": MediaFetchResource(
            allowed_schemes=csv("RECSYS_MEDIA_ALLOWED_SCHEMES", "file,s3,https"),
            allowed_hosts=csv("RECSYS_MEDIA_ALLOWED_HOSTS"),
            allowed_roots=media_roots,
            s3=s3,
        ),
        "content_models": ContentModelsResource(
            image_model=env.get("RECSYS_IMAGE_MODEL", ContentModelsResource.model_fields["image_model"].default),
            image_pretrained=env.get("RECSYS_IMAGE_PRETRAINED") or None,
            audio_model=env.get("RECSYS_AUDIO_MODEL", ContentModelsResource.model_fields["audio_model"].default),
            audio_checkpoint=env.get("RECSYS_AUDIO_CHECKPOINT") or None,
            device=env.get("RECSYS_DEVICE", "auto"),
            s3=s3,
        ),
        "truth": truth,
        "reports": ReportStoreResource(base_url=storage_url.rstrip("/") + "/reports", s3=s3),
        "embedding_cache": EmbeddingCacheResource(
            base_url=storage_url.rstrip("/") + "/_cache/item_content_embeddings", s3=s3
        ),
    }


data_prep_job = dg.define_asset_job(
    "data_prep_job",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=daily_partitions,
    description="Seed 000 phases 1-3 for one day: snapshot -> filtered interactions -> item meta -> item pairs.",
)


daily_job = dg.define_asset_job(
    "daily_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets(*REPORT_ASSETS),
    partitions_def=daily_partitions,
    description="Every daily asset for one day, in dependency order (what the daily schedule runs).",
)


report_job = dg.define_asset_job(
    "report_job",
    selection=dg.AssetSelection.assets(*REPORT_ASSETS),
    description="The experiment table across every evaluated day (not partitioned).",
)


def build_definitions(env: typing.Mapping[str, str] = os.environ) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            *DATA_PREP_ASSETS,
            *COLLABORATIVE_ASSETS,
            *CONTENT_ASSETS,
            *COLD_START_ASSETS,
            *RETRIEVAL_ASSETS,
            *REPORT_ASSETS,
        ],
        jobs=[daily_job, data_prep_job, report_job],
        schedules=[dg.build_schedule_from_partitioned_job(daily_job, hour_of_day=3)],
        resources=build_resources(env),
    )


defs = build_definitions()
