"""Where the raw data comes from: the simulated platform, or real snapshot and catalog locations.

Each role is one resource key with interchangeable implementations chosen in ``definitions.py``:

* ``snapshots``: :class:`ParquetSnapshotSource` (a URL template, local or ``s3://``) or
  :class:`SimulatedSnapshotSource` (publishes the simulator's day as parquet, then reads it with
  the same parquet reader);
* ``catalog``: :class:`DeltaCatalogSource` (a Delta table) or :class:`SimulatedCatalogSource`
  (publishes the simulator's catalog as a Delta table plus mp4 media, then reads it as Delta);
* ``als_engine``: :class:`AlsEngineResource` (the ALS implementation);
* ``media_fetch``: :class:`MediaFetchResource` (download_url -> bytes, under an allowlist);
* ``content_models``: :class:`ContentModelsResource` (open_clip + Whisper, weights from config);
* ``embedding_cache``: :class:`EmbeddingCacheResource` (finished embeddings by item and model);
* ``two_tower_rules``: :class:`TwoTowerRulesResource` (seed 001's dataset rules, shared by three assets).
"""

import dataclasses
import datetime as dt
import typing

import dagster as dg
import polars as pl

from ..simulator.content_vectors import ContentVectorGenerator, VectorSpec
from ..simulator.platform import Platform, get_platform
from ..simulator.publish import catalog_uri, publish_catalog, publish_day, snapshot_template
from ..sources.lake import (
    catalog_version,
    delta_storage_options,
    read_catalog,
    read_snapshot,
    snapshot_files,
    snapshot_marker,
)
from ..stages.als_factors import AlsEngine, ImplicitAls
from ..stages.content_models import ModelSpec, load_encoders
from ..stages.item_content_embeddings import EmbeddingCache, EmbedParams, EmbedResult, embed_generated, embed_items
from ..stages.media_fetch import FetchPolicy
from ..stages.two_tower import DatasetRules
from ..storage import TableRef
from .engine import DataPrepEngine
from .params import config_from, to_params
from .s3 import S3Resource, open_s3_store, s3_options, s3_store_options


class SimulatedPlatformResource(dg.ConfigurableResource):
    """The simulated platform (see :mod:`recsys_assets.simulator`), publishing under ``root``."""

    profile: str = "demo"
    seed: int = 7
    root: str
    render_processes: int = 0
    """Processes that render media when the catalog is first published; 0 = one per core."""

    def platform(self) -> Platform:
        return get_platform(self.profile, self.seed)

    def publish_day(self, day: dt.date) -> str:
        return publish_day(self.platform(), self.root, day)

    def publish_catalog(self) -> str:
        return publish_catalog(self.platform(), self.root, processes=self.render_processes or None)


class SnapshotSource(dg.ConfigurableResource):
    """Interface: ``load(day)`` returns that day's raw interaction snapshot, untyped; ``marker(day)`` the
    fingerprint of its ``_SUCCESS`` marker, or None while the day is incomplete (the lake sensor's signal)."""

    def load(self, day: dt.date) -> pl.DataFrame:
        raise NotImplementedError

    def files(self, day: dt.date) -> list[str]:
        """The day's parquet files as URLs, for an engine that reads them itself (Spark)."""
        raise NotImplementedError

    def marker(self, day: dt.date) -> typing.Optional[str]:
        raise NotImplementedError

    def describe_template(self) -> str:
        return self.describe(dt.date(2000, 1, 1)).replace("2000-01-01", "{date}").replace("20000101", "{yyyymmdd}")

    def describe(self, day: dt.date) -> str:
        raise NotImplementedError


class ParquetSnapshotSource(SnapshotSource):
    """Daily snapshot folders of parquet files, e.g. ``s3://josh-recsys/daily-snapshot/dt={date}/``."""

    url_template: str
    s3: typing.Optional[S3Resource] = None
    """The deployment's dagster-aws S3 resource (endpoint, credentials); None: the environment's."""

    def load(self, day: dt.date) -> pl.DataFrame:
        return read_snapshot(self.url_template, day, **s3_store_options(self.url_template, self.s3))

    def files(self, day: dt.date) -> list[str]:
        return snapshot_files(self.url_template, day, **s3_store_options(self.url_template, self.s3))

    def marker(self, day: dt.date) -> typing.Optional[str]:
        return snapshot_marker(self.url_template, day, **s3_store_options(self.url_template, self.s3))

    def describe(self, day: dt.date) -> str:
        return self.url_template.format(date=day.isoformat(), yyyymmdd=day.strftime("%Y%m%d"))


