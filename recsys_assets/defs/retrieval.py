"""Assets of the retrieval stage: seed 001's two-tower model with BLIP user history, its next-day validation
and the experiment table. A thin shell over :mod:`recsys_assets.stages.two_tower`,
:mod:`~recsys_assets.stages.two_tower_evaluation` and :mod:`~recsys_assets.stages.ranking_metrics`.
"""

import dataclasses
import datetime as dt
import typing

import dagster as dg
import numpy as np
import polars as pl

from ..artifacts import ModelArtifact
from ..stages import two_tower as tt
from ..stages import two_tower_evaluation as tte
from ..stages.ranking_metrics import METRICS
from .checks import Check, CheckSet
from .collaborative import EVAL_WINDOW, PREVIOUS_DAY, TRAIN_WINDOW
from .metadata import frame_metadata, markdown_table, to_metadata
from .partitions import daily_partitions, partition_date
from .resources import ReportStoreResource, TruthResource

GROUP = "retrieval"
MODEL_IO = "model_io_manager"

EVERY_PARTITION = dg.AllPartitionMapping()

DATASET_CHECKS = CheckSet(
    "two_tower_dataset",
    daily_partitions,
    Check("clients_within_bounds", "Every client has 4..2000 window interactions, a positive and a negative."),
    Check("items_with_min_interactions", "Every item has at least min_item_interactions window interactions."),
    Check("balanced_labels", "Positives and negatives are within 5% of 5:5."),
    Check("features_finite", "Every feature is finite."),
)
MODEL_CHECKS = CheckSet(
    "two_tower_model",
    daily_partitions,
    Check("weights_finite", "Every weight is finite."),
    Check("holdout_auc_above_chance", "AUC on held-out clients beats 0.5.", blocking=False),
)
EVAL_CHECKS = CheckSet(
    "two_tower_evaluation",
    daily_partitions,
    Check("metrics_in_unit_interval", "Every metric is in [0, 1]."),
    Check("beats_popularity_and_random_auc", "The model's AUC is above popularity's and random's.", blocking=False),
)


class DatasetConfig(dg.Config):
    positive_pcc_above: float = 0.9
    min_client_interactions: int = 4
    max_client_interactions: int = 2000
    min_client_positives: int = 1
    min_client_negatives: int = 1
    min_item_interactions: int = 3
    balance: bool = True
    seed: int = 0
    positive_weight: float = 1.0
    """Sample weights (the seed: none, i.e. 1 and 1)."""
    negative_weight: float = 1.0
    pca_components: int = 128

    def rules(self) -> tt.DatasetRules:
        fields = {f.name for f in dataclasses.fields(tt.DatasetRules)}
        return tt.DatasetRules(**{k: v for k, v in self.model_dump().items() if k in fields})


def _latest(window: dict[str, pl.DataFrame]) -> pl.DataFrame:
    frames = [df.select("item_id", "language", "status", "blip_embedding") for _, df in sorted(window.items())]
    return (
        pl.concat(frames, how="vertical_relaxed")
        .filter(pl.col("status") != "failed")
        .unique("item_id", keep="last", maintain_order=True)
    )


