"""Assets of the content stage: per-video embeddings (open_clip frames + Whisper audio) and the BLIP-scored
pairs of seed 000 "after inputs". A thin shell over :mod:`recsys_assets.stages.item_content_embeddings`
and :mod:`recsys_assets.stages.pair_blip_scores`.
"""

import typing

import dagster as dg
import polars as pl

from ..stages import item_content_embeddings as ice
from ..stages import pair_blip_scores as pbs
from .checks import Check, CheckSet
from .guards import GPU_POOL, IO_RETRY, only_transient_retries
from .metadata import frame_metadata, markdown_table, to_metadata
from .params import config_from, to_params
from .resources import ContentModelsResource, EmbeddingCacheResource, MediaFetchResource

GROUP = "content"

EMBEDDING_CHECKS = CheckSet(
    "item_content_embeddings",
    Check("media_coverage", "At least min_coverage of the day's items were fetched, decoded and embedded."),
    Check("embeddings_finite_unit_norm", "Every BLIP and audio embedding is finite and L2-normalised."),
    Check("every_item_listed_with_reason", "Every item of item_meta has a row; each non-ok row says why."),
)
PAIR_CHECKS = CheckSet(
    "pair_blip_scores",
    Check("scores_finite_in_unit_interval", "Every similarity is finite and in [-1, 1]."),
    Check(
        "every_pair_scored_or_reported",
        "Each positive pair of item_pairs appears once, scored or with an unscored_reason.",
    ),
    Check("negatives_not_interacted", "No negative item was served to (interacted with by) its client that day."),
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


PairScoreConfig = config_from(pbs.ScoreRules, name="PairScoreConfig")


def build_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """This stage's daily assets, partitioned by ``partitions`` (see ``defs/partitions.py``)."""

    @dg.asset(
        ins={"item_meta": dg.AssetIn("item_meta")},
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
    ) -> typing.Iterator:
        """Per item of the day: BLIP (open_clip frames, pooled) and Whisper audio embeddings, per-frame vectors,
        and a status/reason for items whose media could not be fetched or decoded."""
        with only_transient_retries():  # weights from a path/URL; media failures are per item (status, reason)
            encoders = content_models.load()
        random_parts = [k for k, v in encoders.random_weights.items() if v]
        if random_parts:
            context.log.warning(RANDOM_WEIGHTS_NOTICE.format(which=" and ".join(random_parts)))
        result = ice.embed_items(
            item_meta.select("item_id", "language", "download_url"),
            encoders,
            media_fetch.policy(),
            to_params(config, ice.EmbedParams),
            cache=embedding_cache.cache() if config.use_cache else None,
            log=context.log.info,
        )
        table = result.table
        failures = table.filter(pl.col("status") != "ok").select("item_id", "status", "reason", "detail")
        meta = {
            **frame_metadata(
                table.select("item_id", "language", "status", "reason", "distinct_frames", "duration_s"), preview_rows=5
            ),
            "model_fingerprint": encoders.fingerprint,
            "models": dg.MetadataValue.json(encoders.describe()),
            "random_weights": bool(random_parts),
            **(
                {"random_weights_notice": RANDOM_WEIGHTS_NOTICE.format(which=" and ".join(random_parts))}
                if random_parts
                else {}
            ),
            **{k: v for k, v in result.stats.items() if k != "fresh_reasons"},
            "coverage": float((table["status"] != "failed").mean()) if table.height else 1.0,
            "not_ok_items": dg.MetadataValue.md(markdown_table(failures, max_rows=30)),
            "not_ok_by_reason": dg.MetadataValue.json(dict(failures.group_by("reason").len().iter_rows())),
        }
        context.log.info(f"embeddings: {result.stats}")
        yield dg.Output(table, metadata=to_metadata(meta))
        yield from EMBEDDING_CHECKS.results(ice.validate(table, config.min_coverage))

    @dg.asset(
        ins={
            "item_pairs": dg.AssetIn("item_pairs"),
            "item_content_embeddings": dg.AssetIn("item_content_embeddings"),
            "filtered_interactions": dg.AssetIn("filtered_interactions"),
            "raw_interactions": dg.AssetIn("raw_interactions"),
        },
        partitions_def=partitions,
        check_specs=PAIR_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def pair_blip_scores(
        context: dg.AssetExecutionContext,
        config: PairScoreConfig,
        item_pairs: pl.DataFrame,
        item_content_embeddings: pl.DataFrame,
        filtered_interactions: pl.DataFrame,
        raw_interactions: pl.DataFrame,
    ) -> typing.Iterator:
        """The day's positive pairs and one sampled negative each (an item the pair's client never interacted
        with), scored by BLIP cosine similarity and bucketed."""
        served = raw_interactions.select("client_id", "item_id")
        result = pbs.score_pairs(
            item_pairs.select("item_id_1", "item_id_2", "pair_type", "num_clients"),
            item_content_embeddings.select("item_id", "status", "blip_embedding"),
            filtered_interactions.select("client_id", "item_id", "is_positive"),
            served,
            to_params(config, pbs.ScoreRules),
        )
        stats = result.stats
        summary = pbs.summary(result.pairs)
        meta = {
            **frame_metadata(result.pairs),
            **{k: v for k, v in stats.items() if k != "unscored_by_reason"},
            "unscored_by_reason": dg.MetadataValue.json(stats["unscored_by_reason"]),
            "bucket_edges": dg.MetadataValue.json(result.edges),
            "similarity_by_pair_type": dg.MetadataValue.md(markdown_table(summary)),
            "similarity_histogram": dg.MetadataValue.md(pbs.histogram(result.pairs)),
        }
        context.log.info(
            f"positive pairs more similar than their negative: {stats['paired_share_positive_more_similar']:.3f} "
            f"(AUC {stats['auc_positive_vs_negative']:.3f})"
        )
        yield dg.Output(result.pairs, metadata=to_metadata(meta))
        yield from PAIR_CHECKS.results(pbs.validate(result, item_pairs, served))

    return [item_content_embeddings, pair_blip_scores]
