"""Spark version of :mod:`recsys_assets.stages.als_evaluation`: the next-day evaluation of ALS factors beside
popularity, with the polars stage's candidates, targets, exclusions, tie order, metrics and output table.

The ranking of every evaluated client against every item of its language is blocked, as MLlib's own
``recommendForAll`` is: the clients are cut into blocks of ``client_block``, the items (ordered by id) into
blocks of ``item_block``, and each (client block, item block) pair of a language -- a cartesian product of the
two block tables, shuffled, never broadcast through the driver -- is one ``user @ item`` score matrix on an
executor. Each pair keeps each client's best ``k`` items of the block, the items seen in the window excluded
(:func:`~recsys_assets.stages.ranking_metrics.scored_top_k`); the best ``k`` of those lists is the client's
top ``k`` of the whole language (:func:`~recsys_assets.stages.ranking_metrics.merge_top_k`), scored against its
targets by the polars stage's metric code (:func:`~recsys_assets.stages.ranking_metrics.ranked_hits`). Only the
table (a row per language and method) and the counts come back to the driver.
"""

from __future__ import annotations

import typing

import numpy as np
import polars as pl
import pyarrow as pa

from ..stages.als_evaluation import KS, popularity_scores, table_schema
from ..stages.ranking_metrics import merge_top_k, ranked_hits, scored_top_k

METHODS = ("als", "popularity")
CLIENT_BLOCK = 1024
ITEM_BLOCK = 4096
BLOCKS_PER_PARTITION = 4
"""Client blocks (and item blocks) per partition of the cartesian product: a task scores at most
``BLOCKS_PER_PARTITION ** 2`` block pairs."""


def _items_of(block: pa.ListScalar) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An item block's (index, vectors, popularity score), ordered by index."""
    s = block.values
    idx = s.field("idx").to_numpy().astype(np.int64)
    vectors = s.field("vector").flatten().to_numpy().astype(np.float32).reshape(len(idx), -1)
    pop = s.field("popularity").to_numpy()
    order = np.argsort(idx, kind="stable")
    return idx[order], vectors[order], popularity_scores(pop[order], idx[order])


def _clients_of(block: pa.ListScalar) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A client block's (client ids, vectors, seen cells as (row, item index)), ordered by client id."""
    import pyarrow.compute as pc

    s = block.values
    ids = s.field("client_id").to_numpy().astype(np.int64)
    vectors = s.field("vector").flatten().to_numpy().astype(np.float32).reshape(len(ids), -1)
    seen = s.field("seen")
    seen_rows = pc.list_parent_indices(seen).to_numpy().astype(np.int64)
    seen_items = pc.list_flatten(seen).to_numpy().astype(np.int64)
    order = np.argsort(ids, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return ids[order], vectors[order], rank[seen_rows], seen_items


def _excluded(n_rows: int, item_idx: np.ndarray, seen_rows: np.ndarray, seen_items: np.ndarray) -> np.ndarray:
    """The seen cells that fall in this item block, as a (clients x block items) mask."""
    pos = np.minimum(np.searchsorted(item_idx, seen_items), len(item_idx) - 1)
    inside = item_idx[pos] == seen_items
    mask = np.zeros((n_rows, len(item_idx)), dtype=bool)
    mask[seen_rows[inside], pos[inside]] = True
    return mask


def block_candidates(batches: typing.Iterator[pa.RecordBatch], k: int) -> typing.Iterator[pa.RecordBatch]:
    """``mapInArrow`` over (language, ublock, clients, items) rows: each client's best ``k`` items per
    method, merged over the consecutive rows of one client block (a cartesian product's usual order; rows of a
    block that arrive apart give more candidate rows, which the final merge takes in the same way)."""
    current, best = None, {}

    def flush():
        lang, _, ids = current
        n = len(ids)
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        for method in METHODS:
            cols, scores = best[method]
            cands = pa.StructArray.from_arrays(
                [pa.array(cols.ravel()), pa.array(scores.ravel())], names=["idx", "score"]
            )
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array([lang] * n, pa.string()),
                    pa.array(ids),
                    pa.array([method] * n, pa.string()),
                    pa.ListArray.from_arrays(offsets, cands),
                ],
                schema=_CANDIDATES_ARROW,
            )

    for batch in batches:
        langs, ublocks = batch.column("language"), batch.column("ublock")
        clients, items = batch.column("clients"), batch.column("items")
        for r in range(batch.num_rows):
            key = (langs[r].as_py(), int(ublocks[r].as_py()))
            ids, users, seen_rows, seen_items = _clients_of(clients[r])
            if current is None or key != current[:2]:
                if current is not None:
                    yield from flush()
                current = (*key, ids)
                pad = (np.full((len(ids), k), -1, dtype=np.int64), np.full((len(ids), k), -np.inf))
                best = {m: pad for m in METHODS}
            item_idx, vectors, pop = _items_of(items[r])
            banned = _excluded(len(ids), item_idx, seen_rows, seen_items)
            for method, scores in (
                ("als", users @ vectors.T),
                ("popularity", np.broadcast_to(pop, (len(ids), len(item_idx)))),
            ):
                local, got = scored_top_k(scores, k, banned)
                cols = np.where(local >= 0, item_idx[np.maximum(local, 0)], -1)
                best[method] = merge_top_k(
                    np.concatenate([best[method][0], cols], axis=1),
                    np.concatenate([best[method][1], got], axis=1),
                    k,
                )
    if current is not None:
        yield from flush()


