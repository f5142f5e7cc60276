"""Assets of the collaborative stage: ALS factors per language over a trailing 7-day window, and their
next-day evaluation beside a popularity baseline. A thin shell over :mod:`recsys_assets.stages.als_factors`
and :mod:`recsys_assets.stages.als_evaluation`.
"""

import typing

import dagster as dg

from ..stages import als_evaluation as als_eval
from ..stages import als_factors as als
from ..stages.ranking_metrics import in_unit_interval
from ..storage import TableRef
from .checks import Check, CheckSet
from .evaluation import evaluation_asset, next_day_inputs
from .metadata import frame_metadata, markdown_table, to_metadata
from .params import config_from, to_params
from .partitions import EVAL_WINDOW, PREVIOUS_DAY, TRAIN_WINDOW, after_previous_day, window_input, window_metadata
from .resources import EVALUATED_COLUMNS, AlsEngineResource

GROUP = "collaborative"

ALS_CHECKS = CheckSet(
    "als_factors",
    Check("factors_finite", "Every item vector is finite."),
    Check("norms_within_bounds", "Every item vector's norm is in (0, max_norm]."),
    Check(
        "every_eligible_item_has_vector",
        "Each item that passed the minimum counts of a trained language has one vector.",
    ),
    Check("one_language_per_item", "No item has vectors in two languages."),
)
EVAL_CHECKS = CheckSet(
    "als_evaluation",
    Check("metrics_in_unit_interval", "Every metric is in [0, 1]."),
    Check("als_beats_popularity_recall_at_50", "ALS recall@50 is above popularity's (all languages).", blocking=False),
)


class AlsConfig(config_from(als.AlsParams, als.ConfidenceRules, exclude=("num_threads",), name="AlsConfigBase")):
    """ALS hyper-parameters and the confidence rules (see ``stages/als_factors.py``)."""

    max_norm: float = 100.0
    """The ``norms_within_bounds`` check fails above this item-vector norm."""


class AlsEvaluationConfig(dg.Config):
    exclude_seen: bool = True
    """Leave the items a client interacted with in the training window out of its ranking and targets."""


