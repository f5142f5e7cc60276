"""Every item of the day in the collaborative (ALS) space: its ALS vector when it has one, else the content
encoder's prediction -- so a video nobody has watched yet is retrievable the day it is uploaded.

Columns: ``item_id, language, vector`` (what downstream uses), ``source`` (``als`` / ``predicted`` /
``none``), ``is_predicted``, ``als_vector`` and ``predicted_vector`` (both kept, for comparison; the
prediction rescaled per language by ``predicted_scale``, :func:`norm_scale`),
``encoder_split`` (``train`` / ``validation``: the items the encoder was fitted / validated on, as stored
with the encoder; ``unseen``: the encoder never saw the item -- a new upload, an item without an ALS
vector), ``reason`` when there is no vector (no content embedding, or no encoder for the language), and
the item's day: ``upload_date``, ``new_upload`` (uploaded on the partition's day) and
``interactions_on_day`` (every snapshot row of the item that day, quarantined ones included).

The ALS vectors and the predictions share one space: the encoder of day D is trained on ALS D's vectors.
An encoder of another day would predict into that day's ALS coordinates, which are not D's (ALS is
retrained from scratch each day and its factors are identified only up to a rotation).
"""

from __future__ import annotations

import datetime as dt
import typing

import numpy as np
import polars as pl

from .content_encoder import ContentToCollab, features, predict

SOURCE = pl.Enum(["als", "predicted", "none"])
SPLIT = pl.Enum(["train", "validation", "unseen"])


def norm_scale(rows: pl.DataFrame, predicted: np.ndarray) -> float:
    """The factor that gives the encoder's predictions the mean norm of the true ALS vectors, fitted on the
    items the encoder was trained on (``stored_split == "train"``; 1.0 when there are none).

    The encoder's regression term makes its outputs shrink towards the mean under uncertainty (the MSE
    optimum), so a predicted vector is shorter than the ALS vector of a comparable item. Ranked among the
    whole catalog by ``user . item``, that alone puts every new upload below warm items; rescaling keeps
    the directions and puts the new items on the warm items' scale (ablation in benchmarks/README.md)."""
    train = (rows["stored_split"] == "train") & rows["als_vector"].is_not_null()
    if not train.any():
        return 1.0
    true = rows.filter(train)["als_vector"].to_numpy()
    pred = predicted[train.to_numpy()]
    denom = float(np.linalg.norm(pred, axis=1).mean())
    return float(np.linalg.norm(true, axis=1).mean() / denom) if denom > 0 else 1.0


def _predict_in_chunks(
    model: ContentToCollab, embeddings: pl.DataFrame | pl.LazyFrame, item_ids: pl.Series, chunk: int
) -> np.ndarray:
    """The encoder's predictions for ``item_ids`` (sorted), ``chunk`` items' frames at a time (from a lazy
    scan: only the row groups that hold the chunk's items are read)."""
    out = []
    for s in range(0, item_ids.len(), chunk):
        ids = item_ids.slice(s, chunk)
        rows = embeddings.lazy().filter(pl.col("item_id").is_in(ids.implode())).sort("item_id").collect()
        out.append(predict(model, features(rows.select("item_id", "frame_embeddings", "audio_embedding"))))
    return np.concatenate(out) if out else np.zeros((0, model.head[-1].out_features), np.float32)


def interaction_counts(*frames: pl.DataFrame) -> pl.DataFrame:
    """``item_id, interactions_on_day``: rows per item over the given snapshot frames (null ids skipped)."""
    parts = [f.select("item_id") for f in frames if f.height]
    if not parts:
        return pl.DataFrame(schema={"item_id": pl.Int64, "interactions_on_day": pl.Int64})
    return (
        pl.concat(parts, how="vertical_relaxed")
        .drop_nulls()
        .group_by("item_id")
        .agg(interactions_on_day=pl.len().cast(pl.Int64))
    )


