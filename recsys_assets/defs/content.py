"""Assets of the content stage: per-video embeddings (open_clip frames + Whisper audio) and the BLIP-scored
pairs of seed 000 "after inputs". A thin shell over :mod:`recsys_assets.stages.item_content_embeddings`
and :mod:`recsys_assets.stages.pair_blip_scores`.
"""

import dataclasses
import datetime as dt
import tempfile
import typing

import dagster as dg
import polars as pl

from ..stages import item_content_embeddings as ice
from ..stages import pair_blip_scores as pbs
from .checks import Check, CheckSet
from .guards import GPU_POOL, IO_RETRY, only_transient_retries
from .metadata import frame_metadata, latest_partition_metadata, markdown_table, to_metadata
from .params import config_from, to_params
from .partitions import TRAIN_WINDOW, after_previous_day, columns_input, partition_date, window_input
from .resources import ContentModelsResource, EmbeddingCacheResource, MediaFetchResource

GROUP = "content"

EMBEDDING_CHECKS = CheckSet(
    "item_content_embeddings",
    Check("media_coverage", "At least min_coverage of the day's items were fetched, decoded and embedded."),
    Check("embeddings_finite_unit_norm", "Every BLIP and audio embedding is finite and L2-normalised."),
    Check(
        "every_item_listed_with_reason",
        "Every item of item_meta and every active catalog upload has a row; each non-ok row says why.",
    ),
)
PAIR_CHECKS = CheckSet(
    "pair_blip_scores",
    Check("scores_finite_in_unit_interval", "Every similarity is finite and in [-1, 1]."),
    Check(
        "every_pair_scored_or_reported",
        "Each positive pair co-watched over the window appears once, scored or with an unscored_reason.",
    ),
    Check(
        "witnesses_qualify",
        "Each pair's witness had both items positive in a qualifying session (not all served videos watched/liked).",
    ),
    Check(
        "negatives_not_interacted",
        "No negative item was interacted with by its witness in the window (quarantined rows count).",
    ),
    Check(
        "positives_more_similar_than_negatives",
        "Over half the positive pairs are more similar than their own negative (the content signal).",
        blocking=False,
    ),
)

RANDOM_WEIGHTS_NOTICE = (
    "RANDOM WEIGHTS: {which} encoder(s) have no checkpoint configured, so these embeddings come from "
    "randomly initialised networks and carry no pretrained semantics. Set content_models.image_pretrained / "
    "audio_checkpoint (RECSYS_IMAGE_PRETRAINED / RECSYS_AUDIO_CHECKPOINT) for real embeddings."
)


class ContentEmbeddingConfig(config_from(ice.EmbedParams, name="EmbedParamsConfig")):
    min_coverage: float = 0.95
    """media_coverage fails (blocking) below this share of items embedded."""
    use_cache: bool = True
    """Reuse embeddings already computed for an item under the same model fingerprint."""
    active_upload_days: int = 7
    """Besides the day's watched items, embed every catalog video uploaded in the last this many days (the
    day included), watched or not: new uploads get a content embedding, and so a predicted collaborative
    vector, on their first day. 0 = only the watched items."""


class PairScoreConfig(config_from(pbs.ScoreRules, name="PairScoreRulesConfig")):
    bucket_reference_day: str = ""
    """A day (YYYY-MM-DD) whose materialized pair_blip_scores' bucket_edges every partition reuses, so a
    bucket means the same similarity range on every day; empty = bucket_edges, or else the quantiles of the
    partition's own window."""


def _reference_edges(context: dg.AssetExecutionContext, config: PairScoreConfig) -> list[float]:
    day = config.bucket_reference_day
    md = latest_partition_metadata(context.instance, context.asset_key, [day]).get(day)
    if not md or "bucket_edges" not in md:
        raise dg.Failure(
            f"bucket_reference_day {day}: pair_blip_scores {day} has no materialization with bucket_edges; "
            "materialize that partition first (its edges are learned from its window)",
            allow_retries=False,
        )
    edges = md["bucket_edges"]
    return [float(e) for e in (edges.data if hasattr(edges, "data") else edges)]