def _concat(window: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return pl.concat([df for _, df in sorted(window.items())], how="vertical_relaxed")


@dg.asset(
    ins={
        "window": dg.AssetIn("filtered_interactions", partition_mapping=TRAIN_WINDOW),
        "embeddings": dg.AssetIn("item_content_embeddings", partition_mapping=TRAIN_WINDOW),
    },
    partitions_def=daily_partitions,
    group_name=GROUP,
    compute_kind="scikit-learn",
    io_manager_key=MODEL_IO,
)
def item_pca(
    context: dg.AssetExecutionContext,
    config: DatasetConfig,
    window: dict[str, pl.DataFrame],
    embeddings: dict[str, pl.DataFrame],
) -> dg.Output:
    """Partition D: PCA(128) of the BLIP embeddings of D's training items (those passing the dataset's
    filters in D-6 .. D), stored as its arrays (components, mean, variances) -- no pickle."""
    kept, _ = tt.eligible(_concat(window), config.rules())
    items = _latest(embeddings).join(kept.select("item_id").unique(), on="item_id", how="semi")
    if items.height < 2:
        raise dg.Failure(f"only {items.height} training items with BLIP embeddings: cannot fit a PCA")
    art = tt.fit_pca(items["blip_embedding"].to_numpy(), config.pca_components, config.seed)
    ratio = art.arrays["explained_variance_ratio"]
    if art.config["n_components"] < config.pca_components:
        context.log.warning(
            f"PCA has {art.config['n_components']} components, fewer than {config.pca_components}: {art.config}"
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
    partitions_def=daily_partitions,
    check_specs=DATASET_CHECKS.specs(),
    group_name=GROUP,
    compute_kind="polars",
)
def two_tower_dataset(
    context: dg.AssetExecutionContext,
    config: DatasetConfig,
    window: dict[str, pl.DataFrame],
    embeddings: dict[str, pl.DataFrame],
    item_pca: ModelArtifact,
) -> typing.Iterator:
    """Partition D: seed 001's training rows from D-6 .. D -- filters, label pcc > 0.9, 5:5 balance,
    pos/neg history means (own item left out), PCA-128 item features."""
    pca = tt.pca_from_artifact(item_pca)
    features = tt.project(_latest(embeddings), pca)
    interactions = _concat(window)
    rules = config.rules()
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
    yield from DATASET_CHECKS.results(_validate_dataset(ds, interactions, rules))


def _validate_dataset(ds: pl.DataFrame, window: pl.DataFrame, rules: tt.DatasetRules) -> dict[str, tuple[bool, dict]]:
    lab = tt.labelled(window, rules)
    c = lab.group_by("client_id").agg(n=pl.len(), pos=pl.col("label").sum(), neg=(~pl.col("label")).sum())
    c = c.join(ds.select("client_id").unique(), on="client_id", how="semi")
    bad_clients = c.filter(
        (pl.col("n") < rules.min_client_interactions)
        | (pl.col("n") > rules.max_client_interactions)
        | (pl.col("pos") < rules.min_client_positives)
        | (pl.col("neg") < rules.min_client_negatives)
    ).height
    i = lab.group_by("item_id").len().join(ds.select("item_id").unique(), on="item_id", how="semi")
    bad_items = i.filter(pl.col("len") < rules.min_item_interactions).height
    pos = int(ds["label"].sum())
    share = pos / ds.height if ds.height else 0.5
    finite = (
        all(bool(np.isfinite(ds[col].to_numpy()).all()) for col in ("pos_hist", "neg_hist", "item_features"))
        if ds.height
        else True
    )
    return {
        "clients_within_bounds": (bad_clients == 0, {"clients_out_of_bounds": bad_clients}),
        "items_with_min_interactions": (bad_items == 0, {"items_below_min": bad_items}),
        "balanced_labels": ((not rules.balance) or abs(share - 0.5) <= 0.05, {"positive_share": share}),
        "features_finite": (finite, {}),
    }


class TwoTowerConfig(dg.Config):
    """See ``stages/two_tower.py``: ``loss`` is ``bce`` (the seed) or ``inbatch_softmax`` (logQ-corrected)."""

    hidden: list[int] = [128, 64]
    out_dim: int = 32
    dropout: float = 0.1
    loss: str = "bce"
    temperature: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 1024
    epochs: int = 8
    patience: int = 3
    holdout_share: float = 0.1
    seed: int = 0
    device: str = "auto"

    def params(self) -> tt.ModelParams:
        values = self.model_dump()
        values["hidden"] = tuple(values["hidden"])
        return tt.ModelParams(**values)


@dg.asset(
    ins={
        "two_tower_dataset": dg.AssetIn("two_tower_dataset"),
        "item_pca": dg.AssetIn("item_pca", input_manager_key=MODEL_IO),
    },
    partitions_def=daily_partitions,
    check_specs=MODEL_CHECKS.specs(),
    group_name=GROUP,
    compute_kind="torch",
    io_manager_key=MODEL_IO,
)
def two_tower_model(
    context: dg.AssetExecutionContext, config: TwoTowerConfig, two_tower_dataset: pl.DataFrame, item_pca: ModelArtifact
) -> typing.Iterator:
    """Partition D: user and item towers trained on two_tower_dataset D; weights + config as safetensors."""
    params = config.params()
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


class EvaluationConfig(dg.Config):
    positive_pcc_above: float = 0.9
    """The label of a validation row, as in two_tower_dataset."""
    seed: int = 0
    max_catalog_clients: int = 20_000


@dg.asset(
    ins={
        "model": dg.AssetIn("two_tower_model", partition_mapping=PREVIOUS_DAY, input_manager_key=MODEL_IO),
        "pca": dg.AssetIn("item_pca", partition_mapping=PREVIOUS_DAY, input_manager_key=MODEL_IO),
        "interactions": dg.AssetIn("filtered_interactions", partition_mapping=EVAL_WINDOW),
        "embeddings": dg.AssetIn("item_content_embeddings", partition_mapping=EVAL_WINDOW),
    },
    partitions_def=daily_partitions,
    check_specs=EVAL_CHECKS.specs(),
    group_name=GROUP,
    compute_kind="numpy",
)
def two_tower_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    truth: TruthResource,
    model: dict[str, ModelArtifact],
    pca: dict[str, ModelArtifact],
    interactions: dict[str, pl.DataFrame],
    embeddings: dict[str, pl.DataFrame],
) -> typing.Iterator:
    """Partition D: two_tower_model D-1 validated on D -- seed 001's metric table by ranking each client's
    served items, catalog recall@k, beside random, popularity and (simulator) oracle baselines."""
    day = partition_date(context)
    schema = {"method": pl.String, **{m: pl.Float64 for m in METRICS}}
    if not model:
        reason = f"no two_tower_model partition for {day - dt.timedelta(days=1)} (D is the first partition)"
        context.log.warning(f"two_tower_evaluation {day}: skipped, {reason}")
        yield dg.Output(pl.DataFrame(schema=schema), metadata={"skipped": reason})
        yield from EVAL_CHECKS.results({n: (True, {"skipped": reason}) for n in EVAL_CHECKS.checks})
        return
    art = next(iter(model.values()))
    tower = tt.from_artifact(art)
    p = tt.pca_from_artifact(next(iter(pca.values())))
    items = _latest(embeddings)
    features = tt.project(items, p)
    history = pl.concat([v for k, v in sorted(interactions.items()) if k != day.isoformat()])
    rules = tt.DatasetRules(positive_pcc_above=config.positive_pcc_above)
    table, stats = tte.evaluate(
        tower,
        interactions[day.isoformat()],
        history,
        features,
        items.select("item_id", "language"),
        rules,
        truth=truth.affinity_fn(),
        seed=config.seed,
        max_catalog_clients=config.max_catalog_clients,
    )
    train_range = f"{art.config.get('train_range')} ({art.config.get('train_days')} days)"
    table = table.with_columns(pl.lit(train_range).alias("train_data"), pl.lit(day.isoformat()).alias("val_data"))
    by = {r["method"]: r for r in table.iter_rows(named=True)}
    tw = by["two_tower"]
    meta = {
        **frame_metadata(table, preview_rows=0),
        "metrics": dg.MetadataValue.md(markdown_table(table.select("method", *METRICS))),
        "catalog_recall": dg.MetadataValue.md(markdown_table(table.select("method", pl.col("^catalog_.*$")))),
        "model_partition": next(iter(model)),
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


RETRIEVAL_ASSETS = [item_pca, two_tower_dataset, two_tower_model, two_tower_evaluation]
REPORT_ASSETS = [experiment_report]