def assemble(
    items: pl.DataFrame,
    embeddings: pl.DataFrame | pl.LazyFrame,
    als_factors: pl.DataFrame,
    models: dict[str, ContentToCollab],
    split: pl.DataFrame,
    day: typing.Optional[dt.date] = None,
    interactions: typing.Optional[pl.DataFrame] = None,
    calibrate_norm: bool = True,
    chunk: int = 20_000,
) -> pl.DataFrame:
    """``items``: item_id, language (optionally upload_date): every item of the day's
    item_content_embeddings; ``embeddings``: item_content_embeddings of the day; ``split``: item_id,
    encoder_split of the encoder (:func:`~.content_encoder.split_of`); ``interactions``: item_id,
    interactions_on_day (:func:`interaction_counts`); ``calibrate_norm``: see :func:`norm_scale`. The
    encoder runs ``chunk`` items at a time: only one chunk's frames are ever copied out of ``embeddings``."""
    dims = (
        {als_factors.schema["vector"].size}
        if als_factors.height
        else {m.head[-1].out_features for m in models.values()}
    )
    dim = next(iter(dims)) if dims else 0
    vec_type = pl.Array(pl.Float32, dim)
    if "upload_date" not in items.columns:
        items = items.with_columns(upload_date=pl.lit(None, pl.Date))
    if interactions is None:
        interactions = pl.DataFrame(schema={"item_id": pl.Int64, "interactions_on_day": pl.Int64})
    base = (
        items.select("item_id", "language", pl.col("upload_date").cast(pl.Date))
        .join(als_factors.select("item_id", pl.col("vector").alias("als_vector")), on="item_id", how="left")
        .join(embeddings.lazy().select("item_id", "status").collect(), on="item_id", how="left")
        .join(
            split.select("item_id", pl.col("encoder_split").cast(pl.String).alias("stored_split")),
            on="item_id",
            how="left",
        )
        .join(interactions.select("item_id", "interactions_on_day"), on="item_id", how="left")
        .sort("item_id")
    )
    preds = []
    for lang, model in models.items():
        rows = base.filter(
            (pl.col("language") == lang) & pl.col("status").is_not_null() & (pl.col("status") != "failed")
        )
        if rows.height == 0:
            continue
        p = _predict_in_chunks(model, embeddings, rows["item_id"], chunk)
        scale = norm_scale(rows, p) if calibrate_norm else 1.0
        preds.append(
            pl.DataFrame(
                {
                    "item_id": rows["item_id"],
                    "predicted_vector": pl.Series((p * scale).astype(np.float32), dtype=vec_type),
                    "predicted_scale": pl.Series([scale] * rows.height, dtype=pl.Float32),
                }
            )
        )
    pred = (
        pl.concat(preds)
        if preds
        else pl.DataFrame(schema={"item_id": pl.Int64, "predicted_vector": vec_type, "predicted_scale": pl.Float32})
    )
    out = base.join(pred, on="item_id", how="left")
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
        "predicted_scale",
        pl.col("stored_split").fill_null("unseen").cast(SPLIT).alias("encoder_split"),
        pl.when(pl.col("als_vector").is_not_null() | pl.col("predicted_vector").is_not_null())
        .then(pl.lit(None, pl.String))
        .when(pl.col("status").is_null() | (pl.col("status") == "failed"))
        .then(pl.lit("no_content_embedding"))
        .when(~has_model)
        .then(pl.lit("no_encoder_for_language"))
        .otherwise(pl.lit("not_predicted"))
        .alias("reason"),
        "upload_date",
        (pl.col("upload_date") == day).fill_null(False).alias("new_upload")
        if day is not None
        else pl.lit(False).alias("new_upload"),
        pl.col("interactions_on_day").fill_null(0).cast(pl.Int64),
    )


def new_upload_summary(table: pl.DataFrame) -> pl.DataFrame:
    """Per language: the day's uploads, those never interacted with, and how many of those got a vector."""
    new = table.filter(pl.col("new_upload"))
    return (
        new.group_by("language")
        .agg(
            new_uploads=pl.len(),
            never_interacted=(pl.col("interactions_on_day") == 0).sum(),
            never_interacted_with_vector=((pl.col("interactions_on_day") == 0) & pl.col("vector").is_not_null()).sum(),
            predicted=pl.col("is_predicted").sum(),
        )
        .sort("language")
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