def _concat(window: dict[str, pl.LazyFrame], columns: list[str]) -> pl.LazyFrame:
    """A lazy window input's days, in day order, with only ``columns`` (read when the scan runs)."""
    frames = [lf.select(columns) for _, lf in sorted(window.items())]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.LazyFrame(schema={c: pl.Int64 for c in columns})


def _embedding_outputs(
    context: dg.AssetExecutionContext,
    config: ContentEmbeddingConfig,
    encoders: typing.Any,
    random_parts: list[str],
    day: dt.date,
    result: ice.EmbedResult,
) -> typing.Iterator:
    """The output and checks of item_content_embeddings. A lazy table (chunks spilled to disk) is streamed
    by the IO manager; metadata and checks read only the columns they need from it."""
    table = result.table
    light_columns = ["item_id", "language", "status", "reason", "detail", "distinct_frames", "duration_s"]
    checked_columns = [*light_columns, "watched_on_day", "upload_date", "blip_embedding", "audio_embedding"]
    checked = table.select(checked_columns).collect() if isinstance(table, pl.LazyFrame) else table
    failures = checked.filter(pl.col("status") != "ok").select("item_id", "status", "reason", "detail")
    meta = {
        **frame_metadata(
            checked.select("item_id", "language", "status", "reason", "distinct_frames", "duration_s"),
            preview_rows=5,
        ),
        "watched_items": int(checked["watched_on_day"].sum()),
        "unwatched_active_uploads": int((~checked["watched_on_day"]).sum()),
        "uploaded_on_day": int((checked["upload_date"] == day).sum()),
        "model_fingerprint": encoders.fingerprint,
        "vector_dtype": config.vector_dtype,
        "models": dg.MetadataValue.json(encoders.describe()),
        "random_weights": bool(random_parts),
        **(
            {"random_weights_notice": RANDOM_WEIGHTS_NOTICE.format(which=" and ".join(random_parts))}
            if random_parts
            else {}
        ),
        **{k: v for k, v in result.stats.items() if k != "fresh_reasons"},
        "coverage": float((checked["status"] != "failed").mean()) if checked.height else 1.0,
        "not_ok_items": dg.MetadataValue.md(markdown_table(failures, max_rows=30)),
        "not_ok_by_reason": dg.MetadataValue.json(dict(failures.group_by("reason").len().iter_rows())),
    }
    context.log.info(f"embeddings: {result.stats}")
    yield dg.Output(table, metadata=to_metadata(meta))
    yield from EMBEDDING_CHECKS.results(ice.validate(checked, config.min_coverage))


