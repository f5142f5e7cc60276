"""Assets of the collaborative stage: ALS factors per language over a trailing 7-day window, and their
next-day evaluation beside a popularity baseline. A thin shell over :mod:`recsys_assets.stages.als_factors`
and :mod:`recsys_assets.stages.als_evaluation`.
"""

import datetime as dt
import typing
import warnings

import dagster as dg
import polars as pl

from ..stages import als_evaluation as als_eval
from ..stages import als_factors as als
from .checks import Check, CheckSet
from .metadata import frame_metadata, markdown_table, to_metadata
from .partitions import daily_partitions, partition_date
from .resources import AlsEngineResource

GROUP = "collaborative"
WINDOW_DAYS = 7

# Windows of the daily upstream. Partitions before the first one do not exist and are left out (the
# assets say so in their metadata); allow_nonexistent_upstream_partitions is beta in Dagster 1.13.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    # als_factors D trains on D-6 .. D
    TRAIN_WINDOW = dg.TimeWindowPartitionMapping(
        start_offset=-(WINDOW_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
    )
    # als_evaluation D reads the model of D-1 ...
    PREVIOUS_DAY = dg.TimeWindowPartitionMapping(
        start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
    )
    # ... and D-7 .. D of filtered_interactions: the model's training window (seen items, popularity) and D itself
    EVAL_WINDOW = dg.TimeWindowPartitionMapping(
        start_offset=-WINDOW_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
    )

ALS_CHECKS = CheckSet(
    "als_factors",
    daily_partitions,
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
    daily_partitions,
    Check("metrics_in_unit_interval", "Every metric is in [0, 1]."),
    Check("als_beats_popularity_recall_at_50", "ALS recall@50 is above popularity's (all languages).", blocking=False),
)


class AlsConfig(dg.Config):
    """ALS hyper-parameters and the confidence rules (see ``stages/als_factors.py``)."""

    factors: int = 16
    regularization: float = 2.0
    iterations: int = 15
    seed: int = 0
    alpha: float = 2.0
    like_bonus: float = 1.0
    loop_bonus: float = 0.5
    negative_weight: float = 1.0
    min_item_clients: int = 3
    min_client_items: int = 2
    languages: list[str] = []
    """Languages to train; empty = every language with at least ``min_cells_per_language`` cells."""
    min_cells_per_language: int = 100
    max_norm: float = 100.0

    def params(self, num_threads: int) -> als.AlsParams:
        fields = als.AlsParams.__dataclass_fields__
        return als.AlsParams(**{k: v for k, v in self.model_dump().items() if k in fields}, num_threads=num_threads)

    def rules(self) -> als.ConfidenceRules:
        fields = als.ConfidenceRules.__dataclass_fields__
        return als.ConfidenceRules(**{k: v for k, v in self.model_dump().items() if k in fields})


def _window_metadata(day: dt.date, window: dict[str, pl.DataFrame], days: int) -> dict[str, typing.Any]:
    wanted = [(day - dt.timedelta(days=i)).isoformat() for i in reversed(range(days))]
    before_start = [d for d in wanted if d < daily_partitions.start.date().isoformat()]
    meta = {
        "window": f"{wanted[0]} .. {wanted[-1]}",
        "window_days_used": len(window),
        "window_rows": sum(df.height for df in window.values()),
    }
    if before_start:
        meta["partial_window"] = (
            f"the window reaches {len(before_start)} day(s) before the first partition "
            f"({daily_partitions.start.date().isoformat()}): trained on {len(window)} of {days} days"
        )
    return meta


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
        "window": dg.AssetIn("filtered_interactions", partition_mapping=TRAIN_WINDOW),
        "video_catalog": dg.AssetIn("video_catalog"),
    },
    partitions_def=daily_partitions,
    check_specs=ALS_CHECKS.specs(),
    group_name=GROUP,
    compute_kind="implicit",
)
def als_factors(
    context: dg.AssetExecutionContext,
    config: AlsConfig,
    als_engine: AlsEngineResource,
    window: dict[str, pl.DataFrame],
    video_catalog: pl.DataFrame,
) -> typing.Iterator:
    """Partition D: ALS trained on filtered_interactions D-6 .. D, one model per language."""
    day = partition_date(context)
    interactions = pl.concat(list(window.values())) if window else None
    if interactions is None:
        raise dg.Failure(f"no filtered_interactions in the window ending {day}")
    params = config.params(als_engine.num_threads)
    result = als.train_als(
        interactions,
        video_catalog.select("item_id", "language"),
        params,
        config.rules(),
        engine=als_engine.engine(),
        languages=config.languages or None,
        min_cells_per_language=config.min_cells_per_language,
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
        **_window_metadata(day, window, WINDOW_DAYS),
        "engine": als_engine.engine().name,
        "hyper_parameters": dg.MetadataValue.json(config.model_dump()),
        "languages": dg.MetadataValue.md(markdown_table(per_language)),
        "training_seconds": float(sum(st["seconds"] for st in result.stats)),
        "cells_without_language": int(result.stats[0].get("cells_without_language", 0)) if result.stats else 0,
    }
    yield dg.Output(
        result.item_factors,
        output_name="als_factors",
        metadata={**frame_metadata(result.item_factors), **to_metadata(common)},
    )
    yield dg.Output(result.user_factors, output_name="als_user_factors", metadata=frame_metadata(result.user_factors))
    yield from ALS_CHECKS.results(als.validate(result.item_factors, result.stats, config.max_norm))


