"""Every item of the day in the collaborative (ALS) space: its ALS vector when it has one, else the content
encoder's prediction -- so a video nobody has watched yet is retrievable the day it is uploaded.

Columns: ``item_id, language, vector`` (what downstream uses), ``source`` (``als`` / ``predicted`` /
``none``), ``is_predicted``, ``als_vector`` and ``predicted_vector`` (both kept, for comparison),
``encoder_split`` (``train`` / ``validation``: the item had an ALS vector when the encoder was
trained, and was or was not used for fitting; ``unseen``: no ALS vector, so never seen) and
``reason`` when there is no vector (no content embedding, or no encoder for the language).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .content_encoder import ContentToCollab, features, is_validation, predict

SOURCE = pl.Enum(["als", "predicted", "none"])
SPLIT = pl.Enum(["train", "validation", "unseen"])


def assemble(
    items: pl.DataFrame,
    embeddings: pl.DataFrame,
    als_factors: pl.DataFrame,
    models: dict[str, ContentToCollab],
    val_share: float,
    split_seed: int,
) -> pl.DataFrame:
    """``items``: item_id, language (the day's item_meta); ``embeddings``: item_content_embeddings of the day."""
    dims = (
        {als_factors.schema["vector"].size}
        if als_factors.height
        else {m.head[-1].out_features for m in models.values()}
    )
    dim = next(iter(dims)) if dims else 0
    vec_type = pl.Array(pl.Float32, dim)
    base = (
        items.select("item_id", "language")
        .join(als_factors.select("item_id", pl.col("vector").alias("als_vector")), on="item_id", how="left")
        .join(embeddings.select("item_id", "status", "frame_embeddings", "audio_embedding"), on="item_id", how="left")
        .sort("item_id")
    )
    preds = []
    for lang, model in models.items():
        rows = base.filter(
            (pl.col("language") == lang) & pl.col("status").is_not_null() & (pl.col("status") != "failed")
        )
        if rows.height == 0:
            continue
        p = predict(model, features(rows))
        preds.append(pl.DataFrame({"item_id": rows["item_id"], "predicted_vector": pl.Series(p, dtype=vec_type)}))
    pred = pl.concat(preds) if preds else pl.DataFrame(schema={"item_id": pl.Int64, "predicted_vector": vec_type})
    out = base.drop("frame_embeddings", "audio_embedding").join(pred, on="item_id", how="left")
    has_model = pl.col("language").is_in(list(models))
    return out.select(
        "item_id",
        "language",
        pl.coalesce("als_vector", "predicted_vector").alias("vector"),
        pl.when(pl.col("als_vector").is_not_null())
        .then(pl.lit("als"))
        .when(pl.col("predicted_vector").is_not_null())
        .then(pl.lit("predicted"))
        .otherwise(pl.lit("none"))
        .cast(SOURCE)
        .alias("source"),
        (pl.col("als_vector").is_null() & pl.col("predicted_vector").is_not_null()).alias("is_predicted"),
        "als_vector",
        "predicted_vector",
        pl.when(pl.col("als_vector").is_null())
        .then(pl.lit("unseen"))
        .when(is_validation(pl.col("item_id"), val_share, split_seed))
        .then(pl.lit("validation"))
        .otherwise(pl.lit("train"))
        .cast(SPLIT)
        .alias("encoder_split"),
        pl.when(pl.col("als_vector").is_not_null() | pl.col("predicted_vector").is_not_null())
        .then(pl.lit(None, pl.String))
        .when(pl.col("status").is_null() | (pl.col("status") == "failed"))
        .then(pl.lit("no_content_embedding"))
        .when(~has_model)
        .then(pl.lit("no_encoder_for_language"))
        .otherwise(pl.lit("not_predicted"))
        .alias("reason"),
    )


def validate(table: pl.DataFrame, items: pl.DataFrame) -> dict[str, tuple[bool, dict]]:
    missing = items.select("item_id").join(table.select("item_id"), on="item_id", how="anti").height
    vec = table.filter(pl.col("vector").is_not_null())["vector"]
    finite = bool(np.isfinite(vec.to_numpy()).all()) if vec.len() else True
    flag_ok = table.filter(
        (pl.col("is_predicted") != (pl.col("source") == "predicted"))
        | ((pl.col("source") == "none") != pl.col("vector").is_null())
    ).height
    counts = dict(table.group_by("source").len().select(pl.col("source").cast(pl.String), "len").iter_rows())
    return {
        "every_item_listed": (missing == 0 and table.height == table["item_id"].n_unique(), {"items_missing": missing}),
        "vectors_finite": (finite, {"vectors": vec.len()}),
        "source_flag_consistent": (
            flag_ok == 0,
            {"inconsistent_rows": flag_ok, **{f"source_{k}": v for k, v in counts.items()}},
        ),
    }
