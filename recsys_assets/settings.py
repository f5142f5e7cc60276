"""Deployment settings: every environment variable the project reads, read once, in one place.

``Settings.from_env(env)`` parses a mapping (``os.environ`` by default); ``definitions.py`` builds the
partitions and the resources from it and ``cli.py`` uses the same object, so no other module reads the
environment. Secrets are the exception by design: AWS keys are never copied into config, the resources
read them through ``dg.EnvVar`` at run time (see ``definitions.py``).

==================================  =====================================================================
``RECSYS_DATA_DIR``                 local working folder (default ``.recsys_data``)
``RECSYS_STORAGE_URL``              where assets are stored: a path or ``s3://bucket/prefix``
                                    (default ``$RECSYS_DATA_DIR/assets``)
``RECSYS_S3_ENDPOINT_URL``          an S3-compatible endpoint (optional; AWS itself when unset)
``AWS_ACCESS_KEY_ID`` /             S3 credentials (read via ``dg.EnvVar`` into the ``s3`` resource,
``AWS_SECRET_ACCESS_KEY`` /         dagster-aws's ``S3Resource``; unset = the default chain)
``AWS_SESSION_TOKEN`` /
``AWS_REGION``
``RECSYS_SOURCE``                   ``simulator`` (default) or ``lake``
``RECSYS_SIM_PROFILE``              ``demo`` (default), ``tiny`` or ``bench``
``RECSYS_SIM_SEED``                 the simulator's seed (default 7)
``RECSYS_SIM_ROOT``                 where the simulator publishes (default ``$RECSYS_DATA_DIR/platform``)
``RECSYS_SNAPSHOT_URL_TEMPLATE``    lake: daily snapshot folder, e.g. ``s3://josh-recsys/snapshot/dt={date}/``
``RECSYS_CATALOG_URI``              lake: the video catalog Delta table, e.g. ``s3://josh-meta/video``
``RECSYS_START_DATE``               first daily partition (default 2026-11-01)
``RECSYS_ALS_THREADS``              threads for the ALS solver (default 0 = all cores)
``RECSYS_IMAGE_MODEL``              open_clip architecture (default ``recsys-ViT-tiny-16``, random weights)
``RECSYS_IMAGE_PRETRAINED``         open_clip pretrained tag or checkpoint path/URL (unset = random weights)
``RECSYS_AUDIO_MODEL``              Whisper size: tiny/base/small/medium/large-v3 (default ``random-small``)
``RECSYS_AUDIO_CHECKPOINT``         Whisper checkpoint path/URL, openai ``.pt`` or ``.safetensors`` (unset = random)
``RECSYS_DEVICE``                   ``auto`` (default: CUDA when present), ``cpu``, ``cuda``
``RECSYS_MEDIA_ALLOWED_SCHEMES``    comma list for download_url (default ``file,s3,https``)
``RECSYS_MEDIA_ALLOWED_HOSTS``      comma list of http(s) hosts / s3 buckets media may come from
``RECSYS_MEDIA_ALLOWED_ROOTS``      comma list of local folders file:// media may come from
                                    (simulator: its media folder is always allowed)
``RECSYS_MEDIA_ALLOWED_NETWORKS``   comma list of CIDRs an allowed media host may resolve into although
                                    not public (an internal CDN); loopback/private/link-local are refused
                                    otherwise, metadata endpoints always
``RECSYS_EXECUTOR``                 ``in_process`` (default: a run's steps in its one process; a backfill's runs are
                                    mostly one asset each, so a process per step would only add start-up)
                                    or ``multiprocess`` (a process per step, independent steps in parallel)
``RECSYS_SENSOR_LOOKBACK_DAYS``     days (up to the last partition) the snapshot sensor watches (default 14)
``RECSYS_MODEL_FRESHNESS_HOURS``    a model of day D is overdue at D+1 this hour, UTC (default 6)
``RECSYS_NOTIFY_LOG``               failed-run notices, one JSON line each (default
                                    ``$RECSYS_DATA_DIR/notifications.jsonl``)
``RECSYS_NOTIFY_WEBHOOK``           also POST each notice there (Slack-style ``{"text": ...}``; optional)
``RECSYS_ENGINE``                   ``polars`` (default: the data-preparation phases in the run's process),
                                    ``spark`` (on Apache Spark from the run's process), ``spark-subprocess``
                                    or ``emr-serverless`` (each stage a Spark job launched through Dagster
                                    Pipes, locally or on EMR Serverless; see README "Running at scale")
``RECSYS_SPARK_MASTER``             the Spark master (default ``local[*]``): ``spark://...``, ``yarn``, ``k8s://...``
``RECSYS_SPARK_REMOTE``             ``sc://host:port``: Spark Connect instead of a master (Databricks, EMR, ...)
``RECSYS_SPARK_CONF``               extra Spark settings, ``key=value`` comma separated
``RECSYS_SPARK_SCHEME_MAP``         storage scheme -> Spark filesystem scheme (default ``s3=s3a``; ``s3=s3`` on EMR)
``RECSYS_EMR_APPLICATION_ID``       ``emr-serverless``: the EMR Serverless application (a Spark application)
``RECSYS_EMR_EXECUTION_ROLE_ARN``   ``emr-serverless``: the job's IAM role
``RECSYS_EMR_ENTRY_POINT``          ``emr-serverless``: ``recsys_assets/spark/pipes_job.py`` of the package installed
                                    in the application's image (``local:///...``) or a copy on S3
``RECSYS_EMR_SPARK_SUBMIT_PARAMETERS`` ``emr-serverless``: extra spark-submit parameters (optional)
``RECSYS_EMR_ENDPOINT_URL``         ``emr-serverless``: another EMR Serverless/CloudWatch endpoint (tests: moto)
``DAGSTER_HOME``                    the Dagster instance of ``recsys-assets`` (default ``./.dagster_home``)
==================================  =====================================================================
"""

