"""Assets of the cold-start stage: the content -> collaborative encoder (seed 000's "zero shot learning of
video embedding using ALS"), every item's collaborative-space vector, and the encoder's next-day value.
A thin shell over :mod:`recsys_assets.stages.content_encoder`, :mod:`~recsys_assets.stages.item_collab_embeddings`
and :mod:`~recsys_assets.stages.content_encoder_evaluation`.
"""

import typing

import dagster as dg
import polars as pl

from ..artifacts import ModelArtifact
from ..stages import content_encoder as ce
from ..stages import content_encoder_evaluation as cee
from ..stages import item_collab_embeddings as ice
from ..stages.item_content_embeddings import ENCODER_COLUMNS
from .checks import Check, CheckSet
from .evaluation import evaluation_asset, next_day_inputs
from .guards import GPU_POOL
from .io_manager import MODEL_IO
from .metadata import frame_metadata, markdown_table, to_metadata
from .params import config_from, to_params
from .partitions import (
    EVAL_WINDOW,
    PREVIOUS_AND_SAME_DAY,
    PREVIOUS_DAY,
    TRAIN_WINDOW,
    after_previous_day,
    columns_input,
    latest_queries_per_item,
    partition_date,
    window_input,
)
from .resources import TruthResource

GROUP = "cold_start"

ENCODER_CHECKS = CheckSet(
    "content_encoder",
    Check("item_split_never_leaks", "No validation item was trained on; every validation item is in the hash split."),
    Check("weights_finite", "Every weight is finite."),
    Check(
        "beats_random_on_validation",
        "At least one language trained, and on held-out items recall@10 of the own ALS vector beats random vectors.",
        blocking=False,
    ),
)
COLLAB_CHECKS = CheckSet(
    "item_collab_embeddings",
    Check("every_item_listed", "Every item of item_content_embeddings (watched or active upload) has one row."),
    Check("vectors_finite", "Every vector is finite."),
    Check("source_flag_consistent", "is_predicted is true exactly for predicted vectors; source none iff no vector."),
)
EVAL_CHECKS = CheckSet(
    "content_encoder_evaluation",
    Check(
        "predicted_beats_random_recall_at_50",
        "Predicted vectors recommend held-out items better than random vectors.",
        blocking=False,
    ),
    Check(
        "new_items_predicted_beats_random_recall_at_50",
        "Among the previous day's never-watched uploads, predicted vectors beat random vectors at recall@50.",
        blocking=False,
    ),
)


class ContentEncoderConfig(config_from(ce.EncoderParams, name="EncoderParamsConfig")):
    """See ``stages/content_encoder.py``."""

    languages: list[str] = []
    """Languages to train; empty = every ALS language with at least min_items items."""


class CollabConfig(dg.Config):
    calibrate_norm: bool = True
    """Rescale each language's predicted vectors to the mean norm of the true ALS vectors of the encoder's
    training items (the regression term shrinks predictions; ablation in benchmarks/README.md)."""


