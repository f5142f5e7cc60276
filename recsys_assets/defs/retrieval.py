"""Assets of the retrieval stage: seed 001's two-tower model with BLIP user history, its next-day validation
and the experiment table. A thin shell over :mod:`recsys_assets.stages.two_tower`,
:mod:`~recsys_assets.stages.two_tower_evaluation` and :mod:`~recsys_assets.stages.ranking_metrics`.
"""

import typing

import dagster as dg
import numpy as np
import polars as pl

from ..artifacts import ModelArtifact
from ..stages import two_tower as tt
from ..stages import two_tower_evaluation as tte
from ..stages.ranking_metrics import METRICS
from .checks import Check, CheckSet
from .evaluation import next_day_inputs
from .io_manager import MODEL_IO
from .metadata import frame_metadata, markdown_table, to_metadata
from .params import config_from, to_params
from .partitions import EVAL_WINDOW, PREVIOUS_DAY, TRAIN_WINDOW
from .resources import ReportStoreResource, TruthResource, TwoTowerRulesResource

GROUP = "retrieval"

EVERY_PARTITION = dg.AllPartitionMapping()

DATASET_CHECKS = CheckSet(
    "two_tower_dataset",
    Check("clients_within_bounds", "Every client has 4..2000 window interactions, a positive and a negative."),
    Check("items_with_min_interactions", "Every item has at least min_item_interactions window interactions."),
    Check("balanced_labels", "Positives and negatives are within 5% of 5:5."),
    Check("features_finite", "Every feature is finite."),
)
MODEL_CHECKS = CheckSet(
    "two_tower_model",
    Check("weights_finite", "Every weight is finite."),
    Check("holdout_auc_above_chance", "AUC on held-out clients beats 0.5.", blocking=False),
)
EVAL_CHECKS = CheckSet(
    "two_tower_evaluation",
    Check("metrics_in_unit_interval", "Every metric is in [0, 1]."),
    Check("beats_popularity_and_random_auc", "The model's AUC is above popularity's and random's.", blocking=False),
)


class ItemPcaConfig(dg.Config):
    n_components: int = 128
    """PCA components of the item features (the seed: 128); fewer when there are fewer items."""


def _latest(window: dict[str, pl.DataFrame]) -> pl.DataFrame:
    frames = [df.select("item_id", "language", "status", "blip_embedding") for _, df in sorted(window.items())]
    return (
        pl.concat(frames, how="vertical_relaxed")
        .filter(pl.col("status") != "failed")
        .unique("item_id", keep="last", maintain_order=True)
    )


