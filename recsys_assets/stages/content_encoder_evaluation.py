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
* Truly new items -- uploaded on D-1 and never interacted with on D-1 (``new_upload`` and
  ``interactions_on_day == 0`` in ``item_collab_embeddings`` D-1): are D's positives on them retrieved
  from the whole catalog? Every item of the language with a vector is a candidate, the targets are the
  positives on the new items. Rows ``new_predicted`` (the vectors as served: the encoder's for the new
  items), ``new_random`` (random vectors for the new items: the floor), ``new_oracle`` (every candidate
  by the simulator's true affinity: the best any ranking can do; only where a truth exists) and
  ``new_true_als`` (the items' ALS vectors once they exist: ALS of day D with its own client vectors. It
  was trained on D's interactions, the targets themselves, so it is an in-sample ceiling, not a fair
  competitor).
"""

from __future__ import annotations

import typing

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


NEW_VARIANTS = ("new_predicted", "new_random", "new_oracle", "new_true_als")


def new_items(collab: pl.DataFrame) -> pl.DataFrame:
    """The truly new items of ``item_collab_embeddings`` D-1: uploaded that day and never interacted with."""
    return collab.filter(pl.col("new_upload") & (pl.col("interactions_on_day") == 0))


def evaluate_new(
    collab: pl.DataFrame,
    user_factors: pl.DataFrame,
    train: pl.DataFrame,
    next_day: pl.DataFrame,
    truth: typing.Optional[typing.Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
    als_next: typing.Optional[pl.DataFrame] = None,
    users_next: typing.Optional[pl.DataFrame] = None,
    seed: int = 0,
) -> pl.DataFrame:
    """Rows ``new_*`` (see the module docstring). A new item competes with the whole catalog, as when it is
    served: every variant ranks every item of the language that has a vector in ``collab`` (D-1) for the
    language's ALS clients of D-1, and the targets are D's positives on the truly new items only.

    ``new_predicted``: the vectors as served (ALS, and the encoder's for the new items); ``new_random``: the
    new items' vectors replaced by random ones; ``new_oracle``: every candidate scored by the true affinity;
    ``new_true_als``: ALS of D for every candidate it has, with its own clients (in-sample ceiling)."""
    new = new_items(collab)
    if new.height == 0:
        return pl.DataFrame(schema=table_schema())
    targets = next_day.join(new.select("item_id"), on="item_id", how="semi")
    served = _variant(collab, "vector")
    is_new = pl.col("item_id").is_in(new["item_id"].implode())
    random_new = _random_like(new.select("item_id", "language"), _variant(collab, "als_vector"), seed + 2)
    variants: dict[str, tuple[pl.DataFrame, pl.DataFrame, typing.Any]] = {
        "new_predicted": (served, user_factors, None),
        "new_random": (pl.concat([served.filter(~is_new), random_new]), user_factors, None),
    }
    if truth is not None:

        def oracle(client_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
            a = truth(np.repeat(client_ids, len(item_ids)), np.tile(item_ids, len(client_ids)))
            return np.asarray(a, dtype=np.float64).reshape(len(client_ids), len(item_ids))

        variants["new_oracle"] = (
            served.select("item_id", "language"),
            user_factors.select("client_id", "language"),
            oracle,
        )
    if als_next is not None and users_next is not None and als_next.height:
        clients = user_factors.select("client_id", "language")
        variants["new_true_als"] = (
            als_next.select("item_id", "language", "vector"),
            users_next.join(clients, on=["client_id", "language"], how="semi"),
            None,
        )
    rows = []
    for name, (items, users, scorer) in variants.items():
        if items.height == 0 or users.height == 0:
            continue
        table, counts = als_eval.evaluate(items, users, train, targets, scorer=scorer)
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
