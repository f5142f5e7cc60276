"""Phase 3 of seed 000: item pairs co-consumed by the same client, counted by distinct clients.

* Positive pairs: the client's positive items self-joined on ``client_id``.
* Negative pairs: the client's negative items self-joined on ``(client_id, session_id)``.
* Pairs are canonical (``item_id_1 < item_id_2``, so no self pairs and each unordered pair once)
  and counted once per client however many sessions repeat them; grouped on
  ``(item_id_1, item_id_2, pair_type)`` into ``num_clients``.
* Seed 000's refinement ("after inputs"), as options: leave out sessions in which the client
  watched/liked every served video (``session_all_positive`` from phase 1), and keep pairs seen
  by at least ``min_num_clients`` clients.
* A client with P positives makes P(P-1)/2 pairs, so P is capped: clients over the cap keep a
  deterministic pseudo-random subset of their items (a seeded hash), and are counted.
* Both items' ``download_url`` come from ``item_meta``. Tens of millions of pairs share a day's few
  hundred thousand URLs, so the two URL columns are ``pl.Categorical`` (dictionary-encoded in memory
  and in parquet); ``.cast(pl.String)`` gives plain strings.
* Rows are sorted by ``(pair_type, item_id_1, item_id_2)``.
"""

from __future__ import annotations

import dataclasses
import typing

import polars as pl

from .frames import drop_rows, repeated_rows

PAIR_TYPE = pl.Enum(["positive", "negative"])
PAIR_COLUMNS = ("item_id_1", "item_id_2", "pair_type", "num_clients", "download_url_1", "download_url_2")


@dataclasses.dataclass(frozen=True)
class PairRules:
    """Seed 000, phase 3, with the "after inputs" refinements as options."""

    exclude_all_positive_sessions: bool = True
    """Leave out sessions where every served video was watched/liked (seed 000, data formation)."""
    min_num_clients: int = 1
    """Keep pairs co-consumed by at least this many distinct clients."""
    max_positive_items_per_client: int = 50
    """Cap on positives per client before the self-join (P items make P(P-1)/2 pairs)."""
    max_negative_items_per_session: int = 50
    """Cap on negatives per session before the self-join."""
    sample_seed: int = 0
    """Seed of the sampling under the two caps."""


@dataclasses.dataclass(frozen=True)
class PairsResult:
    pairs: pl.DataFrame
    stats: dict[str, int]


CAP_HASH_MODULUS = 2**31 - 1
"""The caps keep the items with the smallest ``(item_id mod p) * m mod p`` (p prime, ``m`` from the seed),
ties by item_id: integer arithmetic that stays below 2**62, so every engine (polars, Spark) draws the same
items."""


def cap_hash_multiplier(seed: int) -> int:
    return pow(48_271, int(seed) % (CAP_HASH_MODULUS - 1) + 1, CAP_HASH_MODULUS)


def cap_hash(seed: int) -> pl.Expr:
    p, m = CAP_HASH_MODULUS, cap_hash_multiplier(seed)
    return ((pl.col("item_id") % p + p) % p * m) % p


def _cap(df: pl.DataFrame, sizes: pl.DataFrame, group: list[str], cap: int, seed: int) -> pl.DataFrame:
    """Keep at most ``cap`` items per group: the ones with the smallest seeded hash (:func:`cap_hash`). Only
    the groups over the cap (``sizes.n > cap``; usually a handful) pay for the ranking."""
    over = sizes.filter(pl.col("n") > cap).select(group)
    if over.height == 0:
        return df
    big = (
        df.join(over, on=group, how="semi")
        .with_columns(__h=cap_hash(seed))
        .sort([*group, "__h", "item_id"])
        .filter(pl.int_range(pl.len()).over(group) < cap)
        .drop("__h")
    )
    return pl.concat([df.join(over, on=group, how="anti"), big])


# Pairs are counted by sorting one packed UInt64 key per (pair_type, item_1, item_2) row: on 2 cores a
# sort plus run-length count of ~50 M keys takes ~1.3 s where a three-column group_by takes ~20 s.
# Items are first given dense, order-preserving indices (< 2**31 distinct items per day), so the key is
# ``type << 62 | idx_1 << 31 | idx_2`` and sorting it sorts by (pair_type, item_id_1, item_id_2).
_IDX_BITS = 31


def _dense_index(items: pl.Series) -> pl.DataFrame:
    """``item_id, idx``: each of the sorted, distinct ``items`` numbered 0.. in order (UInt32)."""
    if items.len() >= 2**_IDX_BITS:
        raise ValueError(f"{items.len():,} distinct items in one day: more than item_pairs can index")
    return pl.DataFrame({"item_id": items, "idx": pl.int_range(items.len(), dtype=pl.UInt32, eager=True)})


