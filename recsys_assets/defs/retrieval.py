"""Assets of the retrieval stage: seed 001's two-tower model with BLIP user history, its next-day validation,
the ablations beside it, and the experiment table. A thin shell over :mod:`recsys_assets.stages.two_tower`,
:mod:`~recsys_assets.stages.two_tower_evaluation` and :mod:`~recsys_assets.stages.ranking_metrics`.

Seed 001's event set: every *played* event of ``raw_interactions`` (not seed 000's phase-1 output, from
which neutral rows and high-CTR clients are gone), label ``pcc > 0.9``, the seed's client and item filters.
"""

import dataclasses
import datetime as dt
import hashlib
import json
import typing

import dagster as dg
import numpy as np
import polars as pl

from ..artifacts import ModelArtifact
from ..stages import plots
from ..stages import two_tower as tt
from ..stages import two_tower_evaluation as tte
from ..stages.item_content_embeddings import POOLED_COLUMNS, float32_vectors
from ..stages.ranking_metrics import ALL_METRICS, LEGEND, METRICS, in_unit_interval
from .checks import Check, CheckSet
from .evaluation import evaluation_asset, next_day_inputs
from .guards import GPU_POOL
from .io_manager import MODEL_IO
from .metadata import frame_metadata, latest_partition_metadata, markdown_table, png_metadata, to_metadata
from .params import config_from, to_params
from .partitions import (
    EVAL_WINDOW,
    PREVIOUS_DAY,
    TRAIN_WINDOW,
    WINDOW_DAYS,
    after_previous_day,
    columns_input,
    latest_per_item,
    partition_date,
    train_window_start,
    window_input,
)
from .resources import ReportStoreResource, TruthResource, TwoTowerRulesResource

GROUP = "retrieval"
EVENT_SET = "played (p90): every played event of raw_interactions, label pcc > 0.9 (seed 001)"

EVERY_PARTITION = dg.AllPartitionMapping()

DATASET_CHECKS = CheckSet(
    "two_tower_dataset",
    Check("clients_within_bounds", "Every client has 4..2000 window interactions, a positive and a negative."),
    Check("items_with_min_interactions", "Every item has at least min_item_interactions window interactions."),
    Check("balanced_labels", "Positives and negatives are within 5% of 5:5."),
    Check("features_finite", "Every feature is finite."),
    Check(
        "rows_resolve_to_their_history_and_item",
        "Every row's history_row is its own client's history as of its day, and its item_row its own item.",
    ),
)


class DatasetStorageConfig(dg.Config):
    buckets: int = 8
    """Client buckets the dataset is built in (memory: about one bucket of the window at a time)."""
    vector_dtype: str = "float32"
    """How two_tower_user_history and two_tower_item_features store their vectors: ``float32`` or ``float16``
    (half the bytes; training gathers float32 batches either way)."""


def _dataset(
    rows: typing.Mapping[str, pl.DataFrame], histories: typing.Mapping[str, pl.DataFrame], items: typing.Mapping
) -> tt.Dataset:
    """One day's dataset from the three window inputs of one partition each."""
    return tt.Dataset(next(iter(rows.values())), next(iter(histories.values())), next(iter(items.values())))


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
ABLATION_CHECKS = CheckSet(
    "two_tower_ablations",
    Check("metrics_in_unit_interval", "Every metric is in [0, 1]."),
)


class ItemPcaConfig(dg.Config):
    n_components: int = 128
    """PCA components of the item features (the seed: 128); fewer when there are fewer items."""


TwoTowerConfig = config_from(tt.ModelParams, name="TwoTowerConfig")


class EvaluationConfig(dg.Config):
    seed: int = 0
    """Seed of the random baseline."""
    max_catalog_clients: int = 20_000
    """Catalog recall@k is computed for at most this many clients (a seeded sample)."""
    client_buckets: int = 8
    """The served rows are scored this many client buckets at a time (memory: the day's rows plus one bucket's
    window history)."""


