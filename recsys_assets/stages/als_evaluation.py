"""Next-day evaluation of ALS factors beside a popularity baseline.

For each language model trained on the window ending D-1, the clients of that model are scored against
every item of the model (the items of that language with a vector) and ranked. The targets are the
client's positives on day D among those items; with ``exclude_seen`` (default) the items the client
interacted with in the training window are removed from both the ranking and the targets, so the
metric measures discovery, not repetition. Clients left with no target are not counted.

Popularity ranks the same candidates by their positive count in the training window (ties by item id).
Metrics (defined once in :func:`~recsys_assets.stages.ranking_metrics.retrieval_at_k`), with binary
relevance and T = the client's targets: ``recall@k`` = |top-k ∩ T| / |T| and ``ndcg@10``, averaged over
clients.

Targets on items the model has no vector for (cold items, items under the minimum counts) cannot be
retrieved by either method; they are left out (``content_encoder_evaluation`` measures that cold-start gap).

:mod:`recsys_assets.spark.als_evaluation` computes the same table on Spark's executors (the ``mllib`` engine).
"""

from __future__ import annotations

import typing

import numpy as np
import polars as pl
import scipy.sparse as sp

from .ranking_metrics import retrieval_at_k

KS = (10, 50, 100)


def _index(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions of ``values`` in sorted ``ids``; -1 where absent."""
    pos = np.searchsorted(ids, values)
    pos = np.minimum(pos, len(ids) - 1)
    return np.where(ids[pos] == values, pos, -1)


def _incidence(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    ok = (rows >= 0) & (cols >= 0)
    m = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.float32), (rows[ok], cols[ok])), shape=shape)
    m.data[:] = 1.0
    return m


def popularity_scores(positives: np.ndarray, item_index: np.ndarray) -> np.ndarray:
    """Popularity's score of items: their positive rows in the window, ties broken towards the smaller item
    index (the items of a model sorted by id), deterministically."""
    return np.asarray(positives, dtype=np.float64) - np.asarray(item_index) * 1e-9


def table_schema(ks=KS) -> dict[str, pl.DataType]:
    """The evaluation table: one row per (language, method)."""
    return {"language": pl.String, "method": pl.String, "clients": pl.Int64} | {
        n: pl.Float64 for n in [f"recall@{k}" for k in ks] + ["ndcg@10"]
    }


def evaluate(
    item_factors: pl.DataFrame,
    user_factors: pl.DataFrame,
    train: pl.DataFrame,
    next_day: pl.DataFrame,
    exclude_seen: bool = True,
    ks=KS,
    block: int = 2048,
    scorer: typing.Optional[typing.Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
) -> tuple[pl.DataFrame, list[dict]]:
    """One row per (language, method) with the metrics and the counts; plus per-language counts.

    ``scorer(client_ids, item_ids) -> scores[clients, items]`` replaces ``user . item`` (e.g. the
    simulator's true affinity); the frames then need no ``vector`` column."""
    rows, counts = [], []
    for lang in sorted(item_factors["language"].unique().to_list()):
        itf = item_factors.filter(pl.col("language") == lang).sort("item_id")
        uf = user_factors.filter(pl.col("language") == lang).sort("client_id")
        item_ids, client_ids = itf["item_id"].to_numpy(), uf["client_id"].to_numpy()
        shape = (len(client_ids), len(item_ids))
        pos = next_day.filter(pl.col("is_positive")).select("client_id", "item_id").unique()
        pos = pos.filter(pl.col("client_id").is_in(client_ids))
        ti = _index(item_ids, pos["item_id"].to_numpy())
        targets = _incidence(_index(client_ids, pos["client_id"].to_numpy()), ti, shape)
        seen_df = train.filter(pl.col("client_id").is_in(client_ids)).select("client_id", "item_id").unique()
        seen = _incidence(
            _index(client_ids, seen_df["client_id"].to_numpy()), _index(item_ids, seen_df["item_id"].to_numpy()), shape
        )
        if not exclude_seen:
            seen = sp.csr_matrix(shape, dtype=np.float32)
        all_targets = targets.nnz
        targets = targets - targets.multiply(seen)
        targets.eliminate_zeros()
        evaluated = np.flatnonzero(np.diff(targets.indptr) > 0)
        pop_idx = _index(item_ids, train.filter(pl.col("is_positive"))["item_id"].to_numpy())
        popularity = np.bincount(pop_idx[pop_idx >= 0], minlength=len(item_ids)).astype(np.float64)
        pop_scores = popularity_scores(popularity, np.arange(len(item_ids)))
        U, V = (uf["vector"].to_numpy(), itf["vector"].to_numpy()) if scorer is None else (None, None)
        acc = {m: {} for m in ("als", "popularity")}
        for s in range(0, len(evaluated), block):
            b = evaluated[s : s + block]
            model = U[b] @ V.T if scorer is None else np.asarray(scorer(client_ids[b], item_ids), dtype=np.float64)
            for method, sc in (("als", model), ("popularity", np.tile(pop_scores, (len(b), 1)))):
                per_row = retrieval_at_k(sc, targets[b], exclude=seen[b], recall_ks=ks, ndcg_ks=(10,))
                for name in [f"recall@{k}" for k in ks] + ["ndcg@10"]:
                    acc[method].setdefault(name, []).append(per_row[name])
        count = {
            "language": lang,
            "clients_evaluated": int(len(evaluated)),
            "clients_in_model": len(client_ids),
            "items_in_model": len(item_ids),
            "targets": int(targets.nnz),
            "targets_seen_in_window": int(all_targets - targets.nnz),
        }
        counts.append(count)
        for method, metrics in acc.items():
            row = {"language": lang, "method": method, "clients": len(evaluated)}
            for name in [f"recall@{k}" for k in ks] + ["ndcg@10"]:
                vals = np.concatenate(metrics[name]) if metrics.get(name) else np.zeros(0)
                row[name] = float(vals.mean()) if len(vals) else float("nan")
            rows.append(row)
    return pl.DataFrame(rows, schema=table_schema(ks)), counts


def overall(table: pl.DataFrame) -> pl.DataFrame:
    """Client-weighted mean of every metric across languages, per method."""
    metrics = [c for c in table.columns if "@" in c]
    return (
        table.filter(pl.col("clients") > 0)
        .group_by("method")
        .agg(
            pl.col("clients").sum(),
            *[((pl.col(m) * pl.col("clients")).sum() / pl.col("clients").sum()).alias(m) for m in metrics],
        )
        .sort("method")
    )
