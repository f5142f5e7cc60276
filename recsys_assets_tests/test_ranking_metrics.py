"""Seed 001's metrics against scikit-learn and plain-Python references, on random inputs with ties."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

from recsys_assets.stages.ranking_metrics import (
    METRICS,
    auc,
    catalog_recall,
    merge_top_k,
    metric_row,
    per_client,
    ranked_hits,
    retrieval_at_k,
    scored_top_k,
    top_k,
)


def naive(scores, labels, tie_key):
    """One client, by the definitions in ranking_metrics' docstring, with plain loops."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], tie_key[i]))
    rel = [bool(labels[i]) for i in order]
    R = sum(rel)
    hits = lambda k: sum(rel[:k])  # noqa: E731
    out = {f"recall@{k}": hits(k) / R for k in (5, 10, 50, 100)}
    for k in (5, 100):
        out[f"recall@gt_{k}"] = hits(min(R, k)) / min(R, k)
    out["recall@all_pos"] = hits(R) / R
    prec = [sum(rel[: r + 1]) / (r + 1) for r in range(len(rel))]
    out["avg_prec@10"] = sum(prec[r] for r in range(min(10, len(rel))) if rel[r]) / min(R, 10)
    out["mrr"] = sum(1 / (r + 1) for r in range(len(rel)) if rel[r]) / R
    for k in (5, 10):
        dcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))) if rel[r])
        out[f"ndcg@{k}"] = dcg / sum(1 / math.log2(r + 2) for r in range(min(R, k)))
    return out


def random_day(seed, clients=40, ties=True):
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(clients):
        n = int(rng.integers(2, 130))
        s = rng.integers(0, 6, n).astype(float) if ties else rng.standard_normal(n)
        y = rng.random(n) < rng.uniform(0.05, 0.7)
        rows += [(c, s[i], y[i], int(rng.integers(0, 10**6))) for i in range(n)]
    client, score, label, key = (np.array(v) for v in zip(*rows))
    return client, score, label.astype(bool), key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_client_metrics_match_plain_python(seed):
    client, score, label, key = random_day(seed)
    pc = per_client(client, score, label, key)
    for j, c in enumerate(pc["client"]):
        m = client == c
        want = naive(score[m], label[m], key[m])
        for name, v in want.items():
            assert abs(pc[name][j] - v) < 1e-9, (name, c)


@pytest.mark.parametrize("ties", [True, False])
def test_auc_and_map_equal_scikit_learn(ties):
    client, score, label, key = random_day(3, ties=ties)
    assert abs(auc(score, label) - roc_auc_score(label, score)) < 1e-12
    pc = per_client(client, score, label, key)
    for j, c in enumerate(pc["client"]):
        m = client == c
        assert abs(pc["map"][j] - average_precision_score(label[m], score[m])) < 1e-9


def test_ndcg_equals_scikit_learn_without_ties():
    client, score, label, key = random_day(4, ties=False)
    pc = per_client(client, score, label, key)
    for j, c in enumerate(pc["client"]):
        m = client == c
        if m.sum() < 2:
            continue
        for k in (5, 10):
            assert abs(pc[f"ndcg@{k}"][j] - ndcg_score(label[m][None].astype(float), score[m][None], k=k)) < 1e-9


def test_hand_made_client_with_a_tie():
    # scores 3, 2, 2, 1 with the tie broken by item id: ranks a(3) b(2, id 5) c(2, id 9) d(1); relevant b and d
    client = np.zeros(4, int)
    score = np.array([3.0, 2.0, 2.0, 1.0])
    label = np.array([False, True, False, True])
    key = np.array([1, 5, 9, 2])
    r = metric_row(client, score, label, key)
    assert r["recall@5"] == 1.0 and r["recall@all_pos"] == 0.5 and r["recall@gt_5"] == 0.5
    assert abs(r["mrr"] - (1 / 2 + 1 / 4) / 2) < 1e-12
    assert abs(r["avg_prec@10"] - (1 / 2 + 2 / 4) / 2) < 1e-12
    assert abs(r["ndcg@5"] - (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))) < 1e-12
    # map with the tie: b and c enter together at precision 1/3 (recall 1/2), then d at 2/4
    assert abs(r["map"] - (0.5 * (1 / 3) + 0.5 * (2 / 4))) < 1e-12
    # positives b(2), d(1) against negatives a(3), c(2): b-a 0, b-c tie 1/2, d-a 0, d-c 0
    assert r["auc"] == 0.5 / 4
    assert set(METRICS) <= set(r) and r["clients"] == 1


def test_clients_without_a_positive_are_counted_not_averaged():
    client = np.array([0, 0, 1, 1])
    r = metric_row(client, np.array([1.0, 0.0, 1.0, 0.0]), np.array([True, False, False, False]), np.arange(4))
    assert r["clients"] == 1 and r["clients_without_positive"] == 1 and r["recall@5"] == 1.0


def test_catalog_recall():
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    out = catalog_recall(scores, [np.array([2, 3]), np.array([0])], [np.array([0]), np.array([], int)], ks=(1, 2))
    # client 0: item 0 excluded -> ranking 1, 2, 3: top-1 misses, top-2 has item 2; client 1: item 0 is last
    np.testing.assert_allclose(out["catalog_recall@1"], [0.0, 0.0])
    np.testing.assert_allclose(out["catalog_recall@2"], [0.5, 0.0])