class AblationConfig(EvaluationConfig):
    variants: list[str] = ["inbatch_softmax", "true_content"]
    """Which ablations to train on D-7 .. D-1 and validate on D beside two_tower_evaluation:
    ``inbatch_softmax`` (the same features, in-batch softmax with logQ correction) and ``true_content``
    (the simulator's true item content vectors instead of the BLIP embeddings: what a perfect encoder
    would give; skipped where there is no truth)."""


def _latest(window: typing.Mapping[str, pl.LazyFrame]) -> pl.DataFrame:
    """Each item's latest embedding of the window, failed items left out, BLIP as float32."""
    latest = latest_per_item(window)
    if latest.height == 0:
        return pl.DataFrame(schema={"item_id": pl.Int64, "language": pl.String, "status": pl.String})
    return float32_vectors(latest.filter(pl.col("status") != "failed").select(POOLED_COLUMNS))


def experiment_id(val_day: str, method: str, config: typing.Mapping[str, typing.Any], fingerprint: str) -> str:
    """Stable across reruns and added days: the validation day, the method, and a digest of what defines it."""
    digest = hashlib.sha256(json.dumps([method, dict(config), fingerprint], sort_keys=True, default=str).encode())
    return f"{val_day}:{method}:{digest.hexdigest()[:10]}"


def _embedding_provenance(context: dg.AssetExecutionContext, day: str) -> tuple[str, bool]:
    md = latest_partition_metadata(context.instance, dg.AssetKey("item_content_embeddings"), [day]).get(day, {})
    return str(md.get("model_fingerprint", "unknown")), bool(md.get("random_weights", False))


def _describe(table: pl.DataFrame, **columns: typing.Any) -> pl.DataFrame:
    return table.with_columns(*(pl.lit(v).alias(k) for k, v in columns.items()))


@dg.asset(
    ins={
        "evaluations": dg.AssetIn(
            "two_tower_evaluation", partition_mapping=EVERY_PARTITION, metadata={"allow_missing_partitions": True}
        ),
        "ablations": dg.AssetIn(
            "two_tower_ablations", partition_mapping=EVERY_PARTITION, metadata={"allow_missing_partitions": True}
        ),
        "cold_start": dg.AssetIn(
            "content_encoder_evaluation", partition_mapping=EVERY_PARTITION, metadata={"allow_missing_partitions": True}
        ),
    },
    group_name=GROUP,
)
def experiment_report(
    context: dg.AssetExecutionContext,
    reports: ReportStoreResource,
    evaluations: dict[str, pl.DataFrame],
    ablations: dict[str, pl.DataFrame],
    cold_start: dict[str, pl.DataFrame],
) -> dg.Output:
    """Every evaluated day, laid out like seed 001's "Results" (two_tower), then every method and ablation
    with its stable experiment id, model config, embedding fingerprint and partitions (CSV), and a plot; beside
    it the cold-start evaluation per day, variant and language (held-out items and the never-played uploads)."""
    frames = [
        t
        for _, t in sorted(
            {**{f"e{k}": v for k, v in evaluations.items()}, **{f"a{k}": v for k, v in ablations.items()}}.items()
        )
        if t.height
    ]
    report = (
        pl.concat(frames, how="diagonal_relaxed").sort("val_data", "method")
        if frames
        else pl.DataFrame(schema={"experiment_id": pl.String, "val_data": pl.String, "method": pl.String})
    )
    url = reports.write_csv("experiment_report.csv", report)
    main = report.filter(pl.col("method") == "two_tower") if report.height else report
    seed_cols = ["experiment_id", "event_type", "train_data", "val_data", *METRICS, "mrr_first", "auc_per_client"]
    summary_cols = ["val_data", "method", "auc", "auc_per_client", "ndcg@10", "recall@50", "catalog_recall@50"]
    meta: dict[str, typing.Any] = {
        **frame_metadata(report.select([c for c in report.columns if c != "model_config"]), preview_rows=10),
        "results": dg.MetadataValue.md(
            markdown_table(main.select([c for c in seed_cols if c in main.columns]), max_rows=200)
        ),
        "all_methods": dg.MetadataValue.md(
            markdown_table(report.select([c for c in summary_cols if c in report.columns]), max_rows=400)
        ),
        "legend": dg.MetadataValue.md(markdown_table([{"metric": k, "definition": v} for k, v in LEGEND.items()])),
        "experiments": int(main.height),
        "csv": dg.MetadataValue.path(url),
    }
    cold = [t.with_columns(val_data=pl.lit(day)) for day, t in sorted(cold_start.items()) if t.height]
    if cold:
        table = pl.concat(cold, how="diagonal_relaxed").select("val_data", pl.exclude("val_data"))
        meta["cold_start_results"] = dg.MetadataValue.md(
            markdown_table(
                table.select("val_data", "variant", "language", "candidates", "targets", "clients", "recall@50"),
                max_rows=400,
            )
        )
        meta["cold_start_csv"] = dg.MetadataValue.path(reports.write_csv("cold_start_report.csv", table))
    if report.height and "auc" in report.columns:
        png = plots.metric_by_day(report.to_dicts(), "auc", "AUC on the validation day, per method")
        meta.update(png_metadata(png, reports.write_bytes("experiment_report_auc.png", png), "auc_by_day"))
    return dg.Output(report, metadata=to_metadata(meta))