class SimulatedSnapshotSource(SnapshotSource):
    simulator: SimulatedPlatformResource

    def load(self, day: dt.date) -> pl.DataFrame:
        self.simulator.publish_day(day)
        return read_snapshot(snapshot_template(self.simulator.root), day)

    def files(self, day: dt.date) -> list[str]:
        self.simulator.publish_day(day)
        return snapshot_files(snapshot_template(self.simulator.root), day)

    def marker(self, day: dt.date) -> typing.Optional[str]:
        """Only days the simulator has published (``recsys-assets publish``, or a run that read them)."""
        return snapshot_marker(snapshot_template(self.simulator.root), day)

    def describe(self, day: dt.date) -> str:
        return f"simulator[{self.simulator.profile}, seed {self.simulator.seed}] " + snapshot_template(
            self.simulator.root
        ).format(date=day.isoformat())


class CatalogSource(dg.ConfigurableResource):
    """Interface: ``load()`` returns the video catalog (item_id, language, download_url, ...); ``version()``
    its current Delta version without reading it (None while there is no table)."""

    def load(self) -> pl.DataFrame:
        raise NotImplementedError

    def files(self) -> list[str]:
        """The table's active parquet files (at the loaded version), for an engine that reads them itself."""
        raise NotImplementedError

    def version(self) -> typing.Optional[int]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class DeltaCatalogSource(CatalogSource):
    """The ``josh-meta/video`` Delta table, local or ``s3://``; ``version_pin`` pins a Delta version."""

    table_uri: str
    version_pin: typing.Optional[int] = None
    s3: typing.Optional[S3Resource] = None
    """The deployment's dagster-aws S3 resource (endpoint, credentials); None: the environment's."""

    def load(self) -> pl.DataFrame:
        return read_catalog(self.table_uri, self.version_pin, **s3_options(self.s3))

    def files(self) -> list[str]:
        from ..spark.item_meta import catalog_files

        opts = delta_storage_options(**s3_options(self.s3)) if self.table_uri.startswith("s3://") else None
        return catalog_files(self.table_uri, self.version_pin, opts)

    def version(self) -> typing.Optional[int]:
        if self.version_pin is not None:
            return self.version_pin
        return catalog_version(self.table_uri, **s3_options(self.s3))

    def describe(self) -> str:
        return self.table_uri


class SimulatedCatalogSource(CatalogSource):
    simulator: SimulatedPlatformResource

    def load(self) -> pl.DataFrame:
        return read_catalog(self.simulator.publish_catalog())

    def files(self) -> list[str]:
        from ..spark.item_meta import catalog_files

        return catalog_files(self.simulator.publish_catalog())

    def version(self) -> typing.Optional[int]:
        return catalog_version(catalog_uri(self.simulator.root))

    def describe(self) -> str:
        return f"simulator[{self.simulator.profile}, seed {self.simulator.seed}] " + catalog_uri(self.simulator.root)


@dataclasses.dataclass
class AlsTrained:
    item_factors: typing.Any
    """polars DataFrame (implicit) or Spark DataFrame (MLlib): item_id, language, vector."""
    user_factors: typing.Any
    stats: list[dict]
    verdicts: dict[str, tuple[bool, dict]]
    rows: int
    """Interactions in the window."""