def test_top_k_breaks_ties_by_index_ranks_nan_last_and_never_ranks_excluded_cells():
    scores = np.array([[1.0, 1.0, 1.0, 0.0], [np.nan, 0.5, 0.5, 2.0], [3.0, 2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(top_k(scores, 2), [[0, 1], [3, 1], [0, 1]])
    exclude = np.array([[True, False, False, False], [False, False, False, True], [True, True, True, False]])
    # row 2 has one eligible column: the free places say -1
    np.testing.assert_array_equal(top_k(scores, 2, exclude), [[1, 2], [1, 2], [3, -1]])
    np.testing.assert_array_equal(top_k(scores, 9)[1], [3, 1, 2, 0])  # k beyond the row: all, NaN last


def test_retrieval_at_k_equals_a_plain_loop_with_ties_and_exclusions():
    rng = np.random.default_rng(5)
    n, m = 40, 30
    scores = rng.integers(0, 4, (n, m)).astype(float)  # many ties
    targets = rng.random((n, m)) < 0.15
    exclude = rng.random((n, m)) < 0.2
    got = retrieval_at_k(scores, targets, exclude, recall_ks=(1, 5, 10), ndcg_ks=(5,))
    rows = []
    for r in range(n):
        t = {c for c in range(m) if targets[r, c] and not exclude[r, c]}
        if not t:
            continue
        ranked = sorted((c for c in range(m) if not exclude[r, c]), key=lambda c: (-scores[r, c], c))
        rec = {k: len(t & set(ranked[:k])) / len(t) for k in (1, 5, 10)}
        dcg = sum(1 / np.log2(i + 2) for i, c in enumerate(ranked[:5]) if c in t)
        idcg = sum(1 / np.log2(i + 2) for i in range(min(len(t), 5)))
        rows.append((r, rec[1], rec[5], rec[10], dcg / idcg))
    ref = np.array(rows)
    np.testing.assert_array_equal(got["row"], ref[:, 0].astype(int))
    for j, name in enumerate(["recall@1", "recall@5", "recall@10", "ndcg@5"], start=1):
        np.testing.assert_allclose(got[name], ref[:, j], err_msg=name)


def test_mrr_first_and_auc_per_client_equal_plain_definitions():
    rng = np.random.default_rng(3)
    client = np.repeat(np.arange(30), 12)
    score = rng.integers(0, 5, len(client)).astype(float)  # ties
    label = rng.random(len(client)) < 0.3
    item = np.arange(len(client))
    row = metric_row(client, score, label, item)
    mrr_first, aucs = [], []
    for c in np.unique(client):
        m = client == c
        order = sorted(np.flatnonzero(m), key=lambda i: (-score[i], item[i]))
        ranks = [r + 1 for r, i in enumerate(order) if label[i]]
        if ranks:
            mrr_first.append(1 / ranks[0])
        if 0 < label[m].sum() < m.sum():
            aucs.append(roc_auc_score(label[m], score[m]))
    assert abs(row["mrr_first"] - np.mean(mrr_first)) < 1e-12
    assert abs(row["auc_per_client"] - np.mean(aucs)) < 1e-12


def test_in_unit_interval_ignores_nan_and_catches_out_of_range():
    import polars as pl

    from recsys_assets.stages.ranking_metrics import in_unit_interval

    ok = pl.DataFrame({"auc": [0.5, float("nan")], "recall@10": [1.0, 0.0]})
    assert in_unit_interval(ok, ["auc", "recall@10"]) == (True, {"metrics": 3})
    assert in_unit_interval(ok.with_columns(auc=pl.Series([1.2, 0.1])), ["auc"])[0] is False
    assert in_unit_interval(ok.clear(), ["auc"]) == (True, {"metrics": 0})


def test_the_top_k_of_column_blocks_merged_is_the_top_k_of_the_row_and_scores_the_same():
    """What the Spark evaluation does: each block of columns ranked apart (excluded cells out), the partial lists
    merged; with ties, NaN and rows with fewer eligible columns than k."""
    rng = np.random.default_rng(11)
    n, m, k = 30, 50, 7
    scores = rng.integers(0, 5, (n, m)).astype(np.float32)  # many ties, some across block edges
    scores[rng.random((n, m)) < 0.05] = np.nan
    exclude = rng.random((n, m)) < 0.3
    exclude[0, :3], exclude[0, 3:] = False, True  # row 0: three eligible columns for k = 7
    targets = (rng.random((n, m)) < 0.2) & ~exclude
    targets[:, 0] = True
    targets[exclude] = False
    want = top_k(scores, k, exclude)
    cols = np.full((n, k), -1)
    best = np.full((n, k), -np.inf)
    for start in range(0, m, 12):  # blocks of 12 columns, the last one short
        local, got = scored_top_k(scores[:, start : start + 12], k, exclude[:, start : start + 12])
        block_cols = np.where(local >= 0, local + start, -1)
        cols, best = merge_top_k(np.c_[cols, block_cols], np.c_[best, got], k)
    # the same eligible columns in the same order; top_k pads with -1 where merge pads with -1
    np.testing.assert_array_equal(cols, want)
    assert (cols[0] >= 0).sum() == 3
    full = retrieval_at_k(scores, targets, exclude, recall_ks=(1, 5), ndcg_ks=(5,))
    t = sp.csr_matrix(targets[full["row"]])
    merged = ranked_hits(cols[full["row"]], t, recall_ks=(1, 5), ndcg_ks=(5,))
    for name in ("recall@1", "recall@5", "ndcg@5"):
        np.testing.assert_allclose(merged[name], full[name])
