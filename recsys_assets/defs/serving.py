"""Assets of the serving stage: per-language ANN indexes over the item vectors a retrieval service loads.
A thin shell over :mod:`recsys_assets.stages.retrieval_index`; :mod:`recsys_assets.serving` loads them.

* ``item_collab_index`` D: over ``item_collab_embeddings`` D -- ALS vectors and the encoder's predictions,
  so the day's never-watched uploads are retrievable -- queried with ALS client vectors of D.
* ``two_tower_item_index`` D: over the item tower of ``two_tower_model`` D applied to every item of
  ``item_content_embeddings`` D (BLIP -> ``item_pca`` D -> item tower), queried with user-tower vectors.
"""

import typing

import dagster as dg
import numpy as np
import polars as pl

from ..artifacts import ModelArtifact
from ..stages import retrieval_index as ri
from ..stages import two_tower as tt
from ..stages.item_content_embeddings import POOLED_COLUMNS, float32_vectors
from .checks import Check, CheckSet
from .io_manager import MODEL_IO
from .metadata import markdown_table, to_metadata
from .params import config_from, to_params
from .partitions import columns_input

GROUP = "serving"


def _checks(asset: str) -> CheckSet:
    return CheckSet(
        asset,
        Check("holds_every_vector", "Each language's index holds exactly the source's items and their vectors."),
        Check(
            "ann_recall_at_100",
            "Recall@100 of the index against exact inner-product search, on a sample of queries, is >= min_recall.",
        ),
    )


COLLAB_INDEX_CHECKS = _checks("item_collab_index")
TWO_TOWER_INDEX_CHECKS = _checks("two_tower_item_index")


class IndexConfig(config_from(ri.IndexParams, name="IndexParamsConfig")):
    min_recall: float = 0.95
    """ann_recall_at_100 (blocking) fails below this."""
    check_queries: int = 200
    """Queries of the recall check (a sample of the indexed vectors, not the tuning sample)."""


def _output(
    artifact: ModelArtifact, summary: pl.DataFrame, source: pl.DataFrame, config: IndexConfig, checks: CheckSet
) -> typing.Iterator:
    verdicts = ri.validate(artifact, source, config.min_recall, config.check_queries)
    yield dg.Output(
        artifact,
        metadata=to_metadata(
            {
                "languages": dg.MetadataValue.md(markdown_table(summary)),
                "items": int(summary["items"].sum()) if summary.height else 0,
                "build_seconds": float(summary["seconds"].sum()) if summary.height else 0.0,
                "recall@100": verdicts["ann_recall_at_100"][1]["worst_recall"],
                **{k: v for k, v in artifact.config.items() if k not in ("languages", "params")},
            }
        ),
    )
    yield from checks.results(verdicts)


def build_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """This stage's daily assets, partitioned by ``partitions`` (see ``defs/partitions.py``)."""

    @dg.asset(
        ins={"item_collab_embeddings": dg.AssetIn("item_collab_embeddings")},
        partitions_def=partitions,
        check_specs=COLLAB_INDEX_CHECKS.specs(partitions),
        group_name=GROUP,
        io_manager_key=MODEL_IO,
    )
    def item_collab_index(
        context: dg.AssetExecutionContext, config: IndexConfig, item_collab_embeddings: pl.DataFrame
    ) -> typing.Iterator:
        """Partition D: per language, a faiss inner-product index over item_collab_embeddings D (ALS vectors and
        predicted ones for never-watched items), with the item id of each row; for ALS client vectors of D."""
        source = item_collab_embeddings.select("item_id", "language", "vector")
        artifact, summary = ri.build(source, to_params(config, ri.IndexParams))
        artifact.config.update(
            source="item_collab_embeddings",
            source_partition=context.partition_key,
            query_with=f"als_user_factors {context.partition_key}",
            predicted_items=int(item_collab_embeddings["is_predicted"].sum()),
        )
        yield from _output(artifact, summary, source, config, COLLAB_INDEX_CHECKS)

    @dg.asset(
        ins={
            "two_tower_model": dg.AssetIn("two_tower_model", input_manager_key=MODEL_IO),
            "item_pca": dg.AssetIn("item_pca", input_manager_key=MODEL_IO),
            "item_content_embeddings": columns_input("item_content_embeddings", POOLED_COLUMNS),
        },
        partitions_def=partitions,
        check_specs=TWO_TOWER_INDEX_CHECKS.specs(partitions),
        group_name=GROUP,
        io_manager_key=MODEL_IO,
    )
    def two_tower_item_index(
        context: dg.AssetExecutionContext,
        config: IndexConfig,
        two_tower_model: ModelArtifact,
        item_pca: ModelArtifact,
        item_content_embeddings: pl.DataFrame,
    ) -> typing.Iterator:
        """Partition D: per language, a faiss inner-product index over the item tower of two_tower_model D for
        every embedded item of D (watched or a new upload), with the ids and the model/PCA partitions."""
        items = float32_vectors(
            item_content_embeddings.filter(pl.col("status") != "failed").select("item_id", "language", "blip_embedding")
        )
        features = tt.project(items, tt.pca_from_artifact(item_pca))
        vectors = tt.item_vectors(tt.from_artifact(two_tower_model), np.array(features["features"].to_numpy()))
        source = items.select(
            "item_id",
            "language",
            vector=pl.Series(vectors.astype(np.float32), dtype=pl.Array(pl.Float32, vectors.shape[1])),
        )
        artifact, summary = ri.build(source, to_params(config, ri.IndexParams))
        artifact.config.update(
            source="two_tower_model item tower over item_content_embeddings",
            model_partition=context.partition_key,
            pca_partition=str(two_tower_model.config.get("pca_partition", context.partition_key)),
            embeddings_partition=context.partition_key,
            query_with=f"two_tower_model {context.partition_key} user tower",
        )
        yield from _output(artifact, summary, source, config, TWO_TOWER_INDEX_CHECKS)

    return [item_collab_index, two_tower_item_index]