def _self_pairs(lf: pl.LazyFrame, on: list[str], first: typing.Optional[pl.LazyFrame] = None) -> pl.LazyFrame:
    """``(client_id, key)`` for every unordered pair of distinct items within a group (``idx`` columns);
    ``first``: only the pairs whose first (smaller) item is one of its rows (a part of ``lf``)."""
    right = lf.select(*on, pl.col("idx").alias("idx_2"))
    return (
        (lf if first is None else first)
        .join(right, on=on, how="inner")
        .filter(pl.col("idx") < pl.col("idx_2"))
        .select("client_id", key=pl.col("idx").cast(pl.UInt64) * 2**_IDX_BITS + pl.col("idx_2").cast(pl.UInt64))
    )


def _count_keys(keys: pl.LazyFrame) -> pl.LazyFrame:
    """``value`` (a pair key, ascending) and ``len`` (its rows: the clients who made it)."""
    return keys.sort("key").select(pl.col("key").rle()).unnest("key")


def _decode(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """The dense indexes (``idx_1``, ``idx_2``) of pair keys (the pair type bit ignored)."""
    mask = 2**_IDX_BITS - 1
    return (
        ((values // 2**_IDX_BITS) & mask).cast(pl.UInt32).alias("idx_1"),
        (values & mask).cast(pl.UInt32).alias("idx_2"),
    )


def build_pairs(
    interactions: pl.DataFrame | pl.LazyFrame,
    item_meta: pl.DataFrame | pl.LazyFrame | None = None,
    rules: PairRules = PairRules(),
) -> PairsResult:
    lf = interactions.lazy()
    pos_lf = lf.filter(pl.col("is_positive"))
    if rules.exclude_all_positive_sessions:
        pos_lf = pos_lf.filter(~pl.col("session_all_positive"))
    pos_lf = pos_lf.select("client_id", "item_id").unique()
    neg_lf = lf.filter(~pl.col("is_positive")).select("client_id", "session_id", "item_id").unique()
    pos, neg = pl.collect_all([pos_lf, neg_lf])

    items = pl.concat([pos["item_id"], neg["item_id"]]).unique().sort()
    index = _dense_index(items).lazy()

    pos_sizes, neg_sizes = pl.collect_all(
        [
            pos.lazy().group_by("client_id").agg(n=pl.len()),
            neg.lazy().group_by("client_id", "session_id").agg(n=pl.len()),
        ]
    )
    pos_c = _cap(pos, pos_sizes, ["client_id"], rules.max_positive_items_per_client, rules.sample_seed)
    neg_c = _cap(neg, neg_sizes, ["client_id", "session_id"], rules.max_negative_items_per_session, rules.sample_seed)
    pos_keys = _self_pairs(pos_c.lazy().join(index, on="item_id"), ["client_id"]).select("key")
    neg_keys = _self_pairs(neg_c.lazy().join(index, on="item_id"), ["client_id", "session_id"])
    pos_keys, neg_keys = pl.collect_all([pos_keys, neg_keys])
    # a negative pair seen in several sessions of one client counts once for that client
    neg_keys = drop_rows(neg_keys, repeated_rows(neg_keys, ["client_id", "key"])).select(
        key=pl.col("key") + pl.lit(2 ** (2 * _IDX_BITS), pl.UInt64)
    )
    counted = _count_keys(pl.concat([pos_keys, neg_keys]).lazy())

    excluded = (
        lf.filter(pl.col("is_positive") & pl.col("session_all_positive")).select("client_id", "session_id").unique()
        if rules.exclude_all_positive_sessions
        else pl.LazyFrame({"client_id": [], "session_id": []})
    )
    stats_lf = pl.concat(
        [
            pos_sizes.lazy().select(
                clients_with_positive_pairs=(pl.col("n") >= 2).sum().cast(pl.Int64),
                clients_capped=(pl.col("n") > rules.max_positive_items_per_client).sum().cast(pl.Int64),
            ),
            neg_sizes.lazy().select(
                sessions_with_negative_pairs=(pl.col("n") >= 2).sum().cast(pl.Int64),
                sessions_capped=(pl.col("n") > rules.max_negative_items_per_session).sum().cast(pl.Int64),
            ),
            excluded.select(sessions_excluded_all_positive=pl.len().cast(pl.Int64)),
        ],
        how="horizontal",
    )
    counted, stats = pl.collect_all([counted, stats_lf])
    out = {k: int(v or 0) for k, v in stats.row(0, named=True).items()}
    out["pairs_before_min_clients"] = counted.height
    kept = counted.filter(pl.col("len") >= rules.min_num_clients)
    out["pairs_below_min_clients"] = counted.height - kept.height

    # decode: the keys are sorted, so positives come first
    idx_1, idx_2 = _decode(kept["value"])
    n_pos = int(kept["value"].search_sorted(2 ** (2 * _IDX_BITS)))
    pairs = pl.DataFrame(
        {
            "item_id_1": items.gather(idx_1),
            "item_id_2": items.gather(idx_2),
            "pair_type": pl.concat(
                [
                    pl.repeat("positive", n_pos, dtype=PAIR_TYPE, eager=True),
                    pl.repeat("negative", kept.height - n_pos, dtype=PAIR_TYPE, eager=True),
                ]
            ),
            "num_clients": kept["len"].cast(pl.Int64),
        }
    )
    if item_meta is not None:
        # the URLs aligned with the dense index, then gathered: no join over the (large) pair table
        urls = (
            index.join(
                item_meta.lazy().select("item_id", "download_url"), on="item_id", how="left", maintain_order="left"
            )
            .collect()["download_url"]
            .cast(pl.Categorical)
        )
    else:
        urls = pl.Series([None] * items.len(), dtype=pl.Categorical)
    pairs = pairs.with_columns(download_url_1=urls.gather(idx_1), download_url_2=urls.gather(idx_2)).select(
        PAIR_COLUMNS
    )
    out["positive_pairs"] = int((pairs["pair_type"] == "positive").sum())
    out["negative_pairs"] = pairs.height - out["positive_pairs"]
    return PairsResult(pairs, out)


TOP_PAIRS = 10
"""How many of the most co-consumed pairs the asset shows."""
TOP_COLUMNS = ("item_id_1", "item_id_2", "pair_type", "num_clients")
TOP_SCHEMA = {"item_id_1": pl.Int64, "item_id_2": pl.Int64, "pair_type": pl.String, "num_clients": pl.Int64}


def top_pairs(pairs: pl.DataFrame, n: int = TOP_PAIRS) -> pl.DataFrame:
    """The ``n`` pairs with the most clients, ties in table order (positive before negative, then by
    item_id_1, item_id_2): one answer whatever the row order, the same from every engine (``TOP_SCHEMA``),
    whether ``pair_type`` is this stage's enum or a plain string (a table Spark wrote)."""
    negative_last = pl.col("pair_type") == "negative"
    top = pairs.select(TOP_COLUMNS).top_k(
        n, by=["num_clients", negative_last, "item_id_1", "item_id_2"], reverse=[False, True, True, True]
    )
    return top.cast(TOP_SCHEMA)  # type: ignore[arg-type]


def _duplicate_keys(pairs: pl.DataFrame) -> int:
    """Rows repeating an earlier (pair_type, item_id_1, item_id_2). O(n) when the rows are strictly
    increasing in that order, as :func:`build_pairs` writes them; a hash count otherwise."""
    if pairs.height < 2:
        return 0
    t, a, b = pl.col("pair_type").to_physical(), pl.col("item_id_1"), pl.col("item_id_2")
    later = (t > t.shift(1)) | ((t == t.shift(1)) & ((a > a.shift(1)) | ((a == a.shift(1)) & (b > b.shift(1)))))
    if pairs.select(later.slice(1).all()).item():
        return 0
    return pairs.height - pairs.select("pair_type", "item_id_1", "item_id_2").n_unique()


def validate(pairs: pl.DataFrame, min_num_clients: int) -> dict[str, tuple[bool, dict]]:
    self_pairs = pairs.filter(pl.col("item_id_1") == pl.col("item_id_2")).height
    non_canonical = pairs.filter(pl.col("item_id_1") > pl.col("item_id_2")).height
    dups = _duplicate_keys(pairs)
    null_keys = pairs.select(
        pl.any_horizontal(pl.col(c).is_null() for c in ("item_id_1", "item_id_2", "pair_type")).sum()
    ).item()
    below = pairs.filter(pl.col("num_clients") < min_num_clients).height
    return verdicts(non_canonical, self_pairs, dups, int(null_keys), below, min_num_clients)


def verdicts(
    non_canonical: int, self_pairs: int, dups: int, null_keys: int, below: int, min_num_clients: int
) -> dict[str, tuple[bool, dict]]:
    """item_pairs' check verdicts from their counts (any engine computes the counts)."""
    return {
        "pairs_canonical": (
            non_canonical == 0 and self_pairs == 0,
            {"non_canonical": non_canonical, "self_pairs": self_pairs},
        ),
        "pairs_unique": (dups == 0 and null_keys == 0, {"duplicate_pairs": dups, "null_keys": int(null_keys)}),
        "num_clients_at_least_min": (below == 0, {"below_min": below, "min_num_clients": min_num_clients}),
    }