class AlsEngineResource(dg.ConfigurableResource):
    """The ALS engine: ``implicit`` (CPU, one machine) or ``mllib`` (Spark MLlib's implicit ALS through the
    Spark engine's session, ``RECSYS_ENGINE=spark``). The asset's contract -- rules, minimum counts, output
    schema, checks -- does not depend on it."""

    name: str = "implicit"
    num_threads: int = 0
    """Threads for implicit's solver (0 = all cores)."""
    spark: typing.Optional[DataPrepEngine] = None
    """The Spark engine resource (:class:`~recsys_assets.defs.engine.SparkEngine`) when ``name`` is ``mllib``."""

    def engine(self) -> AlsEngine:
        if self.name == "implicit":
            return ImplicitAls()
        raise ValueError(f"unknown ALS engine {self.name!r}; known: implicit, mllib (train() only)")

    def train(self, window: dict, catalog, params, rules, max_norm: float) -> AlsTrained:
        """ALS on the window's stored partitions (``TableRef`` s) with the catalog's languages."""
        from ..stages import als_factors as als

        if self.name == "mllib":
            from ..spark import als_factors as sals

            spark = self._spark_engine()
            urls = [u for _, ref in sorted(window.items()) for u in ref.sources()]
            interactions = spark.read_files(urls)
            result = sals.train_als(interactions, spark.read_files(catalog.sources()), params, rules)
            rows = int(interactions.count())
            return AlsTrained(
                result.item_factors,
                result.user_factors,
                result.stats,
                sals.validate(result.item_factors, result.stats, max_norm),
                rows,
            )
        if self.name != "implicit":
            raise ValueError(f"unknown ALS engine {self.name!r}; known: implicit, mllib")
        interactions = pl.concat([ref.scan() for _, ref in sorted(window.items())]).collect()
        languages = catalog.scan().select("item_id", "language").collect()
        result = als.train_als(interactions, languages, params, rules, engine=self.engine())
        return AlsTrained(
            result.item_factors,
            result.user_factors,
            result.stats,
            als.validate(result.item_factors, result.stats, max_norm),
            interactions.height,
        )

    def evaluate(
        self, item_factors: TableRef, user_factors: TableRef, history: TableRef, today: TableRef, exclude_seen: bool
    ) -> tuple[pl.DataFrame, list[dict]]:
        """:mod:`~recsys_assets.stages.als_evaluation` of the stored factors of D-1 on the stored days: in this
        process (``implicit``), or on Spark's executors (``mllib``: :mod:`recsys_assets.spark.als_evaluation`),
        where the interactions are never collected. ``history`` may hold no partition (no day before D)."""
        from ..stages import als_evaluation as als_eval

        if self.name == "mllib":
            from ..spark import als_evaluation as sev

            spark = self._spark_engine()
            day = spark.read_files(today.sources()).select(*EVALUATED_COLUMNS)
            window = spark.read_files(history.sources()).select(*EVALUATED_COLUMNS) if history.keys else day.limit(0)
            items, users = spark.read_files(item_factors.sources()), spark.read_files(user_factors.sources())
            return sev.evaluate(items, users, window, day, exclude_seen=exclude_seen)
        if self.name != "implicit":
            raise ValueError(f"unknown ALS engine {self.name!r}; known: implicit, mllib")
        day = today.scan().select(*EVALUATED_COLUMNS).collect()
        window = history.scan().select(*EVALUATED_COLUMNS).collect() if history.keys else day.clear()
        items, users = item_factors.scan().collect(), user_factors.scan().collect()
        return als_eval.evaluate(items, users, window, day, exclude_seen=exclude_seen)

    def _spark_engine(self) -> DataPrepEngine:
        if self.spark is None:
            raise ValueError("the mllib ALS engine needs the Spark engine (RECSYS_ENGINE=spark)")
        return self.spark


EVALUATED_COLUMNS = ("client_id", "item_id", "is_positive")
"""The columns of filtered_interactions that the ALS evaluation reads."""


class MediaFetchResource(
    config_from(FetchPolicy, exclude=("s3_options",), base=dg.ConfigurableResource, name="FetchPolicyResource")
):
    """Fetches videos by their catalog ``download_url`` under an allowlist (see ``stages/media_fetch.py``).

    A URL comes from data, so nothing is reachable unless allowed here: schemes, ``http(s)`` hosts and
    ``s3`` buckets (``allowed_hosts``; ``.example.com`` allows a domain and its subdomains), and local
    folders for ``file://`` URLs and paths (``allowed_roots``).
    """

    s3: typing.Optional[S3Resource] = None
    """The deployment's dagster-aws S3 resource (endpoint, credentials); None: the environment's."""

    def policy(self) -> FetchPolicy:
        return to_params(
            self,
            FetchPolicy,
            allowed_schemes=tuple(s.lower() for s in self.allowed_schemes),
            s3_options=tuple(sorted(s3_options(self.s3).items())),
        )


class ContentModelsResource(config_from(ModelSpec, base=dg.ConfigurableResource, name="ModelSpecResource")):
    """The image (open_clip) and audio (Whisper) encoders (see ``stages/content_models.py``).

    Without ``image_pretrained`` / ``audio_checkpoint`` the weights are RANDOM (small architectures by
    default): the pipeline runs end to end, but the embeddings carry no learned semantics.
    """

    s3: typing.Optional[S3Resource] = None
    """The deployment's dagster-aws S3 resource (endpoint, credentials); None: the environment's."""

    def spec(self) -> ModelSpec:
        return to_params(
            self,
            ModelSpec,
            image_pretrained=self.image_pretrained or None,
            audio_checkpoint=self.audio_checkpoint or None,
        )

    def load(self) -> typing.Any:
        return load_encoders(self.spec(), s3_options(self.s3))

    def embed(
        self,
        items: pl.DataFrame,
        encoders: typing.Any,
        policy: FetchPolicy,
        params: EmbedParams,
        cache: typing.Optional[EmbeddingCache],
        log: typing.Callable[[str], None],
        spill_dir: typing.Optional[str] = None,
    ) -> EmbedResult:
        """The day's embeddings: fetch, decode and encode each item's media (the cache skips known ones); an
        in-memory table (decoding, not memory, bounds a day of real media on one node; ``spill_dir`` unused)."""
        return embed_items(items, encoders, policy, params, cache=cache, log=log)


