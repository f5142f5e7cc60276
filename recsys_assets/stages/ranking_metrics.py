"""The metric table of seed 001 ("Two Tower with Blip Embed, User History"), defined.

The seed reports auc, avg_prec@10, map, mrr, ndcg@5, ndcg@10, recall@5/10/50/100, recall@gt_5,
recall@gt_100 and recall@all_pos without defining them; its numbers (e.g. mrr 0.21 beside ndcg@5 0.73,
recall@gt_5 ≈ recall@all_pos) fix the choices below. Each validation client's served items of the day
are ranked by score; *relevant* = label 1; R = the client's number of relevant items; ranks start at 1.
Clients with R = 0 have no ranking metric (counted apart); every row counts for ``auc``.

==================  ==========================================================================================
``auc``             ROC AUC over all validation rows pooled (Mann-Whitney: P(score of a positive row >
                    score of a negative row), ties count 1/2)
``avg_prec@10``     AP@10 = Σ_{rank ≤ 10} precision@rank · rel(rank) / min(R, 10), averaged over clients
``map``             AP over the whole list = Σ precision@rank · rel(rank) / R, averaged over clients
``mrr``             mean over the client's relevant items of 1/rank, averaged over clients (not the first hit
                    only: with many relevant items per client the seed's 0.21 beside ndcg@5 0.73 fits this)
``ndcg@k``          Σ_{rank ≤ k} rel/log2(rank+1) / Σ_{r ≤ min(R,k)} 1/log2(r+1), binary gains
``recall@k``        |relevant in the top k| / R
``recall@gt_k``     |relevant in the top min(R, k)| / min(R, k) (R-precision with R capped at k)
``recall@all_pos``  |relevant in the top R| / R (R-precision)
``mrr_first``       1 / rank of the client's first relevant item (the standard MRR), averaged over clients
``auc_per_client``  ROC AUC within each client that has both labels, averaged over those clients
==================  ==========================================================================================

The catalogue-wide metrics (recall@k and ndcg@k of a score block against target cells, used by the ALS,
cold-start and two-tower evaluations) come from :func:`retrieval_at_k`, over the one ranking of
:func:`top_k`: excluded cells never ranked, ties by item index, NaN last.

Ties in score are broken by ``tie_key`` ascending (the item id), so every metric but ``auc`` and
``map`` sees one definite order. ``map`` treats ties as scikit-learn's ``average_precision_score``
does (all items of one score enter together), and ``auc`` counts ties as half -- both equal
scikit-learn's on any input, ties included.
"""

from __future__ import annotations

import typing

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

if typing.TYPE_CHECKING:
    import polars as pl