class AlsEvaluationConfig(dg.Config):
    exclude_seen: bool = True
    """Leave the items a client interacted with in the training window out of its ranking and targets."""


@dg.asset(
    ins={
        "model": dg.AssetIn("als_factors", partition_mapping=PREVIOUS_DAY),
        "users": dg.AssetIn("als_user_factors", partition_mapping=PREVIOUS_DAY),
        "filtered_interactions": dg.AssetIn("filtered_interactions", partition_mapping=EVAL_WINDOW),
    },
    partitions_def=daily_partitions,
    check_specs=EVAL_CHECKS.specs(),
    group_name=GROUP,
    compute_kind="numpy",
)
def als_evaluation(
    context: dg.AssetExecutionContext,
    config: AlsEvaluationConfig,
    model: dict[str, pl.DataFrame],
    users: dict[str, pl.DataFrame],
    filtered_interactions: dict[str, pl.DataFrame],
) -> typing.Iterator:
    """Partition D: als_factors D-1 scored on D's positives (recall@10/50/100, ndcg@10) beside popularity."""
    day = partition_date(context)
    next_day = filtered_interactions[day.isoformat()]
    train_window = {k: v for k, v in filtered_interactions.items() if k != day.isoformat()}
    if not model:
        reason = f"no als_factors partition for {day - dt.timedelta(days=1)} (D is the first partition)"
        context.log.warning(f"als_evaluation {day}: skipped, {reason}")
        yield dg.Output(pl.DataFrame(schema=als_eval.table_schema()), metadata={"skipped": reason})
        yield from EVAL_CHECKS.results(
            {
                "metrics_in_unit_interval": (True, {"skipped": reason}),
                "als_beats_popularity_recall_at_50": (True, {"skipped": reason}),
            }
        )
        return
    item_factors, user_factors = next(iter(model.values())), next(iter(users.values()))
    train = pl.concat(list(train_window.values()))
    table, counts = als_eval.evaluate(item_factors, user_factors, train, next_day, exclude_seen=config.exclude_seen)
    overall = als_eval.overall(table)
    metrics = [c for c in table.columns if "@" in c]
    by_method = {r["method"]: r for r in overall.iter_rows(named=True)}
    als_r50 = by_method.get("als", {}).get("recall@50", float("nan"))
    pop_r50 = by_method.get("popularity", {}).get("recall@50", float("nan"))
    yield dg.Output(
        table,
        metadata={
            **frame_metadata(table, preview_rows=0),
            "model_partition": next(iter(model)),
            "overall": dg.MetadataValue.md(markdown_table(overall)),
            "per_language": dg.MetadataValue.md(markdown_table(table)),
            "counts": dg.MetadataValue.md(markdown_table(counts)),
            "als_recall@50": float(als_r50),
            "popularity_recall@50": float(pop_r50),
            "clients_evaluated": int(sum(c["clients_evaluated"] for c in counts)),
        },
    )
    values = table.select(metrics).to_numpy()
    finite = values[~(values != values)]
    yield from EVAL_CHECKS.results(
        {
            "metrics_in_unit_interval": (bool(((finite >= 0) & (finite <= 1)).all()), {"metrics": len(finite)}),
            "als_beats_popularity_recall_at_50": (
                bool(als_r50 > pop_r50),
                {"als_recall@50": float(als_r50), "popularity_recall@50": float(pop_r50)},
            ),
        }
    )


COLLABORATIVE_ASSETS = [als_factors, als_evaluation]
