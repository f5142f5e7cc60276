"""Next-day validation of the two-tower model (train on D-7 .. D-1, validate on D, as seed 001's experiments).

* Served-items ranking (the seed's setting): every phase-1 row of day D whose item has features, label
  ``pcc > 0.9``; user features from the client's history in D-7 .. D-1 (the model's training window),
  the row's own item left out, exactly as in training. Each client's served items are ranked by score
  and :mod:`.ranking_metrics` gives the seed's table.
* Catalog retrieval (the model's real job): each validation client with a label-1 row on D scores every
  item with features of its language (the language most of its history items have); the items it
  interacted with in the history window are excluded; ``catalog_recall@k`` of its D positives.

Methods in one table: ``two_tower``; ``random`` (uniform scores, seeded); ``popularity`` (label-1 count
in the history window); ``oracle`` (the simulator's true affinity -- present only when a truth function
is given, i.e. on the simulated platform: the ceiling).
"""

from __future__ import annotations

import typing

import numpy as np
import polars as pl

from . import two_tower as tt
from .ranking_metrics import METRICS, catalog_recall, metric_row

TruthFn = typing.Callable[[np.ndarray, np.ndarray], np.ndarray]


def validation_rows(
    day: pl.DataFrame, history: pl.DataFrame, item_features: pl.DataFrame, rules: tt.DatasetRules, dim: int
) -> pl.DataFrame:
    rows = tt.labelled(day, rules).join(item_features.select("item_id"), on="item_id", how="semi")
    hist = tt.labelled(history, rules)
    return (
        tt.with_user_features(rows, hist, item_features, dim)
        .rename({"features": "item_features"})
        .sort("client_id", "item_id", "event_ts")
    )


def client_languages(history: pl.DataFrame, item_language: pl.DataFrame) -> pl.DataFrame:
    return (
        history.join(item_language, on="item_id", how="inner")
        .group_by("client_id", "language")
        .len()
        .sort("client_id", "len", "language", descending=[False, True, False])
        .unique("client_id", keep="first", maintain_order=True)
        .select("client_id", "language")
    )