METRICS = (
    "auc",
    "avg_prec@10",
    "map",
    "mrr",
    "ndcg@5",
    "ndcg@10",
    "recall@5",
    "recall@10",
    "recall@50",
    "recall@100",
    "recall@gt_5",
    "recall@gt_100",
    "recall@all_pos",
)
"""The seed's metric table, in its order."""
EXTRA_METRICS = ("mrr_first", "auc_per_client")
"""Reported beside the seed's: the standard (first-hit) MRR, and AUC per client."""
ALL_METRICS = METRICS + EXTRA_METRICS
LEGEND = {
    "auc": "ROC AUC over all validation rows pooled (ties count 1/2)",
    "avg_prec@10": "sum over ranks <= 10 of precision@rank * rel / min(R, 10), mean over clients",
    "map": "average precision over the whole list (scikit-learn's, ties together), mean over clients",
    "mrr": "the seed's: mean of 1/rank over ALL the client's relevant items, mean over clients",
    "mrr_first": "1/rank of the client's FIRST relevant item (the standard MRR), mean over clients",
    "ndcg@k": "DCG@k / ideal DCG@k, binary gains",
    "recall@k": "relevant in the top k / R",
    "recall@gt_k": "relevant in the top min(R, k) / min(R, k): R-precision with R capped at k",
    "recall@all_pos": "relevant in the top R / R: R-precision",
    "auc_per_client": "ROC AUC within each client with both labels, mean over those clients",
    "catalog_recall@k": "the client's day-D positives in the top k of every item of its language, "
    "items it saw in the window excluded",
}
"""Each metric's definition, for the report (R = the client's number of relevant items; ranks from 1)."""


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_per_client(client: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over clients with both labels of their own ROC AUC (ties count 1/2); NaN when there is none."""
    client, scores, labels = np.asarray(client), np.asarray(scores, np.float64), np.asarray(labels, bool)
    order = np.argsort(client, kind="stable")
    c, s, y = client[order], scores[order], labels[order]
    starts = np.r_[0, np.flatnonzero(np.diff(c) != 0) + 1]
    ends = np.r_[starts[1:], len(c)]
    values = [auc(s[a:b], y[a:b]) for a, b in zip(starts, ends) if 0 < y[a:b].sum() < b - a]
    return float(np.mean(values)) if values else float("nan")


def _tie_aware_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision with tied scores entering together (scikit-learn's definition)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the end of each tie group
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall_step = np.diff(np.r_[0.0, tp]) / max(tp[-1], 1.0)
    return float((precision * recall_step).sum())


def per_client(
    client: np.ndarray, scores: np.ndarray, labels: np.ndarray, tie_key: np.ndarray
) -> dict[str, np.ndarray]:
    """Ranking metrics per client (only clients with at least one relevant item), plus ``n_relevant``."""
    client = np.asarray(client)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    order = np.lexsort((np.asarray(tie_key), -scores, client))
    c, s, y = client[order], scores[order], labels[order].astype(np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(c) != 0) + 1]
    sizes = np.diff(np.r_[starts, len(c)])
    rank = np.arange(len(c)) - np.repeat(starts, sizes) + 1
    R = np.add.reduceat(y, starts)
    keep = R > 0
    R_row = np.repeat(R, sizes)
    hits_cum = np.cumsum(y)
    hits_cum = hits_cum - np.repeat(np.r_[0.0, hits_cum[starts[1:] - 1]], sizes)  # within-client cumsum
    prec = hits_cum / rank

    def seg_sum(v: np.ndarray) -> np.ndarray:
        return np.add.reduceat(v, starts)

    def hits_at(k_row: np.ndarray) -> np.ndarray:
        return seg_sum(y * (rank <= k_row))

    out: dict[str, np.ndarray] = {}
    Rs = np.maximum(R, 1)
    for k in (5, 10, 50, 100):
        out[f"recall@{k}"] = hits_at(np.full(len(c), k)) / Rs
    for k in (5, 100):
        cap = np.minimum(R, k)
        out[f"recall@gt_{k}"] = hits_at(np.repeat(cap, sizes)) / np.maximum(cap, 1)
    out["recall@all_pos"] = hits_at(R_row) / Rs
    out["avg_prec@10"] = seg_sum(prec * y * (rank <= 10)) / np.maximum(np.minimum(R, 10), 1)
    out["mrr"] = seg_sum(y / rank) / Rs
    first_hit = np.minimum.reduceat(np.where(y > 0, rank, np.inf), starts)
    out["mrr_first"] = np.where(np.isfinite(first_hit), 1.0 / first_hit, 0.0)
    disc = 1.0 / np.log2(rank + 1)
    for k in (5, 10):
        dcg = seg_sum(y * disc * (rank <= k))
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
        out[f"ndcg@{k}"] = dcg / ideal[np.clip(np.minimum(R, k).astype(int) - 1, 0, k - 1)]
    # map: tie-aware per client
    ap = np.empty(len(starts))
    for j, (a, n) in enumerate(zip(starts, sizes)):
        ap[j] = _tie_aware_ap(s[a : a + n], y[a : a + n].astype(bool)) if R[j] > 0 else np.nan
    out["map"] = ap
    out = {k: v[keep] for k, v in out.items()}
    out["n_relevant"] = R[keep]
    out["client"] = c[starts][keep]
    return out


def metric_row(client: np.ndarray, scores: np.ndarray, labels: np.ndarray, tie_key: np.ndarray) -> dict[str, float]:
    """The seed's table row: per-client metrics averaged over clients with a relevant item; pooled auc."""
    pc = per_client(client, scores, labels, tie_key)
    row = {"auc": auc(scores, labels)}
    for m in [*METRICS[1:], "mrr_first"]:
        row[m] = float(np.mean(pc[m])) if len(pc[m]) else float("nan")
    row["auc_per_client"] = auc_per_client(client, scores, labels)
    row["clients"] = int(len(pc["client"]))
    row["clients_without_positive"] = int(len(np.unique(client)) - len(pc["client"]))
    row["rows"] = int(len(scores))
    return row


Cells = typing.Union[np.ndarray, "sp.spmatrix", None]
"""Cells of a (rows x items) block: a boolean array, a sparse matrix (non-zeros are the cells), or None."""


def _dense_bool(cells: Cells, shape: tuple[int, int]) -> np.ndarray:
    if cells is None:
        return np.zeros(shape, dtype=bool)
    if sp.issparse(cells):
        return np.asarray(cells.toarray() != 0)
    return np.asarray(cells, dtype=bool)


def top_k(scores: np.ndarray, k: int, exclude: Cells = None) -> np.ndarray:
    """Each row's ``k`` best columns, best first -- the one ranking every retrieval metric here uses.

    Ties are broken by the column index, ascending (callers sort items by id, so: the smaller id first);
    NaN scores rank last; ``exclude``d cells never enter the list (a row with fewer than ``k`` eligible
    columns gets ``-1`` in the free places). torch.topk finds the k best; only rows whose k-th score is
    tied with columns left outside are re-chosen by index, so a block costs about one pass."""
    import torch

    s = np.asarray(scores, dtype=np.result_type(np.asarray(scores).dtype, np.float32))
    nan = np.isnan(s)
    banned = None if exclude is None else _dense_bool(exclude, s.shape)
    if banned is not None or nan.any():
        s = s.copy()  # the caller's scores stay as they are
        s[nan] = -np.inf
        if banned is not None:
            s[banned] = -np.inf
    n_rows, n = s.shape
    k = min(k, n)
    if k <= 0 or n_rows == 0:
        return np.zeros((n_rows, max(k, 0)), dtype=np.int64)
    vals, idx = torch.topk(torch.from_numpy(s), k, dim=1)
    vals, idx = vals.numpy(), idx.numpy().astype(np.int64)
    kth = vals[:, -1]
    cut = np.flatnonzero((s == kth[:, None]).sum(axis=1) > (vals == kth[:, None]).sum(axis=1))
    for r in cut:  # the k-th score is tied with columns left out: take the tied columns of smallest index
        above = idx[r][vals[r] > kth[r]]
        idx[r] = np.r_[above, np.flatnonzero(s[r] == kth[r])[: k - len(above)]]
        vals[r] = s[r, idx[r]]
    order = np.lexsort((idx, -vals), axis=-1)  # by score, then by index
    idx = np.take_along_axis(idx, order, axis=1)
    if banned is None:
        return idx
    return np.where(np.take_along_axis(banned, idx, axis=1), -1, idx)


def _csr(cells: Cells, shape: tuple[int, int]) -> sp.csr_matrix:
    if cells is None:
        return sp.csr_matrix(shape, dtype=np.float32)
    m = sp.csr_matrix(cells, dtype=np.float32)
    m.data[:] = 1.0
    return m


def retrieval_at_k(
    scores: np.ndarray,
    targets: Cells,
    exclude: Cells = None,
    recall_ks: typing.Sequence[int] = (10, 50, 100),
    ndcg_ks: typing.Sequence[int] = (10,),
) -> dict[str, np.ndarray]:
    """Per row: ``recall@k`` = |top-k ∩ T| / |T| and ``ndcg@k`` (binary gains, ideal = min(|T|, k) hits),
    where T = the row's target cells that are not excluded. Rows with an empty T are dropped; ``row``
    gives the index of each row kept and ``n_targets`` its |T|. Targets and exclusions are handled
    sparsely (they are a few cells a row), the ranking by :func:`top_k`."""
    shape = np.shape(scores)
    x = _csr(exclude, shape)
    t = _csr(targets, shape)
    t = t - t.multiply(x)
    t.eliminate_zeros()
    n_t = np.diff(t.indptr)
    keep = np.flatnonzero(n_t > 0)
    s = np.array(np.asarray(scores)[keep], dtype=np.result_type(np.asarray(scores).dtype, np.float32))
    xk = x[keep].tocoo()
    s[xk.row, xk.col] = -np.inf  # excluded cells are never ranked above an eligible one
    top = top_k(s, max([*recall_ks, *ndcg_ks]))
    out = ranked_hits(top, t[keep], recall_ks, ndcg_ks)
    out["row"] = keep
    out["n_targets"] = n_t[keep]
    return out


def ranked_hits(
    top: np.ndarray,
    targets: "sp.csr_matrix",
    recall_ks: typing.Sequence[int] = (10, 50, 100),
    ndcg_ks: typing.Sequence[int] = (10,),
) -> dict[str, np.ndarray]:
    """:func:`retrieval_at_k`'s metrics of rankings already made: ``top`` (rows x k, best first, ``-1`` = no
    item) against ``targets`` (rows x items, every row with at least one target)."""
    n = np.diff(targets.indptr)
    kmax = max([*recall_ks, *ndcg_ks])
    rows = np.repeat(np.arange(top.shape[0]), top.shape[1])
    cols = top.ravel()
    hits = (np.asarray(targets[rows, np.maximum(cols, 0)]).ravel() > 0) & (cols >= 0)
    hits = hits.reshape(top.shape)
    out: dict[str, np.ndarray] = {f"recall@{k}": hits[:, :k].sum(axis=1) / n for k in recall_ks}
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
    for k in ndcg_ks:
        dcg = (hits[:, :k] * disc[: hits[:, :k].shape[1]]).sum(axis=1)
        ideal = np.cumsum(disc[:k])[np.minimum(n, k) - 1]
        out[f"ndcg@{k}"] = dcg / ideal
    return out


def scored_top_k(scores: np.ndarray, k: int, exclude: Cells = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` with each chosen column's score (NaN as ``-inf``; ``-inf`` where the column is ``-1``):
    the partial rankings of column blocks that :func:`merge_top_k` joins into :func:`top_k`'s ranking."""
    top = top_k(scores, k, exclude)
    s = np.asarray(scores)
    got = np.take_along_axis(s, np.maximum(top, 0), axis=1).astype(np.float64) if top.size else top.astype(float)
    got = np.where((top < 0) | np.isnan(got), -np.inf, got)
    return top, got


def merge_top_k(columns: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each row's candidates (``columns``/``scores``: rows x n, ``-1`` columns are padding), in
    :func:`top_k`'s order: by score, ties by column ascending. The top ``k`` of column blocks' own top ``k``
    (:func:`scored_top_k`, global column numbers) is the top ``k`` of the whole row."""
    columns = np.asarray(columns, dtype=np.int64)
    scores = np.where(columns < 0, -np.inf, np.asarray(scores, dtype=np.float64))
    tie = np.where(columns < 0, np.iinfo(np.int64).max, columns)
    order = np.lexsort((tie, -scores), axis=-1)[:, :k]
    return np.take_along_axis(columns, order, axis=1), np.take_along_axis(scores, order, axis=1)


def catalog_recall(
    scores: np.ndarray, targets: list[np.ndarray], exclude: list[np.ndarray], ks=(10, 50, 100)
) -> dict[str, np.ndarray]:
    """Recall@k over a whole catalog. ``scores``: (clients, items); ``targets``/``exclude``: per client,
    column indices of the relevant / excluded (already seen) items. Clients with no target are skipped."""
    shape = scores.shape

    def cells(per_row: list[np.ndarray]) -> sp.csr_matrix:
        rows = np.repeat(np.arange(len(per_row)), [len(c) for c in per_row])
        cols = np.concatenate([np.asarray(c, dtype=np.int64) for c in per_row]) if per_row else np.zeros(0, int)
        return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)

    out = retrieval_at_k(scores, cells(targets), cells(exclude), recall_ks=ks, ndcg_ks=())
    return {f"catalog_recall@{k}": out[f"recall@{k}"] for k in ks}


def in_unit_interval(table: "pl.DataFrame", columns: typing.Sequence[str]) -> tuple[bool, dict[str, int]]:
    """The verdict of every evaluation's ``metrics_in_unit_interval`` check: each finite value of
    ``columns`` lies in [0, 1] (NaN = not measurable, e.g. no client with a positive, is not a failure)."""
    values = table.select(columns).to_numpy().astype(np.float64).ravel() if table.height else np.zeros(0)
    values = values[np.isfinite(values)]
    return bool(((values >= 0) & (values <= 1)).all()), {"metrics": int(values.size)}
