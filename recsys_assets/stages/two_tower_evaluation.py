"""Next-day validation of the two-tower model (train on D-7 .. D-1, validate on D, as seed 001's experiments).

* Served-items ranking (the seed's setting): every phase-1 row of day D whose item has features, label
  ``pcc > 0.9``; user features from the client's history in D-7 .. D-1 (the model's training window) --
  the events before the row's day, exactly as in training (and as a daily-batch server knows the client).
  Each client's served items are ranked by score
  and :mod:`.ranking_metrics` gives the seed's table.
* Catalog retrieval (the model's real job): each validation client with a label-1 row on D scores every
  item with features of its language (the language most of its history items have); the items it
  interacted with in the history window are excluded; ``catalog_recall@k`` of its D positives.

Methods in one table: ``two_tower``; ``random`` (uniform scores, seeded); ``popularity`` (label-1 count
in the history window); ``oracle`` (the simulator's true affinity -- present only when a truth function
is given, i.e. on the simulated platform: the ceiling).
"""

from __future__ import annotations

import datetime as dt
import typing

import numpy as np
import polars as pl
import scipy.sparse as sp

from . import two_tower as tt
from .ranking_metrics import ALL_METRICS, metric_row, retrieval_at_k

TruthFn = typing.Callable[[np.ndarray, np.ndarray], np.ndarray]


Frame = typing.Union[pl.DataFrame, pl.LazyFrame]


def _events(frame: Frame, rules: tt.DatasetRules) -> pl.LazyFrame:
    """The labelled played events of ``frame`` (eager or lazy: only the rule's columns are read)."""
    return tt.labelled(frame.lazy().select(*tt.EVENT_COLUMNS), rules)


def validation_dataset(
    day: Frame,
    history: Frame,
    item_features: pl.DataFrame,
    rules: tt.DatasetRules,
    window_start: dt.datetime,
    val_day: dt.date,
) -> tt.Dataset:
    """Every played event of the validation day whose item has features, by id, with the same history as
    training: the client's events from ``window_start`` (the model's window) to the day's start."""
    rows = _events(day, rules).join(item_features.lazy().select("item_id"), on="item_id", how="semi").collect()
    ds = tt.assemble(rows, _events(history, rules).collect(), item_features, window_start, rules, history_day=val_day)
    return tt.Dataset(ds.rows.sort("client_id", "item_id", "event_ts"), ds.histories, ds.items)


def client_languages(history: Frame, item_language: pl.DataFrame) -> pl.DataFrame:
    """Each client's language: the one most of its ``history`` items have (ties: the first by name)."""
    return (
        history.lazy()
        .select("client_id", "item_id")
        .join(item_language.lazy(), on="item_id", how="inner")
        .group_by("client_id", "language")
        .len()
        .collect(engine="streaming")
        .sort("client_id", "len", "language", descending=[False, True, False])
        .unique("client_id", keep="first", maintain_order=True)
        .select("client_id", "language")
    )


def _bucket(n: int) -> pl.Expr:
    return pl.col("client_id").hash(91) % n


def score_by_client_bucket(
    model: tt.TwoTower,
    rows: pl.DataFrame,
    history: pl.LazyFrame,
    item_features: pl.DataFrame,
    rules: tt.DatasetRules,
    window_start: dt.datetime,
    val_day: dt.date,
    buckets: int,
) -> pl.DataFrame:
    """``rows`` (labelled, items with features) + ``score``: the model's serving score with each client's
    history as of ``val_day``. Built ``buckets`` client buckets at a time: one bucket's history events and
    (client) histories are in memory at once, never the window's. Sorted by (client, item, time, label)."""
    parts = []
    for b in range(buckets):
        rows_b = rows.filter(_bucket(buckets) == b)
        if rows_b.height == 0:
            continue
        clients = rows_b.select("client_id").unique().lazy()
        events = (
            history.filter(_bucket(buckets) == b).join(clients, on="client_id", how="semi").collect(engine="streaming")
        )
        ds = tt.assemble(rows_b, events, item_features, window_start, rules, history_day=val_day)
        del events
        parts.append(
            ds.rows.select("client_id", "item_id", "event_ts", "label").with_columns(
                score=pl.Series(tt.score_rows(model, ds), dtype=pl.Float32)
            )
        )
    if not parts:
        return rows.select("client_id", "item_id", "event_ts", "label").with_columns(score=pl.lit(0.0, pl.Float32))
    return pl.concat(parts).sort("client_id", "item_id", "event_ts", "label")


