"""Next-day value of predicted vectors: does a cold item's predicted vector get it recommended?

Model of day D-1 (encoder and ALS), targets of day D, via ``item_collab_embeddings`` D-1, which holds for
each item both its true ALS vector and the encoder's prediction, and which split it was in:

* ``validation`` items (held out from the encoder's training, but with true ALS vectors) are ranked for
  each client of the language's ALS model by ``user · item`` with three item vectors: ``true_als``
  (the warm ceiling), ``predicted`` (content only, as if the item were new), ``random`` (Gaussian
  vectors with the true vectors' per-dimension mean and std: the floor). The metrics are those of
  :mod:`.als_evaluation` (recall@10/50/100, ndcg@10, seen-in-window items excluded).
* ``unseen`` items (no ALS vector at all on D-1, e.g. new uploads) can only be ranked with
  ``predicted`` or ``random`` vectors: rows ``cold_predicted`` / ``cold_random``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from . import als_evaluation as als_eval


def _variant(table: pl.DataFrame, column: str) -> pl.DataFrame:
    return table.select("item_id", "language", pl.col(column).alias("vector")).filter(pl.col("vector").is_not_null())


def _random_like(table: pl.DataFrame, reference: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for lang in table["language"].unique().sort().to_list():
        t = table.filter(pl.col("language") == lang)
        ref = reference.filter(pl.col("language") == lang)["vector"].to_numpy()
        if not len(ref) or not t.height:
            continue
        v = rng.standard_normal((t.height, ref.shape[1])) * ref.std(0) + ref.mean(0)
        parts.append(
            t.select("item_id", "language").with_columns(
                vector=pl.Series(v.astype(np.float32), dtype=reference.schema["vector"])
            )
        )
    return pl.concat(parts) if parts else reference.clear()


def evaluate(
    collab: pl.DataFrame,
    user_factors: pl.DataFrame,
    train: pl.DataFrame,
    next_day: pl.DataFrame,
    seed: int = 0,
    exclude_seen: bool = True,
) -> pl.DataFrame:
    # the same candidates for the three validation variants: items with both vectors
    val = collab.filter(
        (pl.col("encoder_split") == "validation")
        & pl.col("als_vector").is_not_null()
        & pl.col("predicted_vector").is_not_null()
    )
    cold = collab.filter(pl.col("encoder_split") == "unseen")
    true_val = _variant(val, "als_vector")
    variants = {
        "true_als": true_val,
        "predicted": _variant(val, "predicted_vector"),
        "random": _random_like(true_val, true_val, seed),
        "cold_predicted": _variant(cold, "predicted_vector"),
    }
    variants["cold_random"] = _random_like(variants["cold_predicted"], _variant(collab, "als_vector"), seed + 1)
    rows = []
    for name, items in variants.items():
        if items.height == 0:
            continue
        table, counts = als_eval.evaluate(items, user_factors, train, next_day, exclude_seen=exclude_seen)
        per_lang = {c["language"]: c for c in counts}
        for r in table.filter(pl.col("method") == "als").iter_rows(named=True):
            c = per_lang[r["language"]]
            rows.append(
                {
                    "variant": name,
                    "candidates": c["items_in_model"],
                    "targets": c["targets"],
                    **{k: v for k, v in r.items() if k != "method"},
                }
            )
    return pl.DataFrame(rows, schema=table_schema())


def table_schema() -> dict[str, pl.DataType]:
    schema = {"variant": pl.String, "candidates": pl.Int64, "targets": pl.Int64} | als_eval.table_schema()
    schema.pop("method")
    return schema


def overall(table: pl.DataFrame) -> pl.DataFrame:
    metrics = [c for c in table.columns if "@" in c]
    return (
        table.filter(pl.col("clients") > 0)
        .group_by("variant")
        .agg(
            pl.col("clients").sum(),
            pl.col("candidates").sum(),
            pl.col("targets").sum(),
            *[((pl.col(m) * pl.col("clients")).sum() / pl.col("clients").sum()).alias(m) for m in metrics],
        )
        .sort("variant")
    )
