"""ALS stage: confidence building, minimum counts, recovery of planted structure, determinism, schema, metrics."""

import dataclasses
import datetime as dt

import numpy as np
import polars as pl

from recsys_assets.stages import als_evaluation as E
from recsys_assets.stages import als_factors as A
from recsys_assets.stages.ranking_metrics import retrieval_at_k


def frame(rows):
    base = {"session_id": 1, "event_ts": dt.datetime(2026, 11, 1), "timespent_s": 10.0, "pcc": 0.5, "liked": False}
    return pl.DataFrame([{**base, **r} for r in rows])


def test_confidence_sums_positives_likes_loops_and_negatives_across_days():
    rules = A.ConfidenceRules(alpha=2.0, like_bonus=1.0, loop_bonus=0.5, negative_weight=3.0)
    rows = frame(
        [
            {"client_id": 1, "item_id": 10, "is_positive": True, "pcc": 0.95},  # 2
            {
                "client_id": 1,
                "item_id": 10,
                "is_positive": True,
                "pcc": 1.4,
                "liked": True,
            },  # 2 * (1 + 1 + 0.5) = 5, another day
            {"client_id": 1, "item_id": 11, "is_positive": False},  # -3
            {"client_id": 1, "item_id": 11, "is_positive": False},  # -3 (repeat on another day)
            {"client_id": 2, "item_id": 10, "is_positive": True, "liked": True},  # 2 * 2 = 4
            {"client_id": 2, "item_id": 10, "is_positive": False},  # -3 -> net +1
            {"client_id": 3, "item_id": 12, "is_positive": True},  # 2
            {"client_id": 3, "item_id": 12, "is_positive": False},  # -3 ... plus below
            {"client_id": 3, "item_id": 12, "is_positive": True},  # +2 -> net +1
        ]
    )
    cells = {
        (c, i): v for c, i, v in A.confidence_cells(rows, rules).select("client_id", "item_id", "value").iter_rows()
    }
    assert cells == {(1, 10): 7.0, (1, 11): -6.0, (2, 10): 1.0, (3, 12): 1.0}


def test_cancelled_cells_and_minimum_counts_are_counted():
    rules = A.ConfidenceRules(alpha=1.0, like_bonus=0.0, loop_bonus=0.0, negative_weight=1.0)
    rows = [{"client_id": c, "item_id": 1, "is_positive": True} for c in range(5)]  # item 1: 5 clients
    rows += [{"client_id": c, "item_id": 2, "is_positive": True} for c in range(2)]  # item 2: 2 clients < 3
    rows += [{"client_id": 0, "item_id": 3, "is_positive": s} for s in (True, False)]  # cancels to 0
    rows += [{"client_id": c, "item_id": 4, "is_positive": False} for c in range(4)]
    cells = A.confidence_cells(frame(rows), rules)
    lm = A.language_matrix(cells, "hindi", A.AlsParams(min_item_clients=3, min_client_items=2))
    assert lm.stats["cells_cancelled"] == 1
    assert lm.stats["items_below_min_clients"] == 1
    assert list(lm.item_ids) == [1, 4]
    # clients 0..3 have items 1 and 4; client 4 has only item 1
    assert list(lm.client_ids) == [0, 1, 2, 3] and lm.stats["clients_below_min_items"] == 1
    assert lm.stats["negative_cells"] == 4 and lm.matrix.nnz == 8


def planted(n_clients=400, n_items=120, d=4, per_client=12, seed=0):
    """Clients and items in d latent groups; a client interacts with items mostly of its own group,
    while a few items are globally popular. Returns (train, test, group ids)."""
    rng = np.random.default_rng(seed)
    cg, ig = rng.integers(0, d, n_clients), np.arange(n_items) % d
    rows_train, rows_test = [], []
    for c in range(n_clients):
        own = np.flatnonzero(ig == cg[c])
        picks = rng.choice(own, size=per_client + 4, replace=False)
        for j, i in enumerate(picks):
            (rows_train if j < per_client else rows_test).append(
                {"client_id": c, "item_id": int(i), "is_positive": True}
            )
        for i in rng.choice(np.flatnonzero(ig != cg[c]), size=3, replace=False):
            rows_train.append({"client_id": c, "item_id": int(i), "is_positive": False})
    return frame(rows_train), frame(rows_test), cg, ig