def build_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """This stage's daily assets, partitioned by ``partitions`` (see ``defs/partitions.py``)."""

    @dg.asset(
        ins={"item_meta": dg.AssetIn("item_meta"), "video_catalog": dg.AssetIn("video_catalog")},
        partitions_def=partitions,
        check_specs=EMBEDDING_CHECKS.specs(partitions),
        group_name=GROUP,
        retry_policy=IO_RETRY,
        pool=GPU_POOL,
    )
    def item_content_embeddings(
        context: dg.AssetExecutionContext,
        config: ContentEmbeddingConfig,
        media_fetch: MediaFetchResource,
        content_models: ContentModelsResource,
        embedding_cache: EmbeddingCacheResource,
        item_meta: pl.DataFrame,
        video_catalog: pl.DataFrame,
    ) -> typing.Iterator:
        """Per item watched on the day and per active catalog upload (watched or not): BLIP (open_clip frames,
        pooled) and Whisper audio embeddings, per-frame vectors, and a status/reason for items whose media could
        not be fetched or decoded."""
        with only_transient_retries():  # weights from a path/URL; media failures are per item (status, reason)
            encoders = content_models.load()
        random_parts = [k for k, v in encoders.random_weights.items() if v]
        if random_parts:
            context.log.warning(RANDOM_WEIGHTS_NOTICE.format(which=" and ".join(random_parts)))
        day = partition_date(context)
        items = ice.items_to_embed(item_meta, video_catalog, day, config.active_upload_days)
        with tempfile.TemporaryDirectory(prefix="item_content_embeddings-") as spill:
            result = content_models.embed(
                items,
                encoders,
                media_fetch.policy(),
                to_params(config, ice.EmbedParams),
                embedding_cache.cache() if config.use_cache else None,
                context.log.info,
                spill_dir=spill,
            )
            yield from _embedding_outputs(context, config, encoders, random_parts, day, result)

    @dg.asset(
        ins={
            "item_content_embeddings": columns_input(
                "item_content_embeddings", ["item_id", "status", "blip_embedding"]
            ),
            "filtered_interactions": window_input(
                "filtered_interactions",
                TRAIN_WINDOW,
                columns=["client_id", "session_id", "item_id", "is_positive", "session_all_positive"],
            ),
            "raw_interactions": window_input("raw_interactions", TRAIN_WINDOW, columns=["client_id", "item_id"]),
            "quarantine": window_input("raw_interactions_quarantine", TRAIN_WINDOW, columns=["client_id", "item_id"]),
        },
        deps=[after_previous_day("pair_blip_scores")],
        partitions_def=partitions,
        check_specs=PAIR_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def pair_blip_scores(
        context: dg.AssetExecutionContext,
        config: PairScoreConfig,
        item_content_embeddings: pl.DataFrame,
        filtered_interactions: dict[str, pl.LazyFrame],
        raw_interactions: dict[str, pl.LazyFrame],
        quarantine: dict[str, pl.LazyFrame],
    ) -> typing.Iterator:
        """Partition D: the positive pairs co-watched over D-6 .. D by at least min_cowatch_clients clients
        (qualifying sessions only), one sampled negative each (an item its witness never interacted with in
        the window), scored by BLIP cosine similarity and bucketed by stable edges. The window is scanned
        lazily: pairs are counted in passes, and the interactions are streamed past the candidates."""
        rules = to_params(config, pbs.ScoreRules)
        if config.bucket_reference_day:
            rules = dataclasses.replace(rules, bucket_edges=tuple(_reference_edges(context, config)))
        window = _concat(
            filtered_interactions, ["client_id", "session_id", "item_id", "is_positive", "session_all_positive"]
        )
        served = pl.concat(
            [
                _concat(raw_interactions, ["client_id", "item_id"]),
                _concat(quarantine, ["client_id", "item_id"]).drop_nulls(),
            ],
            how="vertical_relaxed",
        )
        pairs = pbs.window_pairs(window, rules)
        result = pbs.score_pairs(
            pairs.pairs,
            ice.float32_vectors(item_content_embeddings.select("item_id", "status", "blip_embedding")),
            window.select("client_id", "item_id", "is_positive", "session_all_positive"),
            served,
            rules,
        )
        stats = result.stats
        summary = pbs.summary(result.pairs)
        meta = {
            **frame_metadata(result.pairs),
            **{k: v for k, v in stats.items() if k != "unscored_by_reason"},
            **{f"window_{k}": v for k, v in pairs.stats.items()},
            "window_days": len(filtered_interactions),
            "min_cowatch_clients": rules.min_cowatch_clients,
            "unscored_by_reason": dg.MetadataValue.json(stats["unscored_by_reason"]),
            "bucket_edges": dg.MetadataValue.json(result.edges),
            "bucket_edges_from": (
                f"reference partition {config.bucket_reference_day}"
                if config.bucket_reference_day
                else (
                    "config" if config.bucket_edges else f"quantiles of this window ({len(filtered_interactions)} days)"
                )
            ),
            "similarity_by_pair_type": dg.MetadataValue.md(markdown_table(summary)),
            "similarity_histogram": dg.MetadataValue.md(pbs.histogram(result.pairs)),
        }
        context.log.info(
            f"positive pairs more similar than their negative: {stats['paired_share_positive_more_similar']:.3f} "
            f"(AUC {stats['auc_positive_vs_negative']:.3f})"
        )
        yield dg.Output(result.pairs, metadata=to_metadata(meta))
        yield from PAIR_CHECKS.results(pbs.validate(result, pairs.pairs, served, window))

    return [item_content_embeddings, pair_blip_scores]
