"""Seed 001's dataset rules at every boundary, leave-own-item-out user features, PCA and model round trips."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from recsys_assets.artifacts import from_bytes, to_bytes
from recsys_assets.stages import two_tower as tt

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)


def window(spec: dict[int, list[tuple[int, float]]]) -> pl.DataFrame:
    """client -> [(item, pcc)] as phase-1 rows."""
    rows = []
    for c, items in spec.items():
        for k, (i, pcc) in enumerate(items):
            rows.append(
                {
                    "client_id": c,
                    "session_id": c * 10,
                    "item_id": i,
                    "event_ts": T0 + dt.timedelta(seconds=k),
                    "pcc": pcc,
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "client_id": pl.Int64,
            "session_id": pl.Int64,
            "item_id": pl.Int64,
            "event_ts": pl.Datetime("us", "UTC"),
            "pcc": pl.Float64,
        },
    )


def popular_items(n=6):
    # enough traffic on items 1..n from filler clients so the item filter does not interfere
    return {900 + k: [(i, 0.95 if (i + k) % 2 else 0.1) for i in range(1, n + 1)] for k in range(3)}


def test_client_bounds_are_inclusive_and_need_both_labels():
    spec = popular_items()
    spec[1] = [(1, 0.95), (2, 0.1), (3, 0.95), (4, 0.1)]  # exactly 4: kept
    spec[2] = [(1, 0.95), (2, 0.1), (3, 0.95)]  # 3: dropped
    spec[3] = [(1, 0.95), (2, 0.95), (3, 0.95), (4, 0.95)]  # no negative: dropped
    spec[4] = [(1, 0.1), (2, 0.1), (3, 0.1), (4, 0.1)]  # no positive: dropped
    spec[5] = [(1 + k % 6, 0.95 if k % 2 else 0.1) for k in range(2000)]  # exactly 2000: kept
    spec[6] = [(1 + k % 6, 0.95 if k % 2 else 0.1) for k in range(2001)]  # 2001: dropped
    spec[7] = [(1, 0.9), (2, 0.1), (3, 0.1), (4, 0.91)]  # pcc 0.9 is not > 0.9: label 0; 0.91 is the one positive
    kept, stats = tt.eligible(window(spec), tt.DatasetRules())
    clients = set(kept["client_id"].unique())
    assert {1, 5, 7} <= clients and not clients & {2, 3, 4, 6}
    assert stats["clients_below_min_interactions"] == 1 and stats["clients_above_max_interactions"] == 1
    assert stats["clients_without_negative"] == 1 and stats["clients_without_positive"] == 1
    labels = dict(zip(kept.filter(pl.col("client_id") == 7)["item_id"], kept.filter(pl.col("client_id") == 7)["label"]))
    assert labels[1] is False and labels[4] is True


def test_item_filter_needs_three_interactions():
    spec = popular_items()
    spec[1] = [(1, 0.95), (2, 0.1), (50, 0.95), (60, 0.1)]
    spec[2] = [(1, 0.95), (2, 0.1), (50, 0.95), (60, 0.1)]
    spec[3] = [(1, 0.95), (2, 0.1), (50, 0.95), (3, 0.1)]  # item 50: 3 interactions (kept), item 60: 2 (dropped)
    kept, _ = tt.eligible(window(spec), tt.DatasetRules())
    assert 50 in set(kept["item_id"]) and 60 not in set(kept["item_id"])


def features_for(items, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((len(items), dim)).astype(np.float32)
    return pl.DataFrame({"item_id": list(items), "features": pl.Series(f, dtype=pl.Array(pl.Float32, dim))}), dict(
        zip(items, f)
    )


def test_user_history_leaves_the_rows_own_item_out():
    spec = popular_items()
    spec[1] = [(1, 0.95), (2, 0.95), (3, 0.95), (4, 0.1), (5, 0.1), (1, 0.96)]  # item 1 twice
    feats, f = features_for(range(1, 7))
    ds, _ = tt.build_dataset(window(spec), feats, tt.DatasetRules(balance=False), 3)
    rows = ds.filter(pl.col("client_id") == 1)
    pos_items, neg_items = {1, 2, 3}, {4, 5}
    for r in rows.iter_rows(named=True):
        others_pos = sorted(pos_items - {r["item_id"]})
        others_neg = sorted(neg_items - {r["item_id"]})
        np.testing.assert_allclose(r["pos_hist"], np.mean([f[i] for i in others_pos], axis=0), atol=1e-6)
        np.testing.assert_allclose(r["neg_hist"], np.mean([f[i] for i in others_neg], axis=0), atol=1e-6)
        assert r["n_pos_hist"] == len(others_pos) and r["n_neg_hist"] == len(others_neg)
    # the label cannot be read off the features: flipping a row's own label leaves its features unchanged
    spec[1] = [(1, 0.1), (2, 0.95), (3, 0.95), (4, 0.1), (5, 0.1), (1, 0.1)]
    flipped, _ = tt.build_dataset(window(spec), feats, tt.DatasetRules(balance=False), 3)
    a = rows.filter(pl.col("item_id") == 2).row(0, named=True)
    b = flipped.filter((pl.col("client_id") == 1) & (pl.col("item_id") == 2)).row(0, named=True)
    assert a["label"] == b["label"]
    one_row = flipped.filter((pl.col("client_id") == 1) & (pl.col("item_id") == 1)).row(0, named=True)
    np.testing.assert_allclose(one_row["pos_hist"], np.mean([f[2], f[3]], axis=0), atol=1e-6)  # item 1 itself left out
    np.testing.assert_allclose(one_row["neg_hist"], np.mean([f[4], f[5]], axis=0), atol=1e-6)


def test_a_client_whose_only_positive_is_the_row_gets_an_empty_positive_history():
    spec = popular_items()
    spec[1] = [(1, 0.95), (2, 0.1), (3, 0.1), (4, 0.1)]
    feats, _ = features_for(range(1, 7))
    ds, _ = tt.build_dataset(window(spec), feats, tt.DatasetRules(balance=False), 3)
    r = ds.filter((pl.col("client_id") == 1) & (pl.col("item_id") == 1)).row(0, named=True)
    assert r["n_pos_hist"] == 0 and np.allclose(r["pos_hist"], 0.0)


def test_balance_is_five_to_five_and_seeded():
    rng = np.random.default_rng(0)
    spec = {c: [(int(i), 0.95 if rng.random() < 0.3 else 0.1) for i in rng.integers(1, 40, 30)] for c in range(200)}
    feats, _ = features_for(range(1, 40))
    ds, stats = tt.build_dataset(window(spec), feats, tt.DatasetRules(seed=1), 3)
    assert stats["positives"] == stats["negatives"] > 500
    again, _ = tt.build_dataset(window(spec), feats, tt.DatasetRules(seed=1), 3)
    assert ds.select("client_id", "item_id", "event_ts").equals(again.select("client_id", "item_id", "event_ts"))
    other, _ = tt.build_dataset(window(spec), feats, tt.DatasetRules(seed=2), 3)
    assert not ds.select("client_id", "item_id", "event_ts").equals(other.select("client_id", "item_id", "event_ts"))
    assert (ds["weight"] == 1.0).all()  # the seed: no sample weight


def test_pca_round_trip_without_pickle():
    x = np.random.default_rng(0).standard_normal((300, 40))
    from sklearn.decomposition import PCA

    want = PCA(n_components=16, svd_solver="full").fit(x).transform(x)
    art = from_bytes(to_bytes(tt.fit_pca(x, 16)))
    got = tt.pca_from_artifact(art).transform(x)
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-4)  # components' signs are the solver's
    np.testing.assert_allclose(got, tt.pca_from_artifact(tt.fit_pca(x, 16)).transform(x), atol=1e-5)
    assert tt.fit_pca(x[:10], 128).config["n_components"] == 10  # never more components than samples


@pytest.mark.parametrize("loss", ["bce", "inbatch_softmax"])
def test_model_trains_and_round_trips(loss):
    rng = np.random.default_rng(0)
    spec = {c: [(int(i), 0.0) for i in rng.integers(1, 60, 25)] for c in range(300)}
    # planted: client c likes items with the same parity as c
    for c, items in spec.items():
        spec[c] = [(i, 0.95 if (i % 2) == (c % 2) else 0.1) for i, _ in items]
    feats, _ = features_for(range(1, 60), dim=4)
    feats = feats.with_columns(
        features=pl.Series(
            np.array([[i % 2, 1 - i % 2, 0.0, 0.0] for i in range(1, 60)], dtype=np.float32),
            dtype=pl.Array(pl.Float32, 4),
        )
    )
    ds, _ = tt.build_dataset(window(spec), feats, tt.DatasetRules(), 4)
    params = tt.ModelParams(epochs=6, batch_size=256, loss=loss, device="cpu")
    res = tt.train(ds, params)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    if loss == "bce":
        assert res.history[res.best_epoch]["holdout_auc"] > 0.9
    back = tt.from_artifact(from_bytes(to_bytes(tt.to_artifact(res.model, params, 4, {}))))
    np.testing.assert_array_equal(tt.score_rows(back, ds.head(50)), tt.score_rows(res.model, ds.head(50)))
    assert all(torch.isfinite(p).all() for p in back.parameters())