import dataclasses
import datetime as dt
import os
import typing
from pathlib import Path

from .spark.session import parse_conf, parse_scheme_map

SOURCES = ("simulator", "lake")
ENGINES = ("polars", "spark", "spark-subprocess", "emr-serverless")
EMR_ENV = (
    "RECSYS_EMR_APPLICATION_ID",
    "RECSYS_EMR_EXECUTION_ROLE_ARN",
    "RECSYS_EMR_ENTRY_POINT",
    "RECSYS_EMR_SPARK_SUBMIT_PARAMETERS",
    "RECSYS_EMR_ENDPOINT_URL",
)
S3_ENV = ("RECSYS_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path
    storage_url: str
    source: str
    sim_profile: str
    sim_seed: int
    sim_root: str
    snapshot_url_template: typing.Optional[str]
    catalog_uri: typing.Optional[str]
    start_date: dt.date
    als_threads: int
    image_model: typing.Optional[str]
    """None = the content_models resource's default (a tiny architecture with random weights)."""
    image_pretrained: typing.Optional[str]
    audio_model: typing.Optional[str]
    """None = the content_models resource's default (``random-small``)."""
    audio_checkpoint: typing.Optional[str]
    device: str
    media_allowed_schemes: tuple[str, ...]
    media_allowed_hosts: tuple[str, ...]
    media_allowed_roots: tuple[str, ...]
    media_allowed_networks: tuple[str, ...]
    executor: str
    sensor_lookback_days: int
    model_freshness_hours: int
    notify_log: str
    notify_webhook: typing.Optional[str]
    engine: str
    spark_master: str
    spark_remote: typing.Optional[str]
    spark_conf: dict[str, str]
    spark_scheme_map: dict[str, str]
    emr: dict[str, str]
    """The ``RECSYS_EMR_*`` variables that are set (``emr-serverless`` engine)."""
    s3_env_set: tuple[str, ...]
    """Which of :data:`S3_ENV` are set (their values are read at run time through ``dg.EnvVar``)."""
    dagster_home: Path

    @classmethod
    def from_env(cls, env: typing.Mapping[str, str] = os.environ) -> "Settings":
        """Parse and validate; a wrong value raises ``ValueError`` naming the variable."""
        data_dir = Path(env.get("RECSYS_DATA_DIR", ".recsys_data")).resolve()
        source = env.get("RECSYS_SOURCE", "simulator")
        if source not in SOURCES:
            raise ValueError(f"RECSYS_SOURCE must be 'simulator' or 'lake', not {source!r}")
        if source == "lake":
            missing = [n for n in ("RECSYS_SNAPSHOT_URL_TEMPLATE", "RECSYS_CATALOG_URI") if not env.get(n)]
            if missing:
                raise ValueError(f"RECSYS_SOURCE=lake needs {', '.join(missing)}")

        def integer(name: str, default: int) -> int:
            try:
                return int(env.get(name, default))
            except ValueError:
                raise ValueError(f"{name} must be an integer, not {env[name]!r}") from None

        try:
            start = dt.date.fromisoformat(env.get("RECSYS_START_DATE", "2026-11-01"))
        except ValueError:
            raise ValueError(f"RECSYS_START_DATE must be YYYY-MM-DD, not {env['RECSYS_START_DATE']!r}") from None
        executor = env.get("RECSYS_EXECUTOR", "in_process")
        if executor not in ("in_process", "multiprocess"):
            raise ValueError(f"RECSYS_EXECUTOR must be 'in_process' or 'multiprocess', not {executor!r}")
        engine = env.get("RECSYS_ENGINE", "polars")
        if engine not in ENGINES:
            raise ValueError(f"RECSYS_ENGINE must be one of {', '.join(ENGINES)}, not {engine!r}")
        emr = {k: env[k] for k in EMR_ENV if env.get(k)}
        if engine == "emr-serverless":
            missing = [k for k in EMR_ENV[:3] if k not in emr]
            if missing:
                raise ValueError(f"RECSYS_ENGINE=emr-serverless needs {', '.join(missing)}")

        def named(name: str, parse: typing.Callable[[str], dict[str, str]], default: str = "") -> dict[str, str]:
            try:
                return parse(env.get(name, default))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None

        if env.get("RECSYS_SPARK_REMOTE") and not env["RECSYS_SPARK_REMOTE"].startswith("sc://"):
            raise ValueError(f"RECSYS_SPARK_REMOTE must be sc://host:port, not {env['RECSYS_SPARK_REMOTE']!r}")
        hours = integer("RECSYS_MODEL_FRESHNESS_HOURS", 6)
        if not 0 <= hours <= 23:
            raise ValueError(f"RECSYS_MODEL_FRESHNESS_HOURS must be an hour of the day (0-23), not {hours}")
        return cls(
            data_dir=data_dir,
            storage_url=env.get("RECSYS_STORAGE_URL", str(data_dir / "assets")),
            source=source,
            sim_profile=env.get("RECSYS_SIM_PROFILE", "demo"),
            sim_seed=integer("RECSYS_SIM_SEED", 7),
            sim_root=env.get("RECSYS_SIM_ROOT", str(data_dir / "platform")),
            snapshot_url_template=env.get("RECSYS_SNAPSHOT_URL_TEMPLATE") or None,
            catalog_uri=env.get("RECSYS_CATALOG_URI") or None,
            start_date=start,
            als_threads=integer("RECSYS_ALS_THREADS", 0),
            image_model=env.get("RECSYS_IMAGE_MODEL") or None,
            image_pretrained=env.get("RECSYS_IMAGE_PRETRAINED") or None,
            audio_model=env.get("RECSYS_AUDIO_MODEL") or None,
            audio_checkpoint=env.get("RECSYS_AUDIO_CHECKPOINT") or None,
            device=env.get("RECSYS_DEVICE", "auto"),
            media_allowed_schemes=_csv(env.get("RECSYS_MEDIA_ALLOWED_SCHEMES", "file,s3,https")),
            media_allowed_hosts=_csv(env.get("RECSYS_MEDIA_ALLOWED_HOSTS", "")),
            media_allowed_roots=_csv(env.get("RECSYS_MEDIA_ALLOWED_ROOTS", "")),
            media_allowed_networks=_csv(env.get("RECSYS_MEDIA_ALLOWED_NETWORKS", "")),
            executor=executor,
            sensor_lookback_days=integer("RECSYS_SENSOR_LOOKBACK_DAYS", 14),
            model_freshness_hours=hours,
            notify_log=env.get("RECSYS_NOTIFY_LOG", str(data_dir / "notifications.jsonl")),
            notify_webhook=env.get("RECSYS_NOTIFY_WEBHOOK") or None,
            engine=engine,
            spark_master=env.get("RECSYS_SPARK_MASTER") or "local[*]",
            spark_remote=env.get("RECSYS_SPARK_REMOTE") or None,
            spark_conf=named("RECSYS_SPARK_CONF", parse_conf),
            spark_scheme_map=named("RECSYS_SPARK_SCHEME_MAP", parse_scheme_map, "s3=s3a"),
            emr=emr,
            s3_env_set=tuple(n for n in S3_ENV if env.get(n)),
            dagster_home=Path(env.get("DAGSTER_HOME") or ".dagster_home").resolve(),
        )

    def default_range(self) -> tuple[dt.date, dt.date]:
        """The simulator profile's natural range of days (a lake has none: give one)."""
        if self.source != "simulator":
            raise ValueError("a range of days is required when RECSYS_SOURCE is not the simulator")
        from .simulator.profiles import get_profile

        profile = get_profile(self.sim_profile)
        return profile.start_date, profile.end_date