def _concat(window: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return pl.concat([df for _, df in sorted(window.items())], how="vertical_relaxed")


TwoTowerConfig = config_from(tt.ModelParams, name="TwoTowerConfig")


class EvaluationConfig(dg.Config):
    seed: int = 0
    """Seed of the random baseline."""
    max_catalog_clients: int = 20_000
    """Catalog recall@k is computed for at most this many clients (a seeded sample)."""


@dg.asset(
    ins={
        "evaluations": dg.AssetIn(
            "two_tower_evaluation", partition_mapping=EVERY_PARTITION, metadata={"allow_missing_partitions": True}
        )
    },
    group_name=GROUP,
    compute_kind="polars",
)
def experiment_report(
    context: dg.AssetExecutionContext, reports: ReportStoreResource, evaluations: dict[str, pl.DataFrame]
) -> dg.Output:
    """One row per evaluated partition, laid out like seed 001's "Results": experiment no, train range,
    validation day, then the metrics (two_tower; the baselines follow as their own rows)."""
    rows = []
    n = 0
    for day in sorted(evaluations):
        t = evaluations[day]
        if t.height == 0:
            continue
        n += 1
        for r in t.iter_rows(named=True):
            rows.append({"experiment_no": n, "event_type": "played (p90)", **r})
    report = pl.DataFrame(rows) if rows else pl.DataFrame(schema={"experiment_no": pl.Int64, "val_data": pl.String})
    url = reports.write_csv("experiment_report.csv", report)
    main = report.filter(pl.col("method") == "two_tower") if rows else report
    seed_cols = ["experiment_no", "event_type", "train_data", "val_data", *METRICS]
    return dg.Output(
        report,
        metadata=to_metadata(
            {
                **frame_metadata(report, preview_rows=0),
                "results": dg.MetadataValue.md(
                    markdown_table(main.select([c for c in seed_cols if c in main.columns]), max_rows=200)
                ),
                "all_methods": dg.MetadataValue.md(
                    markdown_table(
                        report.select(
                            [
                                c
                                for c in [
                                    "experiment_no",
                                    "val_data",
                                    "method",
                                    "auc",
                                    "ndcg@10",
                                    "recall@50",
                                    "catalog_recall@50",
                                ]
                                if c in report.columns
                            ]
                        ),
                        max_rows=400,
                    )
                ),
                "experiments": n,
                "csv": dg.MetadataValue.path(url),
            }
        ),
    )


REPORT_ASSETS = [experiment_report]


def build_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """This stage's daily assets, partitioned by ``partitions`` (see ``defs/partitions.py``)."""

    @dg.asset(
        ins={
            "window": dg.AssetIn("filtered_interactions", partition_mapping=TRAIN_WINDOW),
            "embeddings": dg.AssetIn("item_content_embeddings", partition_mapping=TRAIN_WINDOW),
        },
        partitions_def=partitions,
        group_name=GROUP,
        compute_kind="scikit-learn",
        io_manager_key=MODEL_IO,
    )
    def item_pca(
        context: dg.AssetExecutionContext,
        config: ItemPcaConfig,
        two_tower_rules: TwoTowerRulesResource,
        window: dict[str, pl.DataFrame],
        embeddings: dict[str, pl.DataFrame],
    ) -> dg.Output:
        """Partition D: PCA(128) of the BLIP embeddings of D's training items (those passing the dataset's
        filters in D-6 .. D), stored as its arrays (components, mean, variances) -- no pickle."""
        kept, _ = tt.eligible(_concat(window), two_tower_rules.rules())
        items = _latest(embeddings).join(kept.select("item_id").unique(), on="item_id", how="semi")
        if items.height < 2:
            raise dg.Failure(f"only {items.height} training items with BLIP embeddings: cannot fit a PCA")
        art = tt.fit_pca(items["blip_embedding"].to_numpy(), config.n_components)
        ratio = art.arrays["explained_variance_ratio"]
        if art.config["n_components"] < config.n_components:
            context.log.warning(
                f"PCA has {art.config['n_components']} components, fewer than {config.n_components}: {art.config}"
            )
        return dg.Output(
            art,
            metadata=to_metadata(
                {
                    **art.config,
                    "explained_variance": float(ratio.sum()),
                    "explained_variance_first_10": [float(x) for x in ratio[:10]],
                }
            ),
        )

    @dg.asset(
        ins={
            "window": dg.AssetIn("filtered_interactions", partition_mapping=TRAIN_WINDOW),
            "embeddings": dg.AssetIn("item_content_embeddings", partition_mapping=TRAIN_WINDOW),
            "item_pca": dg.AssetIn("item_pca", input_manager_key=MODEL_IO),
        },
        partitions_def=partitions,
        check_specs=DATASET_CHECKS.specs(partitions),
        group_name=GROUP,
        compute_kind="polars",
    )
    def two_tower_dataset(
        context: dg.AssetExecutionContext,
        two_tower_rules: TwoTowerRulesResource,
        window: dict[str, pl.DataFrame],
        embeddings: dict[str, pl.DataFrame],
        item_pca: ModelArtifact,
    ) -> typing.Iterator:
        """Partition D: seed 001's training rows from D-6 .. D -- filters, label pcc > 0.9, 5:5 balance,
        pos/neg history means (own item left out), PCA-128 item features."""
        pca = tt.pca_from_artifact(item_pca)
        features = tt.project(_latest(embeddings), pca)
        interactions = _concat(window)
        rules = two_tower_rules.rules()
        ds, stats = tt.build_dataset(interactions, features, rules, pca.n_components_)
        yield dg.Output(
            ds,
            metadata=to_metadata(
                {
                    **frame_metadata(ds.select("client_id", "item_id", "label", "n_pos_hist", "n_neg_hist")),
                    **stats,
                    "window_days": len(window),
                }
            ),
        )
        yield from DATASET_CHECKS.results(tt.validate_dataset(ds, interactions, rules))

    @dg.asset(
        ins={
            "two_tower_dataset": dg.AssetIn("two_tower_dataset"),
            "item_pca": dg.AssetIn("item_pca", input_manager_key=MODEL_IO),
        },
        partitions_def=partitions,
        check_specs=MODEL_CHECKS.specs(partitions),
        group_name=GROUP,
        compute_kind="torch",
        io_manager_key=MODEL_IO,
    )
    def two_tower_model(
        context: dg.AssetExecutionContext,
        config: TwoTowerConfig,
        two_tower_dataset: pl.DataFrame,
        item_pca: ModelArtifact,
    ) -> typing.Iterator:
        """Partition D: user and item towers trained on two_tower_dataset D; weights + config as safetensors."""
        params = to_params(config, tt.ModelParams)
        res = tt.train(two_tower_dataset, params, log=context.log.info)
        dim = two_tower_dataset.schema["item_features"].size
        days = two_tower_dataset["event_ts"].dt.date()
        train_range = f"{days.min()} .. {days.max()}" if two_tower_dataset.height else "empty"
        art = tt.to_artifact(
            res.model,
            params,
            dim,
            {
                "pca_partition": context.partition_key,
                "pca_components": item_pca.config["n_components"],
                "train_range": train_range,
                "train_days": int(days.n_unique()),
            },
        )
        best = res.history[res.best_epoch]
        yield dg.Output(
            art,
            metadata=to_metadata(
                {
                    "training_curve": dg.MetadataValue.md(markdown_table(res.history, max_rows=50)),
                    "best_epoch": res.best_epoch,
                    "holdout_auc": float(best["holdout_auc"]),
                    "train_rows": res.train_rows,
                    "holdout_rows": res.holdout_rows,
                    "training_seconds": res.seconds,
                    "samples_per_s": res.samples_per_s,
                    "parameters": sum(p.numel() for p in res.model.parameters()),
                    "config": dg.MetadataValue.json(art.config),
                }
            ),
        )
        finite = all(bool(np.isfinite(v).all()) for v in art.arrays.values())
        yield from MODEL_CHECKS.results(
            {
                "weights_finite": (finite, {}),
                "holdout_auc_above_chance": (best["holdout_auc"] > 0.5, {"holdout_auc": float(best["holdout_auc"])}),
            }
        )

    @dg.asset(
        ins={
            "model": dg.AssetIn("two_tower_model", partition_mapping=PREVIOUS_DAY, input_manager_key=MODEL_IO),
            "pca": dg.AssetIn("item_pca", partition_mapping=PREVIOUS_DAY, input_manager_key=MODEL_IO),
            "interactions": dg.AssetIn("filtered_interactions", partition_mapping=EVAL_WINDOW),
            "embeddings": dg.AssetIn("item_content_embeddings", partition_mapping=EVAL_WINDOW),
        },
        partitions_def=partitions,
        check_specs=EVAL_CHECKS.specs(partitions),
        group_name=GROUP,
        compute_kind="numpy",
    )
    def two_tower_evaluation(
        context: dg.AssetExecutionContext,
        config: EvaluationConfig,
        two_tower_rules: TwoTowerRulesResource,
        truth: TruthResource,
        model: dict[str, ModelArtifact],
        pca: dict[str, ModelArtifact],
        interactions: dict[str, pl.DataFrame],
        embeddings: dict[str, pl.DataFrame],
    ) -> typing.Iterator:
        """Partition D: two_tower_model D-1 validated on D -- seed 001's metric table by ranking each client's
        served items, catalog recall@k, beside random, popularity and (simulator) oracle baselines."""
        schema = {"method": pl.String, **{m: pl.Float64 for m in METRICS}}
        inputs, skipped = next_day_inputs(
            context, EVAL_CHECKS, schema, interactions, two_tower_model=model, item_pca=pca
        )
        if inputs is None:
            yield from skipped
            return
        art = inputs.models["two_tower_model"]
        tower = tt.from_artifact(art)
        items = _latest(embeddings)
        features = tt.project(items, tt.pca_from_artifact(inputs.models["item_pca"]))
        table, stats = tte.evaluate(
            tower,
            inputs.today,
            inputs.history,
            features,
            items.select("item_id", "language"),
            two_tower_rules.rules(),
            truth=truth.affinity_fn(),
            seed=config.seed,
            max_catalog_clients=config.max_catalog_clients,
        )
        train_range = f"{art.config.get('train_range')} ({art.config.get('train_days')} days)"
        table = table.with_columns(
            pl.lit(train_range).alias("train_data"), pl.lit(inputs.day.isoformat()).alias("val_data")
        )
        by = {r["method"]: r for r in table.iter_rows(named=True)}
        tw = by["two_tower"]
        meta = {
            **frame_metadata(table, preview_rows=0),
            "metrics": dg.MetadataValue.md(markdown_table(table.select("method", *METRICS))),
            "catalog_recall": dg.MetadataValue.md(markdown_table(table.select("method", pl.col("^catalog_.*$")))),
            "model_partition": inputs.model_partition,
            "train_range": train_range,
            **stats,
            "auc": float(tw["auc"]),
            "recall@50": float(tw["recall@50"]),
            "catalog_recall@50": float(tw["catalog_recall@50"]),
        }
        if "oracle" in by:
            meta["oracle_auc"] = float(by["oracle"]["auc"])
            meta["auc_over_oracle"] = float(tw["auc"] / by["oracle"]["auc"])
        yield dg.Output(table, metadata=to_metadata(meta))
        vals = table.select(*METRICS, pl.col("^catalog_recall.*$")).to_numpy()
        vals = vals[np.isfinite(vals)]
        yield from EVAL_CHECKS.results(
            {
                "metrics_in_unit_interval": (bool(((vals >= 0) & (vals <= 1)).all()), {"metrics": int(vals.size)}),
                "beats_popularity_and_random_auc": (
                    tw["auc"] > by["popularity"]["auc"] and tw["auc"] > by["random"]["auc"],
                    {m: float(by[m]["auc"]) for m in by},
                ),
            }
        )

    return [item_pca, two_tower_dataset, two_tower_model, two_tower_evaluation]