REPORT_ASSETS = [experiment_report]


def build_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """This stage's daily assets, partitioned by ``partitions`` (see ``defs/partitions.py``)."""

    @dg.asset(
        ins={
            "window": window_input("raw_interactions", TRAIN_WINDOW, columns=tt.EVENT_COLUMNS),
            "embeddings": window_input("item_content_embeddings", TRAIN_WINDOW, columns=POOLED_COLUMNS),
        },
        deps=[after_previous_day("item_pca")],
        partitions_def=partitions,
        group_name=GROUP,
        io_manager_key=MODEL_IO,
    )
    def item_pca(
        context: dg.AssetExecutionContext,
        config: ItemPcaConfig,
        two_tower_rules: TwoTowerRulesResource,
        window: dict[str, pl.LazyFrame],
        embeddings: dict[str, pl.LazyFrame],
    ) -> dg.Output:
        """Partition D: PCA(128) of the BLIP embeddings of D's training items (those passing the dataset's
        filters in D-6 .. D), stored as its arrays (components, mean, variances) -- no pickle. The window's
        filters run in the streaming engine; the PCA is fitted from chunks of items."""
        days = [lf for _, lf in sorted(window.items())]
        if not days:
            raise dg.Failure("no raw_interactions partition in the training window", allow_retries=False)
        kept = tt.eligible_items(pl.concat(days, how="vertical_relaxed"), two_tower_rules.rules())
        items = latest_per_item(embeddings, items=kept, where=pl.col("status") != "failed")
        if items.height < 2:
            raise dg.Failure(f"only {items.height} training items with BLIP embeddings: cannot fit a PCA")
        blip = items["blip_embedding"]
        chunks = (blip.slice(s, 65_536).to_numpy() for s in range(0, len(blip), 65_536))
        art = tt.fit_pca_chunks(chunks, config.n_components)
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

    @dg.multi_asset(
        outs={
            "two_tower_dataset": dg.AssetOut(
                description="Seed 001's training rows of D-6 .. D by id: client_id, item_id, label, weight, and the "
                "history_row / item_row they point at.",
                is_required=True,
            ),
            "two_tower_user_history": dg.AssetOut(
                description="One row per (client, day) with training rows: the pos/neg history means of the client's "
                "window events before that day (PCA space), with their counts.",
                is_required=True,
            ),
            "two_tower_item_features": dg.AssetOut(
                description="One row per item with training rows: its BLIP embedding through item_pca D.",
                is_required=True,
            ),
        },
        ins={
            "window": window_input("raw_interactions", TRAIN_WINDOW, columns=tt.EVENT_COLUMNS),
            "embeddings": window_input("item_content_embeddings", TRAIN_WINDOW, columns=POOLED_COLUMNS),
            "item_pca": dg.AssetIn("item_pca", input_manager_key=MODEL_IO),
        },
        # no dependency on its own previous day (conventions.ORDERED_BY_INPUTS): Dagster refuses a backfill of a
        # multi-asset whose keys get different days, and a previous-day dependency of one key on another extends
        # the days of the dependent key only; its DayWindow inputs order it after the upstream days it reads
        partitions_def=partitions,
        check_specs=DATASET_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def two_tower_dataset(
        context: dg.AssetExecutionContext,
        config: DatasetStorageConfig,
        two_tower_rules: TwoTowerRulesResource,
        window: dict[str, pl.LazyFrame],
        embeddings: dict[str, pl.LazyFrame],
        item_pca: ModelArtifact,
    ) -> typing.Iterator:
        """Partition D: seed 001's training rows from the played events of D-6 .. D -- filters, label
        pcc > 0.9, 5:5 balance, pos/neg history means as of each row's day, PCA-128 item features -- stored
        by id: rows, (client, day) histories and item features, each once. Built in client buckets spilled
        to disk and streamed into the partitions, so the week is never in memory whole."""
        import tempfile

        features = tt.project(_latest(embeddings), tt.pca_from_artifact(item_pca))
        rules = two_tower_rules.rules()
        days = [lf for _, lf in sorted(window.items())]
        if not days:
            raise dg.Failure("no raw_interactions partition in the training window", allow_retries=False)
        with tempfile.TemporaryDirectory(prefix="two_tower_dataset-") as spill:
            ds = tt.build_dataset_spilled(
                pl.concat(days, how="vertical_relaxed"),
                features,
                rules,
                train_window_start(partition_date(context)),
                spill,
                buckets=config.buckets,
                vector_dtype=config.vector_dtype,
            )
            stats = ds.stats
            yield dg.Output(
                ds.rows,
                output_name="two_tower_dataset",
                metadata=to_metadata(
                    {
                        **frame_metadata(ds.rows.select("client_id", "item_id", "label", "history_row", "item_row")),
                        **stats,
                        "event_set": EVENT_SET,
                        "window_days": len(window),
                    }
                ),
            )
            histories = ds.histories
            yield dg.Output(
                histories,
                output_name="two_tower_user_history",
                metadata=to_metadata(
                    {
                        **frame_metadata(histories.select("client_id", "history_day", "n_pos_hist", "n_neg_hist")),
                        "clients": int(histories.select(pl.col("client_id").n_unique()).collect().item()),
                        "without_history": int(
                            histories.select(((pl.col("n_pos_hist") == 0) & (pl.col("n_neg_hist") == 0)).sum())
                            .collect()
                            .item()
                        ),
                    }
                ),
            )
            yield dg.Output(
                ds.items,
                output_name="two_tower_item_features",
                metadata=to_metadata(
                    {
                        **frame_metadata(ds.items.select("item_row", "item_id")),
                        "feature_dim": int(ds.items.schema["features"].size),
                    }
                ),
            )
            yield from DATASET_CHECKS.results(ds.verdicts)

    @dg.asset(
        ins={
            "two_tower_dataset": columns_input("two_tower_dataset", tt.TRAINING_COLUMNS),
            "two_tower_user_history": dg.AssetIn("two_tower_user_history"),
            "two_tower_item_features": dg.AssetIn("two_tower_item_features"),
            "item_pca": dg.AssetIn("item_pca", input_manager_key=MODEL_IO),
        },
        partitions_def=partitions,
        pool=GPU_POOL,
        check_specs=MODEL_CHECKS.specs(partitions),
        group_name=GROUP,
        io_manager_key=MODEL_IO,
    )
    def two_tower_model(
        context: dg.AssetExecutionContext,
        config: TwoTowerConfig,
        reports: ReportStoreResource,
        two_tower_dataset: pl.LazyFrame,
        two_tower_user_history: pl.LazyFrame,
        two_tower_item_features: pl.LazyFrame,
        item_pca: ModelArtifact,
    ) -> typing.Iterator:
        """Partition D: user and item towers trained on two_tower_dataset D (rows gather their history and item
        features by index, on the training device); weights + config as safetensors. The three tables are
        scanned, and read into the training tensors a column at a time."""
        params = to_params(config, tt.ModelParams)
        ds = tt.Dataset(two_tower_dataset, two_tower_user_history, two_tower_item_features)
        res = tt.train(ds, params, log=context.log.info)
        dim = int(two_tower_item_features.collect_schema()["features"].size)
        day = pl.col("event_ts").dt.date()
        span = two_tower_dataset.select(lo=day.min(), hi=day.max(), n=day.n_unique(), rows=pl.len()).collect().row(0)
        train_range = f"{span[0]} .. {span[1]}" if span[3] else "empty"
        art = tt.to_artifact(
            res.model,
            params,
            dim,
            {
                "pca_partition": context.partition_key,
                "dataset_partition": context.partition_key,
                "pca_components": item_pca.config["n_components"],
                "train_range": train_range,
                "train_days": int(span[2]) if span[3] else 0,
                "event_set": EVENT_SET,
            },
        )
        best = res.history[res.best_epoch]
        png = plots.training_curve(res.history, f"two_tower_model {context.partition_key} ({params.loss})")
        png_url = reports.write_bytes(f"two_tower_model/{context.partition_key}/training_curve.png", png)
        yield dg.Output(
            art,
            metadata=to_metadata(
                {
                    **png_metadata(png, png_url, "training_curve"),
                    "training_table": dg.MetadataValue.md(markdown_table(res.history, max_rows=50)),
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

    @evaluation_asset(
        ins={
            "model": window_input("two_tower_model", PREVIOUS_DAY, input_manager_key=MODEL_IO),
            "pca": window_input("item_pca", PREVIOUS_DAY, input_manager_key=MODEL_IO),
            "interactions": window_input("raw_interactions", EVAL_WINDOW, columns=tt.EVENT_COLUMNS),
            "embeddings": window_input("item_content_embeddings", EVAL_WINDOW, columns=POOLED_COLUMNS),
        },
        deps=[after_previous_day("two_tower_evaluation")],
        partitions_def=partitions,
        check_specs=EVAL_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def two_tower_evaluation(
        context: dg.AssetExecutionContext,
        config: EvaluationConfig,
        two_tower_rules: TwoTowerRulesResource,
        truth: TruthResource,
        model: dict[str, ModelArtifact],
        pca: dict[str, ModelArtifact],
        interactions: dict[str, pl.LazyFrame],
        embeddings: dict[str, pl.LazyFrame],
    ) -> typing.Iterator:
        """Partition D: two_tower_model D-1 validated on D -- seed 001's metric table by ranking each client's
        served items, catalog recall@k, beside random, popularity and (simulator) oracle baselines. The window
        is scanned lazily (the rule's columns only) and scored in client buckets."""
        inputs, skipped = next_day_inputs(
            context, EVAL_CHECKS, tte.table_schema(), interactions, two_tower_model=model, item_pca=pca
        )
        if inputs is None:
            yield from skipped
            return
        art = inputs.models["two_tower_model"]
        items = _latest(embeddings)
        features = tt.project(items, tt.pca_from_artifact(inputs.models["item_pca"]))
        table, stats = tte.evaluate(
            tt.from_artifact(art),
            inputs.today,
            inputs.history,
            features,
            items.select("item_id", "language"),
            two_tower_rules.rules(),
            inputs.day,
            WINDOW_DAYS,
            truth=truth.affinity_fn(),
            seed=config.seed,
            max_catalog_clients=config.max_catalog_clients,
            client_buckets=config.client_buckets,
        )
        fingerprint, random_weights = _embedding_provenance(context, inputs.model_partition)
        model_config = {k: v for k, v in art.config.items() if k not in ("train_range", "train_days")}
        table = _describe(
            table,
            event_type="played (p90)",
            train_data=f"{art.config.get('train_range')} ({art.config.get('train_days')} days)",
            val_data=inputs.day.isoformat(),
            model_partition=inputs.model_partition,
            pca_partition=art.config.get("pca_partition", inputs.model_partition),
            dataset_partition=art.config.get("dataset_partition", inputs.model_partition),
            model_config=json.dumps(model_config, sort_keys=True, default=str),
            embedding_fingerprint=fingerprint,
            random_weights=random_weights,
        ).with_columns(
            experiment_id=pl.col("method").map_elements(
                lambda m: experiment_id(inputs.day.isoformat(), m, model_config, fingerprint), return_dtype=pl.String
            )
        )
        by = {r["method"]: r for r in table.iter_rows(named=True)}
        tw = by["two_tower"]
        meta = {
            **frame_metadata(table.select("experiment_id", "method", "auc", "recall@50", "catalog_recall@50")),
            "metrics": dg.MetadataValue.md(markdown_table(table.select("method", *ALL_METRICS))),
            "catalog_recall": dg.MetadataValue.md(markdown_table(table.select("method", pl.col("^catalog_.*$")))),
            "model_partition": inputs.model_partition,
            "embedding_fingerprint": fingerprint,
            "random_weights": random_weights,
            "event_set": EVENT_SET,
            **stats,
            **{m: float(tw[m]) for m in ("auc", "auc_per_client", "mrr_first", "ndcg@10", "recall@50")},
            "catalog_recall@50": float(tw["catalog_recall@50"]),
        }
        if "oracle" in by:
            meta["oracle_auc"] = float(by["oracle"]["auc"])
            meta["auc_over_oracle"] = float(tw["auc"] / by["oracle"]["auc"])
        yield dg.Output(table, output_name="two_tower_evaluation", metadata=to_metadata(meta))
        catalog = [c for c in table.columns if c.startswith("catalog_recall@")]
        yield from EVAL_CHECKS.results(
            {
                "metrics_in_unit_interval": in_unit_interval(table, [*ALL_METRICS, *catalog]),
                "beats_popularity_and_random_auc": (
                    tw["auc"] > by["popularity"]["auc"] and tw["auc"] > by["random"]["auc"],
                    {m: float(by[m]["auc"]) for m in by},
                ),
            }
        )

    @evaluation_asset(
        ins={
            "dataset": window_input("two_tower_dataset", PREVIOUS_DAY),
            "user_history": window_input("two_tower_user_history", PREVIOUS_DAY),
            "item_features": window_input("two_tower_item_features", PREVIOUS_DAY),
            "model": window_input("two_tower_model", PREVIOUS_DAY, input_manager_key=MODEL_IO),
            "pca": window_input("item_pca", PREVIOUS_DAY, input_manager_key=MODEL_IO),
            "interactions": window_input("raw_interactions", EVAL_WINDOW, columns=tt.EVENT_COLUMNS),
            "embeddings": window_input("item_content_embeddings", EVAL_WINDOW, columns=POOLED_COLUMNS),
        },
        deps=[after_previous_day("two_tower_ablations")],
        partitions_def=partitions,
        check_specs=ABLATION_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def two_tower_ablations(
        context: dg.AssetExecutionContext,
        config: AblationConfig,
        two_tower_rules: TwoTowerRulesResource,
        truth: TruthResource,
        dataset: dict[str, pl.DataFrame],
        user_history: dict[str, pl.DataFrame],
        item_features: dict[str, pl.DataFrame],
        model: dict[str, ModelArtifact],
        pca: dict[str, ModelArtifact],
        interactions: dict[str, pl.DataFrame],
        embeddings: dict[str, pl.LazyFrame],
    ) -> typing.Iterator:
        """Partition D: variants of two_tower_model D-1 trained on the same window and validated on D like
        it: the in-batch softmax (logQ) on the same features, and the simulator's true content vectors in
        place of the BLIP embeddings (the gap to two_tower is the cost of the encoder; the gap from it to
        the oracle, the cost of the architecture)."""
        inputs, skipped = next_day_inputs(
            context,
            ABLATION_CHECKS,
            tte.table_schema(),
            interactions,
            two_tower_model=model,
            two_tower_dataset=dataset,
            two_tower_user_history=user_history,
            two_tower_item_features=item_features,
        )
        if inputs is None:
            yield from skipped
            return
        base = tt.params_of(inputs.models["two_tower_model"])
        rules = two_tower_rules.rules()
        items = _latest(embeddings)
        item_language = items.select("item_id", "language")
        true_vectors = truth.item_vectors_fn()
        variants: list[tuple[str, tt.Dataset, pl.DataFrame, tt.ModelParams]] = []
        for name in config.variants:
            if name == "inbatch_softmax":
                features = tt.project(items, tt.pca_from_artifact(next(iter(pca.values()))))
                params = dataclasses.replace(base, loss="inbatch_softmax")
                trained_on = _dataset(dataset, user_history, item_features)
                variants.append((name, trained_on, features, params))
            elif name == "true_content":
                if true_vectors is None:
                    context.log.info("true_content skipped: no ground truth on this platform")
                    continue
                ids = items["item_id"].to_numpy()
                vecs = np.asarray(true_vectors(ids), dtype=np.float32)
                features = pl.DataFrame(
                    {"item_id": ids, "features": pl.Series(vecs, dtype=pl.Array(pl.Float32, vecs.shape[1]))}
                )
                ds, _ = tt.build_dataset(
                    inputs.history, features, rules, train_window_start(inputs.day - dt.timedelta(days=1))
                )
                variants.append((name, ds, features, base))
            else:
                raise dg.Failure(f"unknown ablation {name!r}: use inbatch_softmax or true_content")
        tables = []
        for name, ds, features, params in variants:
            res = tt.train(ds, params, log=context.log.info)
            table, _ = tte.evaluate(
                res.model,
                inputs.today,
                inputs.history,
                features,
                item_language,
                rules,
                inputs.day,
                WINDOW_DAYS,
                seed=config.seed,
                max_catalog_clients=config.max_catalog_clients,
                baselines=False,
                client_buckets=config.client_buckets,
            )
            cfg = {**dataclasses.asdict(params), "hidden": list(params.hidden), "features": name}
            tables.append(
                _describe(
                    table.with_columns(method=pl.lit(f"ablation:{name}")),
                    experiment_id=experiment_id(inputs.day.isoformat(), f"ablation:{name}", cfg, name),
                    event_type="played (p90)",
                    val_data=inputs.day.isoformat(),
                    model_partition=inputs.model_partition,
                    model_config=json.dumps(cfg, sort_keys=True),
                )
            )
        out = pl.concat(tables, how="diagonal_relaxed") if tables else pl.DataFrame(schema=tte.table_schema())
        by = {r["method"]: r for r in out.iter_rows(named=True)}
        yield dg.Output(
            out,
            output_name="two_tower_ablations",
            metadata=to_metadata(
                {
                    **frame_metadata(out.select("method", "auc", "recall@50", "catalog_recall@50")),
                    "metrics": dg.MetadataValue.md(markdown_table(out.select("method", *ALL_METRICS))),
                    **{f"{m.split(':')[1]}_auc": float(r["auc"]) for m, r in by.items()},
                }
            ),
        )
        yield from ABLATION_CHECKS.results({"metrics_in_unit_interval": in_unit_interval(out, ALL_METRICS)})

    return [item_pca, two_tower_dataset, two_tower_model, two_tower_evaluation, two_tower_ablations]
