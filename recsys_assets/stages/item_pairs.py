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
"""

from __future__ import annotations

import dataclasses

import polars as pl

PAIR_TYPE = pl.Enum(["positive", "negative"])
PAIR_COLUMNS = ("item_id_1", "item_id_2", "pair_type", "num_clients", "download_url_1", "download_url_2")


@dataclasses.dataclass(frozen=True)
class PairRules:
    exclude_all_positive_sessions: bool = True
    min_num_clients: int = 1
    max_positive_items_per_client: int = 50
    max_negative_items_per_session: int = 50
    sample_seed: int = 0


@dataclasses.dataclass(frozen=True)
class PairsResult:
    pairs: pl.DataFrame
    stats: dict[str, int]


def _cap(lf: pl.LazyFrame, group: list[str], cap: int, seed: int) -> pl.LazyFrame:
    """Keep at most ``cap`` items per group: the ones with the smallest seeded hash."""
    rank = pl.col("item_id").hash(seed).rank("ordinal").over(group)
    return lf.filter(rank <= cap)


def _self_pairs(lf: pl.LazyFrame, on: list[str]) -> pl.LazyFrame:
    right = lf.select(*on, pl.col("item_id").alias("item_id_2"))
    return (
        lf.rename({"item_id": "item_id_1"})
        .join(right, on=on, how="inner")
        .filter(pl.col("item_id_1") < pl.col("item_id_2"))
        .select("client_id", "item_id_1", "item_id_2")
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
    pos = pos_lf.select("client_id", "item_id").unique()
    neg = lf.filter(~pl.col("is_positive")).select("client_id", "session_id", "item_id").unique()

    pos_sizes = pos.group_by("client_id").agg(n=pl.len())
    neg_sizes = neg.group_by("client_id", "session_id").agg(n=pl.len())
    pos = _cap(pos, ["client_id"], rules.max_positive_items_per_client, rules.sample_seed)
    neg = _cap(neg, ["client_id", "session_id"], rules.max_negative_items_per_session, rules.sample_seed)

    pos_pairs = _self_pairs(pos, ["client_id"]).with_columns(pair_type=pl.lit("positive", PAIR_TYPE))
    # a negative pair seen in several sessions of one client counts once for that client
    neg_pairs = (
        _self_pairs(neg, ["client_id", "session_id"]).unique().with_columns(pair_type=pl.lit("negative", PAIR_TYPE))
    )
    grouped = (
        pl.concat([pos_pairs, neg_pairs])
        .group_by("item_id_1", "item_id_2", "pair_type")
        .agg(num_clients=pl.len().cast(pl.Int64))
    )
    kept = grouped.filter(pl.col("num_clients") >= rules.min_num_clients)
    if item_meta is not None:
        urls = item_meta.lazy().select("item_id", "download_url")
        kept = kept.join(
            urls.rename({"item_id": "item_id_1", "download_url": "download_url_1"}), on="item_id_1", how="left"
        ).join(urls.rename({"item_id": "item_id_2", "download_url": "download_url_2"}), on="item_id_2", how="left")
    else:
        kept = kept.with_columns(download_url_1=pl.lit(None, pl.String), download_url_2=pl.lit(None, pl.String))
    kept = kept.select(PAIR_COLUMNS).sort("pair_type", "item_id_1", "item_id_2")

    excluded = (
        lf.filter(pl.col("is_positive") & pl.col("session_all_positive")).select("client_id", "session_id").unique()
        if rules.exclude_all_positive_sessions
        else pl.LazyFrame({"client_id": [], "session_id": []})
    )
    stats_lf = pl.concat(
        [
            pos_sizes.select(
                clients_with_positive_pairs=(pl.col("n") >= 2).sum().cast(pl.Int64),
                clients_capped=(pl.col("n") > rules.max_positive_items_per_client).sum().cast(pl.Int64),
            ),
            neg_sizes.select(
                sessions_with_negative_pairs=(pl.col("n") >= 2).sum().cast(pl.Int64),
                sessions_capped=(pl.col("n") > rules.max_negative_items_per_session).sum().cast(pl.Int64),
            ),
            excluded.select(sessions_excluded_all_positive=pl.len().cast(pl.Int64)),
            grouped.select(
                pairs_before_min_clients=pl.len().cast(pl.Int64),
                pairs_below_min_clients=(pl.col("num_clients") < rules.min_num_clients).sum().cast(pl.Int64),
            ),
        ],
        how="horizontal",
    )
    pairs, stats = pl.collect_all([kept, stats_lf])
    out = {k: int(v or 0) for k, v in stats.row(0, named=True).items()}
    by_type = pairs["pair_type"].value_counts()
    counts = dict(zip(by_type["pair_type"].cast(pl.String).to_list(), by_type["count"].to_list()))
    out["positive_pairs"] = int(counts.get("positive", 0))
    out["negative_pairs"] = int(counts.get("negative", 0))
    return PairsResult(pairs, out)


def validate(pairs: pl.DataFrame, min_num_clients: int) -> dict[str, tuple[bool, dict]]:
    self_pairs = pairs.filter(pl.col("item_id_1") == pl.col("item_id_2")).height
    non_canonical = pairs.filter(pl.col("item_id_1") > pl.col("item_id_2")).height
    dups = pairs.height - pairs.select("item_id_1", "item_id_2", "pair_type").n_unique() if pairs.height else 0
    null_keys = pairs.select(pl.any_horizontal(pl.col(c).is_null() for c in ("item_id_1", "item_id_2", "pair_type")).sum()).item()
    below = pairs.filter(pl.col("num_clients") < min_num_clients).height
    return {
        "pairs_canonical": (non_canonical == 0 and self_pairs == 0, {"non_canonical": non_canonical, "self_pairs": self_pairs}),
        "pairs_unique": (dups == 0 and null_keys == 0, {"duplicate_pairs": dups, "null_keys": int(null_keys)}),
        "num_clients_at_least_min": (below == 0, {"below_min": below, "min_num_clients": min_num_clients}),
    }