def test_als_recovers_planted_groups_better_than_popularity():
    train, test, _, ig = planted()
    langs = pl.DataFrame({"item_id": np.arange(len(ig)), "language": ["hindi"] * len(ig)})
    res = A.train_als(
        train, langs, A.AlsParams(factors=8, iterations=10, regularization=0.5), A.ConfidenceRules(alpha=5.0)
    )
    table, counts = E.evaluate(res.item_factors, res.user_factors, train, test)
    r = {row["method"]: row for row in table.iter_rows(named=True)}
    assert counts[0]["clients_evaluated"] > 300
    assert r["als"]["recall@10"] > 2 * r["popularity"]["recall@10"]
    assert r["als"]["ndcg@10"] > r["popularity"]["ndcg@10"]


def test_training_is_deterministic_and_output_schema_is_the_contract():
    train, _, _, ig = planted(n_clients=150, n_items=80)
    langs = pl.DataFrame(
        {"item_id": np.arange(len(ig)), "language": ["hindi" if i % 3 else "tamil" for i in range(len(ig))]}
    )
    params = A.AlsParams(factors=6, iterations=5, min_item_clients=1, min_client_items=1)
    params = dataclasses.replace(params, min_cells_per_language=10)
    a = A.train_als(train, langs, params)
    b = A.train_als(train, langs, params)
    assert a.item_factors.equals(b.item_factors) and a.user_factors.equals(b.user_factors)
    assert a.item_factors.schema == pl.Schema(
        {"item_id": pl.Int64, "language": pl.String, "vector": pl.Array(pl.Float32, 6)}
    )
    assert a.user_factors.schema == pl.Schema(
        {"client_id": pl.Int64, "language": pl.String, "vector": pl.Array(pl.Float32, 6)}
    )
    assert set(a.item_factors["language"]) == {"hindi", "tamil"}
    assert all(ok for ok, _ in A.validate(a.item_factors, a.stats, max_norm=100.0).values())


def test_languages_with_too_little_data_are_skipped_and_reported():
    train, _, _, ig = planted(n_clients=100, n_items=40, per_client=5)
    langs = pl.DataFrame({"item_id": np.arange(len(ig)), "language": ["hindi"] * (len(ig) - 1) + ["tamil"]})
    res = A.train_als(train, langs, A.AlsParams(factors=4, iterations=3, min_cells_per_language=50))
    by = {s["language"]: s for s in res.stats}
    assert by["hindi"]["trained"] and not by["tamil"]["trained"] and "skipped" in by["tamil"]
    assert set(res.item_factors["language"]) == {"hindi"}


def test_validate_flags_bad_factors():
    f = pl.DataFrame(
        {
            "item_id": [1, 1, 2],
            "language": ["hindi", "tamil", "hindi"],
            "vector": [[1.0, 0.0], [1.0, 1.0], [float("nan"), 0.0]],
        },
        schema={"item_id": pl.Int64, "language": pl.String, "vector": pl.Array(pl.Float32, 2)},
    )
    v = A.validate(f, [{"trained": True, "items": 2}], max_norm=10.0)
    assert not v["factors_finite"][0] and not v["norms_within_bounds"][0] and not v["one_language_per_item"][0]
    assert not v["every_eligible_item_has_vector"][0]


def _reference_metrics(scores, seen, targets, k):
    rec, nd = [], []
    for s, se, t in zip(scores, seen, targets):
        cand = [i for i in np.argsort(-s, kind="stable") if i not in se]
        hits = [i in t for i in cand[:k]]
        rec.append(sum(hits) / len(t))
        dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(cand[:10]) if i in t)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(len(t), 10)))
        nd.append(dcg / idcg)
    return np.array(rec), np.array(nd)


def test_ranking_metrics_match_a_plain_reference():
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    n, m = 30, 40
    scores = rng.standard_normal((n, m))
    seen = [set(rng.choice(m, 5, replace=False).tolist()) for _ in range(n)]
    targets = [set(rng.choice([i for i in range(m) if i not in s], 3, replace=False).tolist()) for s in seen]

    def to_csr(sets):
        return sp.csr_matrix(
            ([1.0] * sum(map(len, sets)), ([r for r, s in enumerate(sets) for _ in s], [c for s in sets for c in s])),
            shape=(n, m),
        )

    got = retrieval_at_k(scores, to_csr(targets), exclude=to_csr(seen), recall_ks=(10, 20), ndcg_ks=(10,))
    rec, nd = _reference_metrics(scores, seen, targets, 10)
    np.testing.assert_allclose(got["recall@10"], rec)
    np.testing.assert_allclose(got["ndcg@10"], nd)
    rec20, _ = _reference_metrics(scores, seen, targets, 20)
    np.testing.assert_allclose(got["recall@20"], rec20)