def build_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """This stage's daily assets, partitioned by ``partitions`` (see ``defs/partitions.py``)."""

    @dg.multi_asset(
        outs={
            "als_factors": dg.AssetOut(
                description="ALS item factors per language: item_id, language, vector (float32[factors]).",
                is_required=True,
            ),
            "als_user_factors": dg.AssetOut(
                description="ALS client factors per language: client_id, language, vector.", is_required=True
            ),
        },
        ins={
            "window": window_input("filtered_interactions", TRAIN_WINDOW),
            "video_catalog": dg.AssetIn("video_catalog"),
        },
        deps=[after_previous_day("als_factors")],
        # the ordering dependency is als_factors' own: on als_user_factors it would be a dependency on another
        # asset's previous day, which Dagster extends backfills through
        internal_asset_deps={
            "als_factors": {dg.AssetKey(k) for k in ("filtered_interactions", "video_catalog", "als_factors")},
            "als_user_factors": {dg.AssetKey(k) for k in ("filtered_interactions", "video_catalog")},
        },
        partitions_def=partitions,
        check_specs=ALS_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def als_factors(
        context: dg.AssetExecutionContext,
        config: AlsConfig,
        als_engine: AlsEngineResource,
        window: dict[str, TableRef],
        video_catalog: TableRef,
    ) -> typing.Iterator:
        """Partition D: ALS trained on filtered_interactions D-6 .. D, one model per language."""
        if not window:
            raise dg.Failure(f"no filtered_interactions in the window ending {context.partition_key}")
        params = to_params(config, als.AlsParams, num_threads=als_engine.num_threads)
        result = als_engine.train(
            window, video_catalog, params, to_params(config, als.ConfidenceRules), config.max_norm
        )
        for st in result.stats:
            if not st["trained"]:
                context.log.warning(f"ALS for {st['language']!r} not trained: {st.get('skipped')}")
        per_language = [
            {
                k: st.get(k)
                for k in (
                    "language",
                    "trained",
                    "clients",
                    "items",
                    "nnz",
                    "negative_cells",
                    "items_below_min_clients",
                    "clients_below_min_items",
                    "seconds",
                )
            }
            for st in result.stats
        ]
        common = {
            **window_metadata(context, window, result.rows),
            "engine": als_engine.name,
            "hyper_parameters": dg.MetadataValue.json(config.model_dump()),
            "languages": dg.MetadataValue.md(markdown_table(per_language)),
            "training_seconds": float(sum(st["seconds"] for st in result.stats)),
            "cells_without_language": int(result.stats[0].get("cells_without_language", 0)) if result.stats else 0,
        }
        table_metadata = als_engine.spark.table_metadata if als_engine.name == "mllib" else frame_metadata
        yield dg.Output(
            result.item_factors,
            output_name="als_factors",
            metadata={**table_metadata(result.item_factors), **to_metadata(common)},
        )
        yield dg.Output(
            result.user_factors, output_name="als_user_factors", metadata=table_metadata(result.user_factors)
        )
        if als_engine.name == "mllib":
            als_engine.spark.release()
        yield from ALS_CHECKS.results(result.verdicts)

    @evaluation_asset(
        ins={
            "model": window_input("als_factors", PREVIOUS_DAY),
            "users": window_input("als_user_factors", PREVIOUS_DAY),
            "filtered_interactions": window_input("filtered_interactions", EVAL_WINDOW, columns=EVALUATED_COLUMNS),
        },
        deps=[after_previous_day("als_evaluation")],
        partitions_def=partitions,
        check_specs=EVAL_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def als_evaluation(
        context: dg.AssetExecutionContext,
        config: AlsEvaluationConfig,
        als_engine: AlsEngineResource,
        model: dict[str, TableRef],
        users: dict[str, TableRef],
        filtered_interactions: dict[str, TableRef],
    ) -> typing.Iterator:
        """Partition D: als_factors D-1 scored on D's positives (recall@10/50/100, ndcg@10) beside popularity.
        Computed where ALS runs: in this process (``implicit``) or on Spark's executors (``mllib``)."""
        inputs, skipped = next_day_inputs(
            context,
            EVAL_CHECKS,
            als_eval.table_schema(),
            filtered_interactions,
            als_factors=model,
            als_user_factors=users,
        )
        if inputs is None:
            yield from skipped
            return
        table, counts = als_engine.evaluate(
            inputs.models["als_factors"],
            inputs.models["als_user_factors"],
            inputs.history,
            inputs.today,
            exclude_seen=config.exclude_seen,
        )
        overall = als_eval.overall(table)
        metrics = [c for c in table.columns if "@" in c]
        by_method = {r["method"]: r for r in overall.iter_rows(named=True)}
        als_r50 = by_method.get("als", {}).get("recall@50", float("nan"))
        pop_r50 = by_method.get("popularity", {}).get("recall@50", float("nan"))
        yield dg.Output(
            table,
            output_name="als_evaluation",
            metadata={
                **frame_metadata(table, preview_rows=10),
                "model_partition": inputs.model_partition,
                "engine": als_engine.name,
                "overall": dg.MetadataValue.md(markdown_table(overall)),
                "per_language": dg.MetadataValue.md(markdown_table(table)),
                "counts": dg.MetadataValue.md(markdown_table(counts)),
                "als_recall@50": float(als_r50),
                "popularity_recall@50": float(pop_r50),
                "clients_evaluated": int(sum(c["clients_evaluated"] for c in counts)),
            },
        )
        yield from EVAL_CHECKS.results(
            {
                "metrics_in_unit_interval": in_unit_interval(table, metrics),
                "als_beats_popularity_recall_at_50": (
                    bool(als_r50 > pop_r50),
                    {"als_recall@50": float(als_r50), "popularity_recall@50": float(pop_r50)},
                ),
            }
        )

    return [als_factors, als_evaluation]