def evaluate(
    model: tt.TwoTower,
    day: Frame,
    history: Frame,
    item_features: pl.DataFrame,
    item_language: pl.DataFrame,
    rules: tt.DatasetRules,
    val_day: dt.date,
    window_days: int = 7,
    truth: typing.Optional[TruthFn] = None,
    seed: int = 0,
    ks: typing.Sequence[int] = (10, 50, 100),
    max_catalog_clients: int = 20_000,
    baselines: bool = True,
    client_chunk: int = 256,
    client_buckets: int = 8,
) -> tuple[pl.DataFrame, dict[str, typing.Any]]:
    """The metric table of ``model`` (row ``two_tower``) and, with ``baselines``, of random, popularity and
    (given ``truth``) the oracle, on the played events of ``day`` (``val_day``); ``history``: the
    ``window_days`` before it (the model's training window). User history is point in time: events from the
    window's start up to the day's start. Scores are serving scores: user vector . item vector.

    ``day`` and ``history`` may be lazy (scans of the partitions): only the rule's columns are read, the
    history is aggregated by the streaming engine, and the served rows are scored ``client_buckets`` client
    buckets at a time, so memory is the day's rows plus one bucket's history, not the window."""
    day_start = dt.datetime.combine(val_day, dt.time(), tzinfo=dt.timezone.utc)
    window_start = day_start - dt.timedelta(days=window_days)
    hist = _events(history, rules).select("client_id", "item_id", "event_ts", "label")
    served = _events(day, rules).join(item_features.lazy().select("item_id"), on="item_id", how="semi")
    scored = score_by_client_bucket(
        model, served.collect(engine="streaming"), hist, item_features, rules, window_start, val_day, client_buckets
    )
    rng = np.random.default_rng(seed)
    client, item, label = scored["client_id"].to_numpy(), scored["item_id"].to_numpy(), scored["label"].to_numpy()
    popularity = (
        hist.filter(pl.col("label")).group_by("item_id").agg(pop=pl.len().cast(pl.Float64)).collect(engine="streaming")
    )

    def pop_of(items: pl.Series) -> np.ndarray:
        return (
            items.to_frame("item_id")
            .join(popularity, on="item_id", how="left", maintain_order="left")["pop"]
            .fill_null(0.0)
            .to_numpy()
        )

    scores: dict[str, np.ndarray] = {"two_tower": scored["score"].to_numpy()}
    if baselines:
        scores["random"] = rng.random(scored.height)
        scores["popularity"] = pop_of(scored["item_id"])
        if truth is not None:
            scores["oracle"] = truth(client, item)
    table = {m: metric_row(client, s, label, item) for m, s in scores.items()}
    stats = {
        "validation_rows": scored.height,
        "validation_clients": int(scored["client_id"].n_unique()),
        "client_buckets": client_buckets,
    }

    # catalog retrieval: every item of the client's language, what it saw in the window excluded
    positives = scored.filter(pl.col("label")).select("client_id", "item_id").unique()
    del scored, scores, client, item, label
    pos_clients = positives.select("client_id").unique()
    langs = client_languages(hist.join(pos_clients.lazy(), on="client_id", how="semi"), item_language)
    eval_clients = pos_clients.join(langs, on="client_id").sort("client_id")
    if eval_clients.height > max_catalog_clients:
        eval_clients = eval_clients.filter(pl.col("client_id").hash(seed).rank("ordinal") <= max_catalog_clients)
    # the evaluated clients' window events only: their histories as of the day's start, and what they saw
    mine = hist.join(eval_clients.lazy().select("client_id"), on="client_id", how="semi").collect(engine="streaming")
    keys = eval_clients.select("client_id", history_day=pl.lit(val_day, pl.Date))
    users = tt.day_histories(keys, mine, item_features, window_start)
    catalog = item_features.join(item_language, on="item_id").sort("item_id")
    seen = mine.select("client_id", "item_id").unique()
    cat_acc: dict[str, dict[str, list]] = {m: {f"catalog_recall@{k}": [] for k in ks} for m in table}
    for lang in eval_clients["language"].unique().sort().to_list():
        cat = catalog.filter(pl.col("language") == lang)
        if cat.height == 0:
            continue
        cat_ids = cat["item_id"].to_numpy()
        u_rows = users.join(
            eval_clients.filter(pl.col("language") == lang).select("client_id"), on="client_id", how="semi"
        ).sort("client_id")
        cids = u_rows["client_id"].to_numpy()
        targets = _cells(positives, cids, cat_ids)
        exclude = _cells(seen, cids, cat_ids)
        U = tt.user_vectors(model, u_rows)
        V = tt.item_vectors(model, np.array(cat["features"].to_numpy(), dtype=np.float32))
        pop = (pop_of(cat["item_id"]) - np.arange(len(cat_ids)) * 1e-9).astype(np.float32)
        for s in range(0, len(cids), client_chunk):
            sl = slice(s, s + client_chunk)
            blocks = {"two_tower": U[sl] @ V.T}
            if baselines:
                blocks["random"] = rng.random((len(cids[sl]), len(cat_ids)), dtype=np.float32)
                blocks["popularity"] = np.broadcast_to(pop, (len(cids[sl]), len(cat_ids)))
                if truth is not None:
                    blocks["oracle"] = truth(
                        np.repeat(cids[sl], len(cat_ids)), np.tile(cat_ids, len(cids[sl]))
                    ).reshape(len(cids[sl]), len(cat_ids))
            for m, sc in blocks.items():
                per_row = retrieval_at_k(sc, targets[sl], exclude[sl], recall_ks=ks, ndcg_ks=())
                for k in ks:
                    cat_acc[m][f"catalog_recall@{k}"].append(per_row[f"recall@{k}"])
    out_rows = []
    for m in table:
        r = {"method": m, **table[m]}
        for name, parts in cat_acc[m].items():
            vals = np.concatenate(parts) if parts else np.zeros(0)
            r[name] = float(vals.mean()) if len(vals) else float("nan")
        r["catalog_clients"] = int(sum(len(p) for p in cat_acc[m][f"catalog_recall@{ks[0]}"]))
        out_rows.append(r)
    stats["catalog_items"] = catalog.height
    return pl.DataFrame(out_rows, schema=table_schema(ks)), stats


def table_schema(ks: typing.Sequence[int] = (10, 50, 100)) -> dict[str, pl.DataType]:
    return {
        "method": pl.String,
        **{m: pl.Float64 for m in ALL_METRICS},
        "clients": pl.Int64,
        "clients_without_positive": pl.Int64,
        "rows": pl.Int64,
        **{f"catalog_recall@{k}": pl.Float64 for k in ks},
        "catalog_clients": pl.Int64,
    }


def _cells(pairs: pl.DataFrame, client_ids: np.ndarray, item_ids: np.ndarray) -> sp.csr_matrix:
    """A (clients x items) 0/1 matrix of the (client_id, item_id) ``pairs`` that fall in both id lists
    (both sorted)."""
    sub = pairs.filter(pl.col("client_id").is_in(client_ids) & pl.col("item_id").is_in(item_ids))
    r = np.searchsorted(client_ids, sub["client_id"].to_numpy())
    c = np.searchsorted(item_ids, sub["item_id"].to_numpy())
    m = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(client_ids), len(item_ids)))
    m.data[:] = 1.0
    return m