_CANDIDATES_ARROW = pa.schema(
    [
        ("language", pa.string()),
        ("client_id", pa.int64()),
        ("method", pa.string()),
        ("cands", pa.list_(pa.struct([("idx", pa.int64()), ("score", pa.float64())]))),
    ]
)
METRIC_NAMES = [name for name in table_schema() if "@" in name]
EXACT = "decimal(38,18)"
"""Per-client metrics are in [0, 1]: 18 decimals each, and room for 10^20 clients in the sum."""
PER_CLIENT = "language string, method string, client_id bigint, " + ", ".join(f"`{m}` double" for m in METRIC_NAMES)


def client_metrics(batches: typing.Iterator[pa.RecordBatch], k: int) -> typing.Iterator[pa.RecordBatch]:
    """``mapInArrow`` over (language, method, client_id, candidates, targets) rows: each client's top ``k`` of
    its candidates, scored by :func:`~recsys_assets.stages.ranking_metrics.ranked_hits`."""
    import pyarrow.compute as pc
    import scipy.sparse as sp

    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        cands = batch.column("candidates")
        per_row = pc.list_value_length(cands).to_numpy()
        width = max(int(per_row.max()), 1)
        flat = pc.list_flatten(cands)
        parent = pc.list_parent_indices(cands).to_numpy()
        slot = np.arange(len(parent)) - np.repeat(np.r_[0, np.cumsum(per_row)[:-1]], per_row)
        cols = np.full((n, width), -1, dtype=np.int64)
        scores = np.full((n, width), -np.inf)
        cols[parent, slot] = flat.field("idx").to_numpy()
        scores[parent, slot] = flat.field("score").to_numpy()
        top, _ = merge_top_k(cols, scores, k)
        targets = batch.column("targets")
        t_rows = pc.list_parent_indices(targets).to_numpy()
        t_cols = pc.list_flatten(targets).to_numpy().astype(np.int64)
        n_cols = int(max(t_cols.max(initial=-1), top.max(initial=-1))) + 1
        t = sp.csr_matrix((np.ones(len(t_rows), dtype=np.float32), (t_rows, t_cols)), shape=(n, n_cols))
        out = ranked_hits(top, t, recall_ks=KS, ndcg_ks=(10,))
        yield pa.RecordBatch.from_arrays(
            [batch.column("language"), batch.column("method"), batch.column("client_id")]
            + [pa.array(np.asarray(out[m], dtype=np.float64)) for m in METRIC_NAMES],
            names=["language", "method", "client_id", *METRIC_NAMES],
        )