def evaluate(
    model: tt.TwoTower,
    day: pl.DataFrame,
    history: pl.DataFrame,
    item_features: pl.DataFrame,
    item_language: pl.DataFrame,
    rules: tt.DatasetRules,
    truth: typing.Optional[TruthFn] = None,
    seed: int = 0,
    ks: typing.Sequence[int] = (10, 50, 100),
    max_catalog_clients: int = 20_000,
) -> tuple[pl.DataFrame, dict[str, typing.Any]]:
    dim = item_features.schema["features"].size
    rows = validation_rows(day, history, item_features, rules, dim)
    hist = tt.labelled(history, rules)
    rng = np.random.default_rng(seed)
    client, item, label = rows["client_id"].to_numpy(), rows["item_id"].to_numpy(), rows["label"].to_numpy()
    popularity = hist.filter(pl.col("label")).group_by("item_id").agg(pop=pl.len().cast(pl.Float64))

    def pop_of(items: pl.Series) -> np.ndarray:
        return (
            items.to_frame("item_id")
            .join(popularity, on="item_id", how="left", maintain_order="left")["pop"]
            .fill_null(0.0)
            .to_numpy()
        )

    scores: dict[str, np.ndarray] = {
        "two_tower": tt.score_rows(model, rows),
        "random": rng.random(rows.height),
        "popularity": pop_of(rows["item_id"]),
    }
    if truth is not None:
        scores["oracle"] = truth(client, item)
    table = {m: metric_row(client, s, label, item) for m, s in scores.items()}

    # catalog retrieval
    langs = client_languages(hist, item_language)
    positives = rows.filter(pl.col("label")).select("client_id", "item_id").unique()
    eval_clients = positives.select("client_id").unique().join(langs, on="client_id").sort("client_id")
    if eval_clients.height > max_catalog_clients:
        eval_clients = eval_clients.filter(pl.col("client_id").hash(seed).rank("ordinal") <= max_catalog_clients)
    users = tt.with_user_features(
        eval_clients.select("client_id", pl.lit(-1, pl.Int64).alias("item_id")), hist, item_features, dim
    )
    users = users.with_columns(pl.col("features").fill_null(np.zeros(dim, dtype=np.float32).tolist()))
    catalog = item_features.join(item_language, on="item_id").sort("item_id")
    seen = hist.select("client_id", "item_id").unique()
    cat_acc: dict[str, dict[str, list]] = {m: {f"catalog_recall@{k}": [] for k in ks} for m in scores}
    for lang in eval_clients["language"].unique().sort().to_list():
        cat = catalog.filter(pl.col("language") == lang)
        if cat.height == 0:
            continue
        cat_ids = cat["item_id"].to_numpy()
        u_rows = users.join(
            eval_clients.filter(pl.col("language") == lang).select("client_id"), on="client_id", how="semi"
        ).sort("client_id")
        cids = u_rows["client_id"].to_numpy()
        pos_by = positives.filter(pl.col("client_id").is_in(cids)).group_by("client_id").agg("item_id")
        seen_by = seen.filter(pl.col("client_id").is_in(cids)).group_by("client_id").agg("item_id")
        pmap = {c: np.asarray(v) for c, v in pos_by.iter_rows()}
        smap = {c: np.asarray(v) for c, v in seen_by.iter_rows()}
        col = {int(i): k for k, i in enumerate(cat_ids)}

        def idx(ids: typing.Optional[np.ndarray], col: dict[int, int] = col) -> np.ndarray:
            if ids is None:
                return np.zeros(0, np.int64)
            return np.asarray([col[int(i)] for i in ids if int(i) in col], dtype=np.int64)

        targets = [idx(pmap.get(c)) for c in cids]
        exclude = [idx(smap.get(c)) for c in cids]
        U = tt.user_vectors(model, u_rows)
        V = tt.item_vectors(model, np.array(cat["features"].to_numpy(), dtype=np.float32))
        pop = pop_of(cat["item_id"])
        for s in range(0, len(cids), 2048):
            sl = slice(s, s + 2048)
            blocks = {
                "two_tower": U[sl] @ V.T,
                "random": rng.random((len(cids[sl]), len(cat_ids))),
                "popularity": np.tile(pop - np.arange(len(cat_ids)) * 1e-9, (len(cids[sl]), 1)),
            }
            if truth is not None:
                blocks["oracle"] = truth(np.repeat(cids[sl], len(cat_ids)), np.tile(cat_ids, len(cids[sl]))).reshape(
                    len(cids[sl]), len(cat_ids)
                )
            for m, sc in blocks.items():
                for name, vals in catalog_recall(sc, targets[sl], exclude[sl], ks).items():
                    cat_acc[m][name].append(vals)
    out_rows = []
    for m in scores:
        r = {"method": m, **table[m]}
        for name, parts in cat_acc[m].items():
            vals = np.concatenate(parts) if parts else np.zeros(0)
            r[name] = float(vals.mean()) if len(vals) else float("nan")
        r["catalog_clients"] = int(sum(len(p) for p in cat_acc[m][f"catalog_recall@{ks[0]}"]))
        out_rows.append(r)
    schema = {
        "method": pl.String,
        **{m: pl.Float64 for m in METRICS},
        "clients": pl.Int64,
        "clients_without_positive": pl.Int64,
        "rows": pl.Int64,
        **{f"catalog_recall@{k}": pl.Float64 for k in ks},
        "catalog_clients": pl.Int64,
    }
    stats = {
        "validation_rows": rows.height,
        "validation_clients": int(rows["client_id"].n_unique()),
        "catalog_items": catalog.height,
    }
    return pl.DataFrame(out_rows, schema=schema), stats