class GeneratedContent:
    """What ``GeneratedContentResource.load`` returns: the generator, described like a pair of encoders."""

    def __init__(self, generator: ContentVectorGenerator):
        self.generator = generator
        self.fingerprint = generator.fingerprint
        self.random_weights = {"image": False, "audio": False}

    def describe(self) -> dict[str, typing.Any]:
        return self.generator.describe()


class GeneratedContentResource(ContentModelsResource):
    """Content vectors generated from the simulator's true item content instead of decoded media (profiles
    without media, e.g. ``scale``): what frozen encoders of ``n_frames`` x ``image_dim`` and ``audio_dim``
    would emit, so the content, cold-start and two-tower stages run at the seed's size without videos."""

    simulator: SimulatedPlatformResource
    image_dim: int = 512
    audio_dim: int = 512

    def load(self) -> GeneratedContent:
        spec = VectorSpec(n_frames=self.n_frames, image_dim=self.image_dim, audio_dim=self.audio_dim)
        return GeneratedContent(ContentVectorGenerator(self.simulator.platform(), spec))

    def embed(self, items, encoders, policy, params, cache, log, spill_dir=None) -> EmbedResult:
        """Generated vectors, chunk by chunk; with ``spill_dir`` a lazy scan of the spilled chunks."""
        return embed_generated(items, encoders.generator, params, log=log, spill_dir=spill_dir)


class EmbeddingCacheResource(dg.ConfigurableResource):
    """Where finished content embeddings are kept by (item_id, model fingerprint): a path or s3:// prefix."""

    base_url: str
    enabled: bool = True
    s3: typing.Optional[S3Resource] = None
    """The deployment's dagster-aws S3 resource (endpoint, credentials); None: the environment's."""

    def cache(self) -> typing.Optional[EmbeddingCache]:
        return EmbeddingCache(open_s3_store(self.base_url, self.s3)) if self.enabled else None


class TruthResource(dg.ConfigurableResource):
    """The ground truth behind the data, when there is one. On real data there is none: ``affinity_fn``
    returns None and evaluations leave the oracle out."""

    def affinity_fn(self) -> typing.Optional[typing.Callable]:
        return None

    def item_vectors_fn(self) -> typing.Optional[typing.Callable]:
        """item ids -> the true content vectors behind them (for the true-content ablation), or None."""
        return None


class SimulatedTruthResource(TruthResource):
    """The simulator's true client-item affinities (for oracle baselines)."""

    simulator: SimulatedPlatformResource

    def affinity_fn(self) -> typing.Optional[typing.Callable]:
        return self.simulator.platform().true_affinity

    def item_vectors_fn(self) -> typing.Optional[typing.Callable]:
        return self.simulator.platform().true_item_content


class TwoTowerRulesResource(config_from(DatasetRules, base=dg.ConfigurableResource, name="DatasetRulesResource")):
    """Seed 001's dataset rules, set once for the three assets that apply them: ``item_pca`` (which items it
    is fitted on), ``two_tower_dataset`` (filters, label, balance) and ``two_tower_evaluation`` (the label)."""

    def rules(self) -> DatasetRules:
        return to_params(self, DatasetRules)


class ReportStoreResource(dg.ConfigurableResource):
    """Where human-facing reports (CSV, PNG plots) are written: a path or s3:// prefix; each write is atomic."""

    base_url: str
    s3: typing.Optional[S3Resource] = None
    """The deployment's dagster-aws S3 resource (endpoint, credentials); None: the environment's."""

    def write_csv(self, name: str, df: pl.DataFrame) -> str:
        return self.write_bytes(name, df.write_csv().encode())

    def write_bytes(self, name: str, data: bytes) -> str:
        store = open_s3_store(self.base_url, self.s3)
        store.write_bytes(name, data)
        return f"{store.url}/{name}"