def evaluate(
    item_factors,
    user_factors,
    train,
    next_day,
    exclude_seen: bool = True,
    client_block: int = CLIENT_BLOCK,
    item_block: int = ITEM_BLOCK,
) -> tuple[pl.DataFrame, list[dict]]:
    """The polars stage's ``evaluate`` on Spark DataFrames: one row per (language, method), and per-language
    counts. ``train`` / ``next_day`` need ``client_id, item_id, is_positive``; the factors ``item_id |
    client_id, language, vector``. The session needs a checkpoint directory, as MLlib ALS does
    (:func:`~recsys_assets.spark.als_factors.dense_index` numbers each language's ids over range parts)."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from .als_factors import dense_index, require_checkpoint_dir

    # the ids are numbered over range parts, which dense_index checkpoints
    require_checkpoint_dir(item_factors.sparkSession, "als_evaluation on Spark")
    k = max(*KS, 10)
    # each language's items and evaluated clients numbered in id order, spread over range parts (a window per
    # language would number all of a language's ids in one task)
    item_idx = dense_index(item_factors.select("language", "item_id"), "item_id", "idx", within=["language"])
    items = item_factors.select("item_id", "language", "vector").join(
        item_idx.withColumn("idx", F.col("idx").cast("long")), ["language", "item_id"]
    )
    clients = user_factors.select("client_id", "language", "vector")
    client_lang = clients.select("client_id", "language")
    item_lang = items.select("item_id", "language", "idx")

    def in_model(pairs):  # (client, item) cells of a client and an item of the same language's model
        return pairs.join(item_lang, "item_id").join(client_lang, ["client_id", "language"])

    today = in_model(next_day.filter(F.col("is_positive")).select("client_id", "item_id").distinct())
    if exclude_seen:
        seen = in_model(train.select("client_id", "item_id").distinct()).select("language", "client_id", "idx")
    else:
        seen = today.limit(0).select("language", "client_id", "idx")
    targets = today.join(seen, ["language", "client_id", "idx"], "left_anti")
    per_client = targets.groupBy("language", "client_id").agg(F.collect_list("idx").alias("targets"))
    seen_lists = seen.groupBy("language", "client_id").agg(F.collect_list("idx").alias("seen"))
    unranked = (
        per_client.join(clients, ["language", "client_id"])
        .join(seen_lists, ["language", "client_id"], "left")
        .withColumn("seen", F.coalesce("seen", F.array().cast("array<bigint>")))
        .persist()
    )
    persisted = [unranked]
    try:
        rank = dense_index(unranked.select("language", "client_id"), "client_id", "__rank", within=["language"])
        evaluated = (
            unranked.join(rank, ["language", "client_id"])
            .withColumn("ublock", (F.col("__rank") / client_block).cast("int"))
            .drop("__rank")
            .persist()
        )
        persisted.append(evaluated)
        popularity = train.filter(F.col("is_positive")).groupBy("item_id").agg(F.count(F.lit(1)).alias("popularity"))
        blocked_items = (
            items.join(popularity, "item_id", "left")
            .withColumn("popularity", F.coalesce("popularity", F.lit(0)).cast("double"))
            .withColumn("iblock", (F.col("idx") / item_block).cast("int"))
        )
        counts = _counts(items, clients, today, targets, evaluated)
        n_ublocks = sum(-(-c["clients_evaluated"] // client_block) for c in counts)
        n_iblocks = sum(-(-c["items_in_model"] // item_block) for c in counts)
        per_client_metrics = None
        if n_ublocks:
            ublocks = (
                evaluated.groupBy("language", "ublock")
                .agg(F.collect_list(F.struct("client_id", "vector", "seen")).alias("clients"))
                .repartition(max(1, -(-n_ublocks // BLOCKS_PER_PARTITION)), "language", "ublock")
            )
            iblocks = (
                blocked_items.groupBy("language", "iblock")
                .agg(F.collect_list(F.struct("idx", "vector", "popularity")).alias("items"))
                .withColumnRenamed("language", "item_language")
                .repartition(max(1, -(-n_iblocks // BLOCKS_PER_PARTITION)), "item_language", "iblock")
            )
            # a cartesian product of the two block tables (shuffled, not broadcast), one language's pairs kept
            pairs = ublocks.hint("shuffle_replicate_nl").join(iblocks, F.col("language") == F.col("item_language"))
            candidates = pairs.select("language", "ublock", "clients", "items").mapInArrow(
                lambda batches: block_candidates(batches, k), from_arrow_schema(_CANDIDATES_ARROW)
            )
            merged = (
                candidates.groupBy("language", "method", "client_id")
                .agg(F.flatten(F.collect_list("cands")).alias("candidates"))
                .join(evaluated.select("language", "client_id", "targets"), ["language", "client_id"])
                .select("language", "method", "client_id", "candidates", "targets")
            )
            per_client_metrics = merged.mapInArrow(lambda batches: client_metrics(batches, k), PER_CLIENT)
        table = _table(per_client_metrics, counts)
    finally:
        for df in persisted:
            df.unpersist()
    return table, counts


def _counts(items, clients, today, targets, evaluated) -> list[dict]:
    """The polars stage's per-language counts, in its order (the languages of the item factors, sorted)."""
    from pyspark.sql import functions as F

    def by_language(df, name):
        return {
            r["language"]: int(r[name]) for r in df.groupBy("language").agg(F.count(F.lit(1)).alias(name)).collect()
        }

    n_items = by_language(items, "n")
    n_clients = by_language(clients, "n")
    n_all = by_language(today, "n")
    n_targets = by_language(targets, "n")
    n_evaluated = by_language(evaluated, "n")
    return [
        {
            "language": lang,
            "clients_evaluated": n_evaluated.get(lang, 0),
            "clients_in_model": n_clients.get(lang, 0),
            "items_in_model": n_items[lang],
            "targets": n_targets.get(lang, 0),
            "targets_seen_in_window": n_all.get(lang, 0) - n_targets.get(lang, 0),
        }
        for lang in sorted(n_items)
    ]


def _table(per_client_metrics, counts: list[dict]) -> pl.DataFrame:
    """One row per (language, method): the mean of each metric over the evaluated clients (NaN for none)."""
    from pyspark.sql import functions as F

    means: dict[tuple[str, str], dict] = {}
    if per_client_metrics is not None:
        # summed as decimals: exact, so the mean does not depend on the order the rows arrive in (a float sum
        # would differ in its last bits from run to run)
        agg = per_client_metrics.groupBy("language", "method").agg(
            F.count(F.lit(1)).alias("clients"),
            *[F.sum(F.col(f"`{m}`").cast(EXACT)).alias(m) for m in METRIC_NAMES],
        )
        means = {
            (r["language"], r["method"]): {m: float(r[m]) / r["clients"] for m in METRIC_NAMES} for r in agg.collect()
        }
    rows = []
    for c in counts:
        for method in METHODS:
            got = means.get((c["language"], method), {})
            row = {"language": c["language"], "method": method, "clients": c["clients_evaluated"]}
            rows.append(row | {m: float(got[m]) if got else float("nan") for m in METRIC_NAMES})
    return pl.DataFrame(rows, schema=table_schema())
