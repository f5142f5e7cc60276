"""Seed 001's two-tower retrieval model with BLIP user history: dataset, item PCA, towers, training, scoring.

Dataset of partition D (:func:`build_dataset`), from the phase-1 interactions of D-6 .. D:

* label = ``pcc > 0.9`` (the seed's "fraction_watch > 0.9");
* clients with ``min_client_interactions`` (4) ≤ rows ≤ ``max_client_interactions`` (2000) in the
  7 days, and at least one label-1 and one label-0 row; items with ≥ ``min_item_interactions`` (3)
  rows. Both counts are taken over the whole window before either filter is applied;
* positives and negatives balanced ~5:5 by sampling the larger class down (seeded);
* user features: ``pos_hist`` / ``neg_hist`` = the mean of the item features over the client's
  label-1 / label-0 events of the window **before the row's day** (point in time at day granularity: the
  row's own event, and anything at or after its day, is never in its history, so no input is a function of
  its label; and it is what a daily-batch server knows about the client when it serves that day), plus
  the counts ``n_pos_hist`` / ``n_neg_hist`` (0 -> a zero vector);
* item features: the item's BLIP embedding reduced by the PCA of ``item_pca`` (128 components); no item
  id. The history means are taken in that same PCA space -- PCA is affine, so this is exactly the PCA
  projection of the raw-BLIP history mean;
* sample weight: none by default (``weight`` column of ones; config may weight by label).

Stored by id (:class:`Dataset`), so a week at the seed's scale fits on disk and in memory: the training rows
are ids, labels and two row indexes; each (client, day) history and each item's features are stored once,
and training gathers them by index on its device (:class:`Tensors`).

Model (:class:`TwoTower`): a user MLP over ``[pos_hist, neg_hist, has_pos, has_neg]`` and an item MLP over
the PCA features, each to ``out_dim``; score = dot product + a global bias. Loss: pointwise BCE on the
labels (the seed), or in-batch softmax over the batch's positive rows with logQ correction (item
frequency in the dataset), as TFRS / Merlin retrieval users expect.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import typing
import warnings

import numpy as np
import polars as pl
import torch
from torch import nn

from ..artifacts import ModelArtifact
from .torch_device import resolve_device


@dataclasses.dataclass(frozen=True)
class DatasetRules:
    """Seed 001's dataset rules; the defaults are the seed's."""

    positive_pcc_above: float = 0.9
    """Label 1 when the fraction watched (pcc) is above this."""
    min_client_interactions: int = 4
    """A client needs at least this many interactions in the window ..."""
    max_client_interactions: int = 2000
    """... and at most this many (the seed's 99.9th percentile)."""
    min_client_positives: int = 1
    min_client_negatives: int = 1
    min_item_interactions: int = 3
    """An item needs at least this many interactions in the window."""
    balance: bool = True
    """Sample the larger class down to 5:5."""
    seed: int = 0
    """Seed of the balancing draw."""
    positive_weight: float = 1.0
    """Sample weight of a label-1 row (the seed: none, i.e. 1)."""
    negative_weight: float = 1.0
    """Sample weight of a label-0 row."""


EVENT_COLUMNS = ("client_id", "item_id", "session_id", "event_ts", "pcc")
"""The columns of the played events that the dataset rules read."""


def labelled(window: pl.DataFrame, rules: DatasetRules) -> pl.DataFrame:
    return window.select(
        "client_id", "item_id", "session_id", "event_ts", (pl.col("pcc") > rules.positive_pcc_above).alias("label")
    )


def _client_counts(rows: pl.LazyFrame) -> pl.LazyFrame:
    return rows.group_by("client_id").agg(n=pl.len(), pos=pl.col("label").sum(), neg=(~pl.col("label")).sum())


def _client_ok(rules: DatasetRules) -> pl.Expr:
    return (
        (pl.col("n") >= rules.min_client_interactions)
        & (pl.col("n") <= rules.max_client_interactions)
        & (pl.col("pos") >= rules.min_client_positives)
        & (pl.col("neg") >= rules.min_client_negatives)
    )


def _item_ok(rules: DatasetRules) -> pl.Expr:
    return pl.col("n") >= rules.min_item_interactions


def eligible(window: pl.DataFrame, rules: DatasetRules) -> tuple[pl.DataFrame, dict[str, int]]:
    """Rows of the window that pass the client and item filters (counts over the whole window)."""
    rows = labelled(window, rules)
    clients = _client_counts(rows.lazy()).collect()
    ok_clients = clients.filter(_client_ok(rules))
    items = rows.group_by("item_id").agg(n=pl.len())
    ok_items = items.filter(_item_ok(rules))
    kept = rows.join(ok_clients.select("client_id"), on="client_id", how="semi").join(
        ok_items.select("item_id"), on="item_id", how="semi"
    )
    stats = {
        "window_rows": rows.height,
        "clients": clients.height,
        "clients_kept": ok_clients.height,
        "clients_below_min_interactions": clients.filter(pl.col("n") < rules.min_client_interactions).height,
        "clients_above_max_interactions": clients.filter(pl.col("n") > rules.max_client_interactions).height,
        "clients_without_positive": clients.filter(pl.col("pos") < rules.min_client_positives).height,
        "clients_without_negative": clients.filter(pl.col("neg") < rules.min_client_negatives).height,
        "items": items.height,
        "items_kept": ok_items.height,
        "rows_kept": kept.height,
    }
    return kept, stats


def eligible_items(window: pl.LazyFrame, rules: DatasetRules) -> pl.Series:
    """The item ids of :func:`eligible`'s rows, sorted, computed by the streaming engine from a lazy window
    (only the rule's columns are read; the window is never in memory)."""
    rows = labelled(window.select(*EVENT_COLUMNS), rules).select("client_id", "item_id", "label")
    ok_clients = _client_counts(rows).filter(_client_ok(rules)).select("client_id")
    ok_items = rows.group_by("item_id").agg(n=pl.len()).filter(_item_ok(rules)).select("item_id")
    kept = rows.join(ok_clients, on="client_id", how="semi").join(ok_items, on="item_id", how="semi")
    return kept.select("item_id").unique().collect(engine="streaming")["item_id"].sort()


def validate_dataset(
    ds: Dataset, window: pl.DataFrame, rules: DatasetRules, items_checked: bool = True
) -> dict[str, tuple[bool, dict]]:
    """Verdicts of two_tower_dataset's checks: the filters hold on the output, labels are balanced, every
    row's indexes resolve to its own client/day and item, features finite, no history from the row's day on."""
    rows = ds.rows
    lab = labelled(window, rules)
    c = _client_counts(lab.lazy()).collect().join(rows.select("client_id").unique(), on="client_id", how="semi")
    bad_clients = c.filter(~_client_ok(rules)).height
    bad_items = 0
    if items_checked:  # needs the whole window's item counts (a bucket of clients has only part of them)
        i = lab.group_by("item_id").len().join(rows.select("item_id").unique(), on="item_id", how="semi")
        bad_items = i.filter(pl.col("len") < rules.min_item_interactions).height
    pos = int(rows["label"].sum())
    share = pos / rows.height if rows.height else 0.5
    finite = all(bool(np.isfinite(ds.histories[c].to_numpy()).all()) for c in ("pos_hist", "neg_hist")) and bool(
        np.isfinite(ds.items["features"].to_numpy()).all()
    )
    resolved = rows.join(ds.histories.select("history_row", "client_id", "history_day"), on="history_row", how="left")
    resolved = resolved.join(ds.items.select("item_row", item_of_row="item_id"), on="item_row", how="left")
    unresolved = resolved.filter(
        (pl.col("client_id") != pl.col("client_id_right")).fill_null(True)
        | (pl.col("history_day") != pl.col("event_ts").dt.date()).fill_null(True)
        | (pl.col("item_id") != pl.col("item_of_row")).fill_null(True)
    ).height
    return {
        "clients_within_bounds": (bad_clients == 0, {"clients_out_of_bounds": bad_clients}),
        "items_with_min_interactions": (bad_items == 0, {"items_below_min": bad_items}),
        "balanced_labels": ((not rules.balance) or abs(share - 0.5) <= 0.05, {"positive_share": share}),
        "features_finite": (finite, {}),
        "rows_resolve_to_their_history_and_item": (
            unresolved == 0,
            {"unresolved_rows": unresolved, "history_rows": ds.histories.height, "items": ds.items.height},
        ),
    }


_KEY_SPAN_US = 10**13
"""Microseconds a client's block spans in the composite (client, time) key: 115 days, more than any window."""


def _client_blocks(client_rank: np.ndarray, size: int) -> list[int]:
    """Edges of blocks of whole clients (``client_rank`` sorted), each about ``size`` events long."""
    starts = np.flatnonzero(np.diff(client_rank)) + 1
    edges = [0]
    for start in starts:
        if start - edges[-1] >= size:
            edges.append(int(start))
    edges.append(len(client_rank))
    return edges


def point_in_time_history(
    rows: pl.DataFrame,
    events: pl.DataFrame,
    item_features: pl.DataFrame,
    window_start: dt.datetime,
    chunk_events: int = 250_000,
) -> pl.DataFrame:
    """``rows`` (client_id, event_ts, ...) + ``pos_hist``/``neg_hist``: the means of the item features over
    the client's label-1 / label-0 ``events`` strictly before the row's ``event_ts`` and not before
    ``window_start``, with their counts ``n_pos_hist``/``n_neg_hist`` (0 -> a zero vector).

    The one feature function of training and validation alike. A row's own event is never in its
    history (nor is anything at or after its time), so no input is a function of the row's label.
    Events whose item has no features are not counted. Rows come back sorted by (client, time, item).
    Exact prefix sums per client in float64, ``chunk_events`` events at a time."""
    dim = item_features.schema["features"].size
    rows = rows.sort("client_id", "event_ts", "item_id")
    ev = (
        events.filter(pl.col("event_ts") >= window_start)
        .select("client_id", "item_id", "event_ts", "label")
        .join(item_features.select("item_id", "features"), on="item_id", how="inner")
        .sort("client_id", "event_ts", "item_id")
    )
    t0 = int(window_start.timestamp() * 1_000_000)
    clients = np.unique(np.concatenate([rows["client_id"].to_numpy(), ev["client_id"].to_numpy()]))

    def keys(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        rank = np.searchsorted(clients, df["client_id"].to_numpy()).astype(np.int64)
        us = df["event_ts"].dt.epoch("us").to_numpy() - t0
        return rank, rank * _KEY_SPAN_US + np.clip(us, 0, _KEY_SPAN_US - 1)

    ev_rank, ev_key = keys(ev)
    row_rank, row_key = keys(rows)
    n = rows.height
    out = {name: np.zeros((n, dim), np.float32) for name in ("pos_hist", "neg_hist")}
    counts = {name: np.zeros(n, np.int32) for name in ("n_pos_hist", "n_neg_hist")}
    label = ev["label"].to_numpy().astype(bool)
    # blocks of whole clients, about chunk_events events each (rows of clients without events stay zero)
    edges = _client_blocks(ev_rank, chunk_events)
    for lo_ev, hi_ev in zip(edges[:-1], edges[1:]):
        if hi_ev <= lo_ev:
            continue
        r_lo = np.searchsorted(row_rank, ev_rank[lo_ev], "left")
        r_hi = np.searchsorted(row_rank, ev_rank[hi_ev - 1], "right")
        if r_hi <= r_lo:
            continue
        f = np.asarray(ev["features"][lo_ev:hi_ev].to_numpy(), dtype=np.float64).reshape(-1, dim)
        lab = label[lo_ev:hi_ev]
        k = ev_key[lo_ev:hi_ev]
        rk = row_key[r_lo:r_hi]
        before = np.searchsorted(k, rk, "left")  # events strictly before the row (this block)
        client_first = np.searchsorted(k, row_rank[r_lo:r_hi] * _KEY_SPAN_US, "left")
        for name, cname, mask in (("pos_hist", "n_pos_hist", lab), ("neg_hist", "n_neg_hist", ~lab)):
            cum = np.zeros((len(k) + 1, dim))
            np.cumsum(f * mask[:, None], axis=0, out=cum[1:])
            cnt = np.r_[0, np.cumsum(mask)]
            c = cnt[before] - cnt[client_first]
            total = cum[before] - cum[client_first]
            out[name][r_lo:r_hi] = np.where(c[:, None] > 0, total / np.maximum(c, 1)[:, None], 0.0)
            counts[cname][r_lo:r_hi] = c
    return rows.with_columns(
        *(pl.Series(k, v, dtype=pl.Array(pl.Float32, dim)) for k, v in out.items()),
        *(pl.Series(k, v) for k, v in counts.items()),
    )


def balance(rows: pl.DataFrame, seed: int) -> pl.DataFrame:
    n_pos = int(rows["label"].sum())
    n_neg = rows.height - n_pos
    k = min(n_pos, n_neg)
    rank = pl.col("row_key").hash(seed).rank("ordinal").over("label")
    keyed = rows.with_row_index("row_key")
    return keyed.filter(rank <= k).drop("row_key").sort("client_id", "item_id", "event_ts")


@dataclasses.dataclass
class Dataset:
    """Training (or validation) rows by id, with what they point at stored once.

    * ``rows``: client_id, item_id, session_id, event_ts, label, weight, ``history_row``, ``item_row``;
    * ``histories``: history_row, client_id, history_day, pos_hist, neg_hist, n_pos_hist, n_neg_hist -- one
      per (client, day) with rows: the client's events of the window before that day;
    * ``items``: item_row, item_id, features -- one per item with rows.
    """

    rows: pl.DataFrame
    histories: pl.DataFrame
    items: pl.DataFrame

    @property
    def feature_dim(self) -> int:
        return int(self.items.collect_schema()["features"].size)

    @property
    def height(self) -> int:
        return self.rows.height

    def head(self, n: int) -> "Dataset":
        """The first ``n`` rows (the tables they point at unchanged)."""
        return Dataset(self.rows.head(n), self.histories, self.items)

    def joined(self) -> pl.DataFrame:
        """Rows with their history and item features as columns (``pos_hist``, ``neg_hist``, ``n_pos_hist``,
        ``n_neg_hist``, ``item_features``): rows x 3 vectors, for inspection and small sets only."""
        return self.rows.join(
            self.histories.drop("client_id", "history_day"), on="history_row", how="left", maintain_order="left"
        ).join(
            self.items.select("item_row", item_features="features"), on="item_row", how="left", maintain_order="left"
        )


VECTOR_DTYPES = {"float32": pl.Float32(), "float16": pl.Float16()}


def stored_as(ds: Dataset, dtype: str) -> Dataset:
    """``ds`` with its history and item vectors as ``dtype`` (``float16``: half the bytes on disk and in memory;
    training gathers them into float32 batches)."""
    if dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector_dtype must be one of {sorted(VECTOR_DTYPES)}, not {dtype!r}")
    arr = pl.Array(VECTOR_DTYPES[dtype], ds.feature_dim)
    return Dataset(
        ds.rows,
        ds.histories.with_columns(pl.col("pos_hist").cast(arr), pl.col("neg_hist").cast(arr)),
        ds.items.with_columns(pl.col("features").cast(arr)),
    )


TRAINING_COLUMNS = ("client_id", "item_id", "event_ts", "label", "weight", "history_row", "item_row")
"""What training reads of the rows (client: the holdout split; item: logQ; time: the trained range)."""
ROW_COLUMNS = ("client_id", "item_id", "session_id", "event_ts", "label", "weight", "history_row", "item_row")


def day_histories(
    keys: pl.DataFrame,
    events: pl.DataFrame,
    item_features: pl.DataFrame,
    window_start: dt.datetime,
    block_events: int = 200_000,
) -> pl.DataFrame:
    """``keys`` (client_id, history_day) -> one history per distinct key: the means (and counts) of the item
    features over the client's label-1 / label-0 ``events`` from ``window_start`` up to the day's midnight
    (UTC), exclusive; events whose item has no features are not counted. Numbered ``history_row`` 0.. in
    (client, day) order.

    Memory is bounded by the output plus one block: events never get a feature column. Per block of whole
    clients (about ``block_events`` events), each (client, day)'s feature sums are gathered by item index
    and reduced (float32 within a day), and a key's history is the prefix sum of its client's earlier days
    (float64)."""
    keys = keys.select("client_id", "history_day").unique().sort("client_id", "history_day")
    dim = int(item_features.schema["features"].size)
    feats = item_features.select("item_id", "features").sort("item_id")
    item_ids = feats["item_id"].to_numpy()
    F = np.asarray(feats["features"].to_numpy(), dtype=np.float32).reshape(len(item_ids), dim)
    clients = keys["client_id"].unique().sort().to_numpy()
    ev = (
        events.filter(pl.col("event_ts") >= window_start)
        .select("client_id", "item_id", "label", day=pl.col("event_ts").dt.date())
        .join(feats.select("item_id"), on="item_id", how="semi")
        .join(keys.select("client_id").unique(), on="client_id", how="semi")
        .sort("client_id", "day", "label", "item_id")
    )
    day0 = np.datetime64("1970-01-01", "D")
    e_client = np.searchsorted(clients, ev["client_id"].to_numpy()).astype(np.int64)
    e_day = (ev["day"].to_numpy().astype("datetime64[D]") - day0).astype(np.int64)
    e_item = np.searchsorted(item_ids, ev["item_id"].to_numpy())
    e_label = ev["label"].to_numpy().astype(bool)
    k_client = np.searchsorted(clients, keys["client_id"].to_numpy()).astype(np.int64)
    k_day = (keys["history_day"].to_numpy().astype("datetime64[D]") - day0).astype(np.int64)
    span = 1 << 20  # days: more than any calendar
    e_key, k_key = e_client * span + e_day, k_client * span + k_day

    n = keys.height
    out = {name: np.zeros((n, dim), np.float32) for name in ("pos_hist", "neg_hist")}
    counts = {name: np.zeros(n, np.int32) for name in ("n_pos_hist", "n_neg_hist")}
    edges = _client_blocks(e_client, block_events)
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        k_lo = np.searchsorted(k_client, e_client[lo], "left")
        k_hi = np.searchsorted(k_client, e_client[hi - 1], "right")
        if k_hi <= k_lo:
            continue
        g_key = e_key[lo:hi]
        g_start = np.r_[0, np.flatnonzero(np.diff(g_key)) + 1]  # one group per (client, day)
        g_keys = g_key[g_start]
        rows = F[e_item[lo:hi]]  # the block's events x dim, float32: ~100 MB at 200 k events
        lab = e_label[lo:hi]
        kk = k_key[k_lo:k_hi]
        before = np.searchsorted(g_keys, kk, "left")  # groups of days strictly before the key's day
        first = np.searchsorted(g_keys, k_client[k_lo:k_hi] * span, "left")  # the client's first group
        for name, cname, mask in (("pos_hist", "n_pos_hist", lab), ("neg_hist", "n_neg_hist", ~lab)):
            sums = np.add.reduceat(np.where(mask[:, None], rows, np.float32(0)), g_start, axis=0).astype(np.float64)
            cnt = np.add.reduceat(mask.astype(np.int64), g_start)
            cum = np.zeros((len(g_start) + 1, dim))
            np.cumsum(sums, axis=0, out=cum[1:])
            ccnt = np.r_[0, np.cumsum(cnt)]
            c = ccnt[before] - ccnt[first]
            total = cum[before] - cum[first]
            out[name][k_lo:k_hi] = np.where(c[:, None] > 0, total / np.maximum(c, 1)[:, None], 0.0)
            counts[cname][k_lo:k_hi] = c
    return keys.select(
        pl.int_range(pl.len(), dtype=pl.Int32).alias("history_row"),
        "client_id",
        "history_day",
        *(pl.Series(k, v, dtype=pl.Array(pl.Float32, dim)) for k, v in out.items()),
        *(pl.Series(k, v) for k, v in counts.items()),
    )


def assemble(
    rows: pl.DataFrame,
    events: pl.DataFrame,
    item_features: pl.DataFrame,
    window_start: dt.datetime,
    rules: DatasetRules,
    history_day: typing.Optional[dt.date] = None,
    items: typing.Optional[pl.DataFrame] = None,
    first_history_row: int = 0,
) -> Dataset:
    """``rows`` (client_id, item_id, session_id, event_ts, label; items with features) as a :class:`Dataset`:
    each row's history is its client's labelled ``events`` from ``window_start`` to the start of the row's
    day (or of ``history_day`` for every row: validation, where the day's own events are never history).
    ``items``: the item table to point into (default: the rows' items); ``first_history_row``: the number of
    the first history (when the dataset is built in parts)."""
    day = pl.col("event_ts").dt.date() if history_day is None else pl.lit(history_day, pl.Date)
    rows = rows.with_columns(history_day=day)
    histories = day_histories(rows.select("client_id", "history_day"), events, item_features, window_start)
    if first_history_row:
        histories = histories.with_columns(pl.col("history_row") + first_history_row)
    if items is None:
        items = item_table(item_features, rows["item_id"])
    weight = pl.when(pl.col("label")).then(rules.positive_weight).otherwise(rules.negative_weight)
    out = (
        rows.join(histories.select("client_id", "history_day", "history_row"), on=["client_id", "history_day"])
        .join(items.select("item_id", "item_row"), on="item_id")
        .with_columns(weight=weight.cast(pl.Float32))
        .select(ROW_COLUMNS)
        .sort("client_id", "event_ts", "item_id")
    )
    return Dataset(out, histories, items)


def item_table(item_features: pl.DataFrame, item_ids: pl.Series) -> pl.DataFrame:
    """``item_row, item_id, features`` of the given items that have features, numbered in item order."""
    return (
        item_features.join(item_ids.unique().to_frame("item_id"), on="item_id", how="semi")
        .sort("item_id")
        .with_row_index("item_row")
        .with_columns(pl.col("item_row").cast(pl.Int32))
        .select("item_row", "item_id", "features")
    )


def _row_key(seed: int) -> pl.Expr:
    """A row's draw in the 5:5 balance: a seeded hash of what identifies the event, so the same row draws the
    same number whatever part of the window it is processed with."""
    return pl.struct("client_id", "item_id", "session_id", "event_ts").hash(seed)


@dataclasses.dataclass
class SpilledDataset:
    """A dataset built in client buckets and spilled to parquet parts: ``rows`` and ``histories`` are lazy
    scans of those parts (a writer streams them; nothing holds the week in memory), ``items`` in memory."""

    rows: pl.LazyFrame
    histories: pl.LazyFrame
    items: pl.DataFrame
    stats: dict[str, typing.Any]
    verdicts: dict[str, tuple[bool, dict]]

    def collect(self) -> Dataset:
        return Dataset(self.rows.collect(), self.histories.collect(), self.items)


def build_dataset_spilled(
    window: pl.LazyFrame,
    item_features: pl.DataFrame,
    rules: DatasetRules,
    window_start: dt.datetime,
    spill_dir: str,
    buckets: int = 8,
    vector_dtype: str = "float32",
) -> SpilledDataset:
    """:func:`build_dataset` for a window too large for memory: the client and item counts and the balance
    draw are global (a streaming pass over the window's five columns); rows, histories and checks are made
    for one bucket of clients at a time (a client's rows and history never span buckets) and written to
    ``spill_dir``. Rows come sorted by (client, time, item) within each bucket."""
    import pathlib

    lab = window.select(*EVENT_COLUMNS).pipe(lambda lf: labelled(lf, rules))
    clients = _client_counts(lab).collect(engine="streaming")
    ok_clients = clients.filter(_client_ok(rules)).select("client_id")
    items = lab.group_by("item_id").agg(n=pl.len()).collect(engine="streaming")
    ok_items = items.filter(_item_ok(rules)).select("item_id")
    with_features = ok_items.join(item_features.select("item_id"), on="item_id", how="semi")
    kept = lab.join(ok_clients.lazy(), on="client_id", how="semi").join(with_features.lazy(), on="item_id", how="semi")
    counts = kept.group_by("label").len().collect(engine="streaming")
    by_label = dict(zip(counts["label"].to_list(), counts["len"].to_list()))
    n_pos, n_neg = int(by_label.get(True, 0)), int(by_label.get(False, 0))
    # the 5:5 balance: the larger class keeps its k rows with the smallest draws (k = the smaller class's size)
    larger = n_pos > n_neg
    keep_larger: typing.Optional[pl.Expr] = None
    if rules.balance and n_pos != n_neg:
        k = min(n_pos, n_neg)
        if k == 0:
            keep_larger = pl.lit(False)
        else:
            draws = kept.filter(pl.col("label") == larger).select(k=_row_key(rules.seed)).collect(engine="streaming")
            threshold = int(np.partition(draws["k"].to_numpy(), k - 1)[k - 1])
            keep_larger = _row_key(rules.seed) <= threshold
            del draws
    stats: dict[str, typing.Any] = {
        "window_rows": int(clients["n"].sum()),
        "clients": clients.height,
        "clients_kept": ok_clients.height,
        "clients_below_min_interactions": clients.filter(pl.col("n") < rules.min_client_interactions).height,
        "clients_above_max_interactions": clients.filter(pl.col("n") > rules.max_client_interactions).height,
        "clients_without_positive": clients.filter(pl.col("pos") < rules.min_client_positives).height,
        "clients_without_negative": clients.filter(pl.col("neg") < rules.min_client_negatives).height,
        "items": items.height,
        "items_kept": ok_items.height,
        "rows_kept": n_pos + n_neg,
        "rows_with_item_features": n_pos + n_neg,
        "dataset_buckets": buckets,
    }
    del clients, items
    table = item_table(item_features, with_features["item_id"])
    spill = pathlib.Path(spill_dir)
    spill.mkdir(parents=True, exist_ok=True)
    first, parts = 0, []
    totals = {"rows": 0, "positives": 0, "history_rows": 0}
    for b in range(buckets):
        mine = pl.col("client_id").hash(rules.seed + 101) % buckets == b
        raw = window.select(*EVENT_COLUMNS).filter(mine).collect(engine="streaming")
        events = labelled(raw, rules)
        rows = kept.filter(mine).select("client_id", "item_id", "session_id", "event_ts", "label")
        if keep_larger is not None:
            rows = rows.filter((pl.col("label") != larger) | keep_larger)
        rows = rows.collect(engine="streaming")
        part = assemble(rows, events, item_features, window_start, rules, items=table, first_history_row=first)
        part = stored_as(part, vector_dtype)
        parts.append(validate_dataset(part, raw, rules, items_checked=False))
        part.rows.write_parquet(spill / f"rows-{b:04d}.parquet", statistics=True)
        part.histories.write_parquet(spill / f"histories-{b:04d}.parquet", statistics=True)
        first += part.histories.height
        totals["rows"] += part.rows.height
        totals["positives"] += int(part.rows["label"].sum())
        totals["history_rows"] += part.histories.height
        del raw, events, rows, part
    stats.update(
        rows=totals["rows"],
        positives=totals["positives"],
        negatives=totals["rows"] - totals["positives"],
        history_rows=totals["history_rows"],
        feature_items=table.height,
    )
    share = totals["positives"] / totals["rows"] if totals["rows"] else 0.5
    verdicts = {
        "clients_within_bounds": (
            all(p["clients_within_bounds"][0] for p in parts),
            {"clients_out_of_bounds": sum(p["clients_within_bounds"][1]["clients_out_of_bounds"] for p in parts)},
        ),
        "items_with_min_interactions": (
            True,
            {"items_below_min": 0, "note": "rows only of items with min_item_interactions in the whole window"},
        ),
        "balanced_labels": ((not rules.balance) or abs(share - 0.5) <= 0.05, {"positive_share": share}),
        "features_finite": (
            all(p["features_finite"][0] for p in parts) and bool(np.isfinite(table["features"].to_numpy()).all()),
            {},
        ),
        "rows_resolve_to_their_history_and_item": (
            all(p["rows_resolve_to_their_history_and_item"][0] for p in parts),
            {
                "unresolved_rows": sum(
                    p["rows_resolve_to_their_history_and_item"][1]["unresolved_rows"] for p in parts
                ),
                "history_rows": totals["history_rows"],
                "items": table.height,
            },
        ),
    }
    return SpilledDataset(
        pl.scan_parquet(sorted(str(p) for p in spill.glob("rows-*.parquet"))),
        pl.scan_parquet(sorted(str(p) for p in spill.glob("histories-*.parquet"))),
        table,
        stats,
        verdicts,
    )


def build_dataset(
    window: pl.DataFrame, item_features: pl.DataFrame, rules: DatasetRules, window_start: dt.datetime
) -> tuple[Dataset, dict[str, typing.Any]]:
    """The training rows of a 7-day window of played events (``window_start`` = its first midnight):
    filters, label, balance; each row's user history = its client's labelled events of the window before
    the row's day (:func:`assemble`). In memory: :func:`build_dataset_spilled` in one bucket."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="two_tower_dataset-") as spill:
        spilled = build_dataset_spilled(window.lazy(), item_features, rules, window_start, spill, buckets=1)
        ds = spilled.collect()
    return ds, spilled.stats


# --- PCA, stored as arrays -------------------------------------------------------------------------


def fit_pca(embeddings: np.ndarray, n_components: int, chunk_rows: int = 65_536) -> ModelArtifact:
    """PCA of the rows of ``embeddings`` (see :func:`fit_pca_chunks`)."""
    return fit_pca_chunks((embeddings[s : s + chunk_rows] for s in range(0, len(embeddings), chunk_rows)), n_components)


def fit_pca_chunks(chunks: typing.Iterable[np.ndarray], n_components: int) -> ModelArtifact:
    """PCA from row chunks, streamed: the mean and covariance are accumulated in float64 (d x d, shifted by
    the first chunk's mean against cancellation) and the components are the covariance's leading
    eigenvectors -- the full-SVD PCA's, memory one chunk plus d x d instead of the data set twice in
    float64. Each component's sign makes its largest-magnitude entry positive (scikit-learn's convention)."""
    n, shift, total, gram = 0, None, None, None
    for chunk in chunks:
        x = np.asarray(chunk, dtype=np.float64)
        if len(x) == 0:
            continue
        if shift is None:
            shift = x.mean(axis=0)
            total, gram = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        x = x - shift
        n += len(x)
        total += x.sum(axis=0)
        gram += x.T @ x
    if shift is None or n < 2:
        raise ValueError(f"a PCA needs at least 2 rows, got {n}")
    d = len(shift)
    k = int(min(n_components, n, d))
    centred_mean = total / n
    cov = (gram - n * np.outer(centred_mean, centred_mean)) / (n - 1)
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(values)[::-1]
    values = np.clip(values[order], 0.0, None)
    components = vectors[:, order].T[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    variance = values[:k]
    arrays = {
        "components": components.astype(np.float32),
        "mean": (shift + centred_mean).astype(np.float32),
        "explained_variance": variance.astype(np.float32),
        "explained_variance_ratio": (variance / max(values.sum(), 1e-300)).astype(np.float32),
        "singular_values": np.sqrt(variance * (n - 1)).astype(np.float32),
    }
    config = {
        "n_components": k,
        "requested_components": n_components,
        "n_samples": int(n),
        "n_features": int(d),
        "whiten": False,
    }
    return ModelArtifact(arrays, config)


def pca_from_artifact(artifact: ModelArtifact) -> typing.Any:
    from sklearn.decomposition import PCA

    a, c = artifact.arrays, artifact.config
    pca = PCA(n_components=c["n_components"], whiten=False)
    pca.components_ = a["components"].astype(np.float64)
    pca.mean_ = a["mean"].astype(np.float64)
    pca.explained_variance_ = a["explained_variance"].astype(np.float64)
    pca.explained_variance_ratio_ = a["explained_variance_ratio"].astype(np.float64)
    pca.singular_values_ = a["singular_values"].astype(np.float64)
    pca.n_components_ = c["n_components"]
    pca.n_features_in_ = c["n_features"]
    pca.n_samples_ = c["n_samples"]
    pca.noise_variance_ = 0.0
    return pca


def project(embeddings: pl.DataFrame, pca: typing.Any, chunk_rows: int = 65_536) -> pl.DataFrame:
    """item_id, blip_embedding -> item_id, features (the PCA projection, float32), ``chunk_rows`` at a time."""
    z = np.zeros((embeddings.height, pca.n_components_), np.float32)
    for s in range(0, embeddings.height, chunk_rows):
        x = embeddings["blip_embedding"].slice(s, chunk_rows).to_numpy().astype(np.float64)
        z[s : s + len(x)] = pca.transform(x)
    return pl.DataFrame(
        {"item_id": embeddings["item_id"], "features": pl.Series(z, dtype=pl.Array(pl.Float32, z.shape[1]))}
    )


# --- the model -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """The two towers and their training."""

    hidden: tuple[int, ...] = (128, 64)
    """Hidden layer widths of each tower's MLP."""
    out_dim: int = 32
    """Width of the user and item vectors (their dot product is the score)."""
    dropout: float = 0.1
    loss: str = "bce"
    """``bce`` (the seed: pointwise on labels) or ``inbatch_softmax`` (positives only, logQ-corrected)."""
    temperature: float = 0.1
    """In-batch softmax: logits = cosine(user, item) / temperature - log q(item)."""
    lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 1024
    epochs: int = 8
    patience: int = 3
    holdout_share: float = 0.1
    """Clients (by hash) held out of training to draw the curve and stop early."""
    seed: int = 0
    device: str = "auto"


def _mlp(sizes: typing.Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    """User tower over [pos_hist, neg_hist, has_pos, has_neg] (point-in-time history, so none of them depends
    on the row's label) and item tower over the item features. ``user_vec``/``item_vec`` are the serving
    vectors -- L2-normalised when the model was trained with the in-batch softmax (cosine logits) -- and
    the score is their dot product plus a global bias, so an inner-product index ranks as ``forward``."""

    def __init__(self, feature_dim: int, params: ModelParams):
        super().__init__()
        self.user = _mlp([2 * feature_dim + 2, *params.hidden, params.out_dim], params.dropout)
        self.item = _mlp([feature_dim, *params.hidden, params.out_dim], params.dropout)
        self.bias = nn.Parameter(torch.zeros(()))
        self.normalize = params.loss == "inbatch_softmax"

    def _serving(self, v: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(v, dim=-1) if self.normalize else v

    def user_vec(self, pos: torch.Tensor, neg: torch.Tensor, n_pos: torch.Tensor, n_neg: torch.Tensor) -> torch.Tensor:
        flags = torch.stack([(n_pos > 0).float(), (n_neg > 0).float()], dim=-1)
        return self._serving(self.user(torch.cat([pos, neg, flags], dim=-1)))

    def item_vec(self, item: torch.Tensor) -> torch.Tensor:
        return self._serving(self.item(item))

    def forward(self, pos, neg, n_pos, n_neg, item) -> torch.Tensor:
        return (self.user_vec(pos, neg, n_pos, n_neg) * self.item_vec(item)).sum(-1) + self.bias


@dataclasses.dataclass
class Batch:
    """The model inputs of a batch of rows, gathered from :class:`Tensors`."""

    pos: torch.Tensor
    neg: torch.Tensor
    n_pos: torch.Tensor
    n_neg: torch.Tensor
    item: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor
    log_q: torch.Tensor
    """log of the row's item's share of the positives (the in-batch softmax's logQ correction)."""

    def __len__(self) -> int:
        return len(self.label)


@dataclasses.dataclass
class Tensors:
    """A :class:`Dataset` on a device, by id: the history and item tables once, and per row two indexes
    and the label, weight and log q. :meth:`take` gathers a batch's features there (on the GPU when the
    tensors are on it), so memory is (histories + items) x dim, not rows x 3 x dim."""

    pos_hist: torch.Tensor
    neg_hist: torch.Tensor
    n_pos: torch.Tensor
    n_neg: torch.Tensor
    items: torch.Tensor
    history_row: torch.Tensor
    item_row: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor
    log_q: torch.Tensor
    """Per item (indexed by item_row)."""

    def to(self, device: torch.device) -> "Tensors":
        return Tensors(*(getattr(self, f.name).to(device, non_blocking=True) for f in dataclasses.fields(self)))

    def take(self, idx: typing.Any) -> Batch:
        h, i = self.history_row[idx], self.item_row[idx]
        return Batch(  # vectors held as float16 (the dataset's vector_dtype) are gathered, then float32
            self.pos_hist[h].float(),
            self.neg_hist[h].float(),
            self.n_pos[h],
            self.n_neg[h],
            self.items[i].float(),
            self.label[idx],
            self.weight[idx],
            self.log_q[i],
        )

    def __len__(self) -> int:
        return len(self.label)


def _f32(series: pl.Series) -> torch.Tensor:
    return torch.from_numpy(np.array(series.to_numpy(), dtype=np.float32))  # a writable copy


def _vectors(series: pl.Series) -> torch.Tensor:
    """An Array column as a (n, dim) tensor in its stored precision (float16 stays float16: half the memory),
    on polars' own buffer where it can (the tensor is only ever indexed, never written)."""
    values = series.to_numpy()
    if values.dtype not in (np.float16, np.float32):
        values = values.astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(values)


def _column(frame: pl.DataFrame | pl.LazyFrame, name: str) -> pl.Series:
    """One column of an eager or lazy table (a lazy table reads only that column)."""
    return frame[name] if isinstance(frame, pl.DataFrame) else frame.select(name).collect()[name]


def _index(series: pl.Series) -> torch.Tensor:
    return torch.from_numpy(series.cast(pl.Int32).to_numpy().copy())


def tensors(ds: Dataset, log_q: typing.Optional[pl.DataFrame] = None) -> Tensors:
    """``log_q``: item_id, log_q (absent items: 0). The tables of ``ds`` may be lazy scans: each column is then
    read, converted and released one at a time (peak: the tensors plus one column), rows as int32 indexes."""
    h, items = ds.histories, ds.items
    if isinstance(h, pl.DataFrame) and not h["history_row"].is_sorted():
        h = h.sort("history_row")
    if isinstance(items, pl.DataFrame) and not items["item_row"].is_sorted():
        items = items.sort("item_row")
    if isinstance(h, pl.LazyFrame):  # stored in history_row order (0, 1, ..); anything else is sorted in memory
        order = _column(h, "history_row")
        if not order.equals(pl.int_range(len(order), dtype=order.dtype, eager=True), check_names=False):
            h = h.collect().sort("history_row")
    if isinstance(items, pl.LazyFrame):
        items = items.sort("item_row").collect()
    lq = torch.zeros(items.height, dtype=torch.float32)
    if log_q is not None:
        lq = _f32(
            items.select("item_id").join(log_q, on="item_id", how="left", maintain_order="left")["log_q"].fill_null(0.0)
        )
    rows = ds.rows
    label = _f32(_column(rows, "label").cast(pl.Float32))
    weight = _f32(_column(rows, "weight")) if "weight" in rows.collect_schema().names() else torch.ones(len(label))
    item_vectors = _vectors(items["features"])
    return Tensors(
        _vectors(_column(h, "pos_hist")),
        _vectors(_column(h, "neg_hist")),
        _f32(_column(h, "n_pos_hist")),
        _f32(_column(h, "n_neg_hist")),
        item_vectors.reshape(item_vectors.shape[0], -1),
        _index(_column(rows, "history_row")),
        _index(_column(rows, "item_row")),
        label,
        weight,
        lq,
    )


def _loss(model: TwoTower, b: Batch, params: ModelParams) -> torch.Tensor:
    if params.loss == "bce":
        logits = model(b.pos, b.neg, b.n_pos, b.n_neg, b.item)
        return (
            nn.functional.binary_cross_entropy_with_logits(logits, b.label, reduction="none") * b.weight
        ).sum() / b.weight.sum()
    if params.loss == "inbatch_softmax":
        p = b.label > 0.5
        if int(p.sum()) < 2:
            return model.bias * 0.0
        u = model.user_vec(b.pos[p], b.neg[p], b.n_pos[p], b.n_neg[p])  # unit vectors (model.normalize)
        v = model.item_vec(b.item[p])
        logits = u @ v.T / params.temperature
        logits = (
            logits - b.log_q[p][None, :]
        )  # logQ correction: popular items are over-represented as in-batch negatives
        return nn.functional.cross_entropy(logits, torch.arange(len(u), device=logits.device))
    raise ValueError(f"loss must be 'bce' or 'inbatch_softmax', not {params.loss!r}")


@dataclasses.dataclass
class TrainResult:
    model: TwoTower
    history: list[dict[str, float]]
    best_epoch: int
    train_rows: int
    holdout_rows: int
    seconds: float
    samples_per_s: float


@torch.no_grad()
def _holdout(model: TwoTower, data: Tensors, idx: torch.Tensor, params: ModelParams) -> tuple[float, float]:
    """Loss and AUC on the rows ``idx``, in chunks (the holdout of a large dataset does not fit one batch):
    BCE weighted over every row; the in-batch softmax averaged over batches of ``batch_size``."""
    from .ranking_metrics import auc

    if len(idx) == 0:
        return float("nan"), float("nan")
    chunk = params.batch_size if params.loss == "inbatch_softmax" else max(params.batch_size, 65536)
    loss_sum, weight_sum, scores, labels = 0.0, 0.0, [], []
    for s in range(0, len(idx), chunk):
        b = data.take(idx[s : s + chunk])
        if params.loss == "bce":
            logits = model(b.pos, b.neg, b.n_pos, b.n_neg, b.item)
            loss_sum += float(
                (nn.functional.binary_cross_entropy_with_logits(logits, b.label, reduction="none") * b.weight).sum()
            )
            weight_sum += float(b.weight.sum())
        else:
            logits = model(b.pos, b.neg, b.n_pos, b.n_neg, b.item)
            loss_sum += float(_loss(model, b, params))
            weight_sum += 1.0
        scores.append(logits.cpu().numpy())
        labels.append(b.label.cpu().numpy() > 0.5)
    return loss_sum / max(weight_sum, 1e-12), auc(np.concatenate(scores), np.concatenate(labels))


def train(ds: Dataset, params: ModelParams, log: typing.Callable[[str], None] = lambda m: None) -> TrainResult:
    """Train on ``ds`` (its tables may be lazy scans: see :func:`tensors`); clients hashed into the holdout
    share are held out."""
    t0 = time.perf_counter()
    rows = ds.rows.lazy()
    torch.manual_seed(params.seed)
    gen = torch.Generator().manual_seed(params.seed)
    is_held = (pl.col("client_id").hash(params.seed + 17) % 1000) < int(params.holdout_share * 1000)
    held = rows.select(is_held.alias("held")).collect()["held"].to_numpy()
    log_q = None
    if params.loss == "inbatch_softmax":
        pos_items = rows.filter(pl.col("label")).select("item_id").collect()["item_id"]
        total = max(pos_items.len(), 1)
        log_q = pos_items.value_counts().select("item_id", log_q=(pl.col("count") / total).log().cast(pl.Float32))
    device = resolve_device(params.device)
    # the whole training set moves to the device once; each step only indexes it there (no host work)
    data = tensors(ds, log_q).to(device)
    tr = torch.from_numpy(np.flatnonzero(~held).astype(np.int32)).to(device)
    ho = torch.from_numpy(np.flatnonzero(held).astype(np.int32)).to(device)
    del held
    dim = ds.feature_dim
    model = TwoTower(dim, params).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    history, best, best_state, best_epoch, stale = [], float("inf"), None, -1, 0
    train_time, seen = 0.0, 0
    for epoch in range(params.epochs):
        model.train()
        t = time.perf_counter()
        perm = tr[torch.randperm(len(tr), generator=gen, dtype=torch.int32).to(device)]
        total_loss, nb = torch.zeros((), device=device), 0
        for s in range(0, len(perm), params.batch_size):
            loss = _loss(model, data.take(perm[s : s + params.batch_size]), params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.detach()
            nb += 1
        epoch_loss = float(total_loss) / max(nb, 1)  # the one synchronisation of the epoch
        train_time += time.perf_counter() - t
        seen += len(perm)
        model.eval()
        ho_loss, ho_auc = _holdout(model, data, ho, params)
        log(
            f"epoch {epoch}: train loss {epoch_loss:.4f}, holdout loss {ho_loss:.4f}, holdout AUC {ho_auc:.4f}, "
            f"{len(perm) / max(time.perf_counter() - t, 1e-9):,.0f} samples/s"
        )
        history.append({"epoch": epoch, "train_loss": epoch_loss, "holdout_loss": ho_loss, "holdout_auc": ho_auc})
        score = ho_loss if len(ho) else epoch_loss
        if score < best - 1e-6:
            best, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= params.patience:
                log(f"early stop at epoch {epoch}; best holdout loss {best:.4f} at epoch {best_epoch}")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval().to("cpu")
    return TrainResult(
        model, history, best_epoch, int(len(tr)), int(len(ho)), time.perf_counter() - t0, seen / max(train_time, 1e-9)
    )


@torch.no_grad()
def score_rows(model: TwoTower, ds: Dataset, batch: int = 65536) -> np.ndarray:
    """``forward`` of every row of ``ds``, in its row order, ``batch`` rows at a time."""
    data = tensors(ds)
    out = []
    for s in range(0, len(data), batch):
        b = data.take(slice(s, s + batch))
        out.append(model(b.pos, b.neg, b.n_pos, b.n_neg, b.item).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@torch.no_grad()
def user_vectors(model: TwoTower, users: pl.DataFrame) -> np.ndarray:
    """users: pos_hist, neg_hist, n_pos_hist, n_neg_hist -> (n, out_dim)."""

    def arr(c):
        return torch.from_numpy(np.array(users[c].to_numpy(), dtype=np.float32))

    return model.user_vec(arr("pos_hist"), arr("neg_hist"), arr("n_pos_hist"), arr("n_neg_hist")).numpy()


@torch.no_grad()
def item_vectors(model: TwoTower, features: np.ndarray) -> np.ndarray:
    return model.item_vec(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()


def to_artifact(model: TwoTower, params: ModelParams, feature_dim: int, extra: dict) -> ModelArtifact:
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return ModelArtifact(arrays, {**dataclasses.asdict(params), "feature_dim": feature_dim, **extra})


def params_of(artifact: ModelArtifact) -> ModelParams:
    c = artifact.config
    return ModelParams(
        **{f.name: (tuple(c[f.name]) if f.name == "hidden" else c[f.name]) for f in dataclasses.fields(ModelParams)}
    )


def from_artifact(artifact: ModelArtifact) -> TwoTower:
    model = TwoTower(artifact.config["feature_dim"], params_of(artifact))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in artifact.arrays.items()}, strict=True)
    return model.eval()