def _curve(history: list[dict], max_rows: int = 12) -> str:
    step = max(1, len(history) // max_rows)
    rows = [h for i, h in enumerate(history) if i % step == 0 or i == len(history) - 1]
    cols = [
        "epoch",
        "train_clip",
        "train_pair",
        "train_regression",
        "val_clip",
        "val_regression",
        "val_loss",
        "temperature",
    ]
    return markdown_table([{c: h.get(c) for c in cols} for h in rows], max_rows=max_rows + 2)


def build_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """This stage's daily assets, partitioned by ``partitions`` (see ``defs/partitions.py``)."""

    @dg.asset(
        ins={
            "embeddings": window_input("item_content_embeddings", TRAIN_WINDOW, columns=ENCODER_COLUMNS),
            "als_factors": dg.AssetIn("als_factors"),
            # the pair loss needs five of the day's pair columns; the rest (anchors, witnesses, URLs) stay on disk
            "pair_blip_scores": columns_input(
                "pair_blip_scores", ["item_id_1", "item_id_2", "pair_type", "bucket", "similarity"]
            ),
        },
        deps=[after_previous_day("content_encoder")],
        pool=GPU_POOL,
        partitions_def=partitions,
        check_specs=ENCODER_CHECKS.specs(partitions),
        group_name=GROUP,
        io_manager_key=MODEL_IO,
    )
    def content_encoder(
        context: dg.AssetExecutionContext,
        config: ContentEncoderConfig,
        embeddings: dict[str, pl.LazyFrame],
        als_factors: pl.DataFrame,
        pair_blip_scores: pl.LazyFrame,
    ) -> typing.Iterator:
        """Partition D: per language, frames + audio -> ALS item vector of als_factors D (CLIP-style InfoNCE,
        BLIP-bucketed pair loss, scale regression); weights + config as one safetensors object."""

        def content(ids: pl.Series) -> list[pl.LazyFrame]:  # one language's items at a time, failed ones left out
            return latest_queries_per_item(embeddings, items=ids, where=pl.col("status") != "failed")

        def pairs(ids: pl.Series) -> pl.DataFrame:  # one language's training pairs at a time, not the day's
            keep = ids.to_frame("item_id").lazy()
            return (
                pair_blip_scores.filter(pl.col("similarity").is_not_null())
                .select("item_id_1", "item_id_2", "pair_type", "bucket")
                .join(keep.rename({"item_id": "item_id_1"}), on="item_id_1", how="semi")
                .join(keep.rename({"item_id": "item_id_2"}), on="item_id_2", how="semi")
                .collect(engine="streaming")
            )

        result = ce.train_all(
            content,
            als_factors,
            pairs,
            to_params(config, ce.EncoderParams),
            languages=config.languages or None,
            log=context.log.info,
        )
        if not result.models:
            # not a failure: downstream still gives every ALS item its vector; the WARN check flags it
            context.log.warning(
                f"content encoder: no language could be trained: {[s.get('skipped') for s in result.stats]}"
            )
        artifact = ce.to_artifact(result.models, result.config, result.results)
        main = max(result.results, key=lambda lang: len(result.results[lang].train_ids)) if result.results else None
        cols = [
            "language",
            "trained",
            "als_items",
            "items_with_content",
            "train_items",
            "val_items",
            "train_pairs",
            "epochs",
            "best_epoch",
            "val_mean_cosine",
            "val_recall@1",
            "val_recall@10",
            "val_recall@50",
            "random_recall@10",
            "seconds",
            "skipped",
        ]
        meta = {
            "languages": dg.MetadataValue.md(markdown_table([{c: s.get(c) for c in cols} for s in result.stats])),
            "config": dg.MetadataValue.json(result.config),
            **({f"training_curve_{main}": dg.MetadataValue.md(_curve(result.results[main].history))} if main else {}),
            "embedding_window_days": len(embeddings),
            "train_items": int(sum(len(r.train_ids) for r in result.results.values())),
            **{
                f"{s['language']}_val_mean_cosine": float(s["val_mean_cosine"])
                for s in result.stats
                if s.get("trained")
            },
            **{f"{s['language']}_val_recall@10": float(s["val_recall@10"]) for s in result.stats if s.get("trained")},
            "parameters": sum(p.numel() for m in result.models.values() for p in m.parameters()),
        }
        yield dg.Output(artifact, metadata=to_metadata(meta))
        yield from ENCODER_CHECKS.results(ce.validate(result))

    @dg.asset(
        ins={
            "content_encoder": dg.AssetIn("content_encoder", input_manager_key=MODEL_IO),
            "item_content_embeddings": columns_input("item_content_embeddings", ENCODER_COLUMNS),
            "als_factors": columns_input("als_factors", ["item_id", "language", "vector"]),
            "raw_interactions": columns_input("raw_interactions", ["item_id"]),
            "raw_interactions_quarantine": columns_input("raw_interactions_quarantine", ["item_id"]),
        },
        partitions_def=partitions,
        check_specs=COLLAB_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def item_collab_embeddings(
        context: dg.AssetExecutionContext,
        config: CollabConfig,
        content_encoder: ModelArtifact,
        item_content_embeddings: pl.LazyFrame,
        als_factors: pl.DataFrame,
        raw_interactions: pl.DataFrame,
        raw_interactions_quarantine: pl.DataFrame,
    ) -> typing.Iterator:
        """Every embedded item of the day (watched, or an active upload nobody has played yet) in ALS space:
        its ALS vector, or the content encoder's prediction, flagged (is_predicted)."""
        models = ce.from_artifact(content_encoder)
        day = partition_date(context)
        # the day's items without their vectors; the encoder reads frames from the scan a chunk at a time
        items = item_content_embeddings.select("item_id", "language", "upload_date").collect()
        table = ice.assemble(
            items,
            item_content_embeddings,
            als_factors,
            models,
            ce.split_of(content_encoder),
            day=day,
            interactions=ice.interaction_counts(
                raw_interactions.select("item_id"), raw_interactions_quarantine.select("item_id")
            ),
            calibrate_norm=config.calibrate_norm,
        )
        scales = (
            table.filter(pl.col("predicted_scale").is_not_null())
            .group_by("language")
            .agg(pl.col("predicted_scale").first())
        )
        counts = dict(table.group_by("source").len().select(pl.col("source").cast(pl.String), "len").iter_rows())
        by_lang = table.group_by("language", "source").len().sort("language", "source")
        new = ice.new_upload_summary(table)
        totals = new.select(pl.exclude("language").sum()).row(0, named=True) if new.height else {}
        if totals:
            context.log.info(
                f"new uploads of {day}: {totals['new_uploads']}, {totals['never_interacted']} never interacted with, "
                f"{totals['never_interacted_with_vector']} of those with a predicted vector"
            )
        yield dg.Output(
            table,
            metadata=to_metadata(
                {
                    **frame_metadata(
                        table.select(
                            "item_id",
                            "language",
                            "source",
                            "encoder_split",
                            "reason",
                            "new_upload",
                            "interactions_on_day",
                        )
                    ),
                    **{f"items_{k}": int(v) for k, v in counts.items()},
                    "by_language": dg.MetadataValue.md(markdown_table(by_lang, max_rows=50)),
                    "predicted_scale_by_language": dg.MetadataValue.json(
                        {k: round(float(v), 4) for k, v in scales.sort("language").iter_rows()}
                    ),
                    "new_uploads": int(totals.get("new_uploads", 0)),
                    "new_uploads_never_interacted": int(totals.get("never_interacted", 0)),
                    "new_uploads_never_interacted_with_vector": int(totals.get("never_interacted_with_vector", 0)),
                    "new_uploads_by_language": dg.MetadataValue.md(markdown_table(new, max_rows=50)),
                }
            ),
        )
        yield from COLLAB_CHECKS.results(ice.validate(table, items.select("item_id")))

    @evaluation_asset(
        ins={
            "collab": window_input("item_collab_embeddings", PREVIOUS_DAY),
            "users": window_input("als_user_factors", PREVIOUS_AND_SAME_DAY),
            "filtered_interactions": window_input("filtered_interactions", EVAL_WINDOW),
            "als_today": dg.AssetIn("als_factors"),
        },
        deps=[after_previous_day("content_encoder_evaluation")],
        partitions_def=partitions,
        check_specs=EVAL_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def content_encoder_evaluation(
        context: dg.AssetExecutionContext,
        truth: TruthResource,
        collab: dict[str, pl.DataFrame],
        users: dict[str, pl.DataFrame],
        filtered_interactions: dict[str, pl.DataFrame],
        als_today: pl.DataFrame,
    ) -> typing.Iterator:
        """Partition D: D's positives ranked among items held out from the D-1 encoder: true ALS vectors
        (ceiling), predicted vectors, random vectors (floor); items unseen by the encoder: predicted vs random;
        and the truly new items of D-1 (uploaded, never interacted with): predicted vs random vs oracle."""
        day = partition_date(context)
        users_today = users.get(day.isoformat())
        inputs, skipped = next_day_inputs(
            context,
            EVAL_CHECKS,
            cee.table_schema(),
            filtered_interactions,
            item_collab_embeddings=collab,
            als_user_factors={k: v for k, v in users.items() if k != day.isoformat()},
        )
        if inputs is None:
            yield from skipped
            return
        collab_prev, users_prev = inputs.models["item_collab_embeddings"], inputs.models["als_user_factors"]
        held_out = cee.evaluate(collab_prev, users_prev, inputs.history, inputs.today)
        new = cee.evaluate_new(
            collab_prev,
            users_prev,
            inputs.history,
            inputs.today,
            truth=truth.affinity_fn(),
            als_next=als_today,
            users_next=users_today,
        )
        table = pl.concat([held_out, new])
        overall = cee.overall(table)
        r50 = {r["variant"]: r["recall@50"] for r in overall.iter_rows(named=True)}
        new_items = cee.new_items(collab_prev)
        ratio = r50.get("predicted", float("nan")) / r50["true_als"] if r50.get("true_als") else float("nan")
        yield dg.Output(
            table,
            output_name="content_encoder_evaluation",
            metadata=to_metadata(
                {
                    **frame_metadata(table, preview_rows=10),
                    "model_partition": inputs.model_partition,
                    "overall": dg.MetadataValue.md(markdown_table(overall)),
                    "per_language": dg.MetadataValue.md(markdown_table(table, max_rows=50)),
                    **{f"{k}_recall@50": float(v) for k, v in r50.items()},
                    "predicted_over_true_recall@50": float(ratio),
                    "new_items": new_items.height,
                    "new_items_with_predicted_vector": int(new_items["predicted_vector"].is_not_null().sum()),
                    "new_items_per_language": dg.MetadataValue.md(
                        markdown_table(table.filter(pl.col("variant").str.starts_with("new_")), max_rows=50)
                    ),
                }
            ),
        )
        yield from EVAL_CHECKS.results(
            {
                "predicted_beats_random_recall_at_50": (
                    r50.get("predicted", 0.0) > r50.get("random", 0.0),
                    {
                        "predicted_recall@50": r50.get("predicted"),
                        "random_recall@50": r50.get("random"),
                        "true_als_recall@50": r50.get("true_als"),
                    },
                ),
                "new_items_predicted_beats_random_recall_at_50": (
                    "new_predicted" not in r50 or r50["new_predicted"] > r50.get("new_random", 0.0),
                    {
                        "new_items": new_items.height,
                        **{f"{k}_recall@50": r50.get(k) for k in cee.NEW_VARIANTS},
                    },
                ),
            }
        )

    return [content_encoder, item_collab_embeddings, content_encoder_evaluation]
