"""Spark version of :mod:`recsys_assets.stages.item_pairs` (seed 000, phase 3): the same rules
(:class:`~recsys_assets.stages.item_pairs.PairRules`, the seeded cap hash), output columns and order, stats and
check verdicts. Pairs are made by self-joins on the cluster and counted with a ``groupBy``; ``pair_type`` is a
string and the URL columns are plain strings (polars writes them dictionary-encoded: the values are the same).
"""

from __future__ import annotations

import dataclasses
import typing

from ..stages.item_pairs import CAP_HASH_MODULUS, PAIR_COLUMNS, PairRules, cap_hash_multiplier, verdicts


def _cap_hash(seed: int):
    from pyspark.sql import functions as F

    p, m = CAP_HASH_MODULUS, cap_hash_multiplier(seed)
    return F.pmod(F.pmod(F.col("item_id"), F.lit(p)) * F.lit(m), F.lit(p))


def _cap(df, group: list[str], cap: int, seed: int):
    """At most ``cap`` items per group: the smallest seeded hash, ties by item_id (as the polars stage)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(*group).orderBy(_cap_hash(seed), F.col("item_id"))
    n = Window.partitionBy(*group)
    return (
        df.withColumn("__n", F.count(F.lit(1)).over(n))
        .withColumn("__rank", F.row_number().over(w))
        .filter((F.col("__n") <= cap) | (F.col("__rank") <= cap))
        .drop("__n", "__rank")
    )


@dataclasses.dataclass
class SparkPairsResult:
    pairs: typing.Any
    stats: dict[str, int]


def build_pairs(interactions, item_meta=None, rules: PairRules = PairRules()) -> SparkPairsResult:
    from pyspark.sql import functions as F

    pos = interactions.filter(F.col("is_positive"))
    if rules.exclude_all_positive_sessions:
        pos = pos.filter(~F.col("session_all_positive"))
    pos = pos.select("client_id", "item_id").distinct()
    neg = interactions.filter(~F.col("is_positive")).select("client_id", "session_id", "item_id").distinct()
    pos_sizes = pos.groupBy("client_id").agg(F.count(F.lit(1)).alias("n"))
    neg_sizes = neg.groupBy("client_id", "session_id").agg(F.count(F.lit(1)).alias("n"))
    pos_c = _cap(pos, ["client_id"], rules.max_positive_items_per_client, rules.sample_seed)
    neg_c = _cap(neg, ["client_id", "session_id"], rules.max_negative_items_per_session, rules.sample_seed)

    def self_pairs(df, on: list[str]):
        a = df.select(*on, F.col("item_id").alias("item_id_1"))
        b = df.select(*on, F.col("item_id").alias("item_id_2"))
        return a.join(b, on).filter(F.col("item_id_1") < F.col("item_id_2"))

    pos_pairs = self_pairs(pos_c, ["client_id"]).select("client_id", "item_id_1", "item_id_2")
    # a negative pair seen in several sessions of one client counts once for that client
    neg_pairs = self_pairs(neg_c, ["client_id", "session_id"]).select("client_id", "item_id_1", "item_id_2").distinct()
    counted = (
        pos_pairs.withColumn("pair_type", F.lit("positive"))
        .unionByName(neg_pairs.withColumn("pair_type", F.lit("negative")))
        .groupBy("pair_type", "item_id_1", "item_id_2")
        .agg(F.count(F.lit(1)).alias("num_clients"))
    ).persist()
    kept = counted.filter(F.col("num_clients") >= rules.min_num_clients)
    if item_meta is not None:
        urls = item_meta.select("item_id", "download_url")
        kept = kept.join(
            urls.withColumnsRenamed({"item_id": "item_id_1", "download_url": "download_url_1"}), "item_id_1", "left"
        ).join(urls.withColumnsRenamed({"item_id": "item_id_2", "download_url": "download_url_2"}), "item_id_2", "left")
    else:
        kept = kept.withColumn("download_url_1", F.lit(None).cast("string")).withColumn(
            "download_url_2", F.lit(None).cast("string")
        )
    pairs = kept.select(*PAIR_COLUMNS).orderBy(
        (F.col("pair_type") == "negative").alias("__neg"), "item_id_1", "item_id_2"
    )

    size = pos_sizes.agg(
        F.sum((F.col("n") >= 2).cast("long")).alias("clients_with_positive_pairs"),
        F.sum((F.col("n") > rules.max_positive_items_per_client).cast("long")).alias("clients_capped"),
    ).collect()[0]
    nsize = neg_sizes.agg(
        F.sum((F.col("n") >= 2).cast("long")).alias("sessions_with_negative_pairs"),
        F.sum((F.col("n") > rules.max_negative_items_per_session).cast("long")).alias("sessions_capped"),
    ).collect()[0]
    excluded = (
        interactions.filter(F.col("is_positive") & F.col("session_all_positive"))
        .select("client_id", "session_id")
        .distinct()
        .count()
        if rules.exclude_all_positive_sessions
        else 0
    )
    c = counted.agg(
        F.count(F.lit(1)).alias("before"),
        F.sum((F.col("num_clients") < rules.min_num_clients).cast("long")).alias("below"),
        F.sum(
            ((F.col("num_clients") >= rules.min_num_clients) & (F.col("pair_type") == "positive")).cast("long")
        ).alias("positive_pairs"),
    ).collect()[0]
    before, below = int(c["before"] or 0), int(c["below"] or 0)
    stats = {
        **{k: int(v or 0) for k, v in size.asDict().items()},
        **{k: int(v or 0) for k, v in nsize.asDict().items()},
        "sessions_excluded_all_positive": int(excluded),
        "pairs_before_min_clients": before,
        "pairs_below_min_clients": below,
        "positive_pairs": int(c["positive_pairs"] or 0),
    }
    stats["negative_pairs"] = before - below - stats["positive_pairs"]
    return SparkPairsResult(pairs, stats)


def validate(pairs, min_num_clients: int) -> dict[str, tuple[bool, dict]]:
    from pyspark.sql import functions as F

    keys = ("item_id_1", "item_id_2", "pair_type")
    row = pairs.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum((F.col("item_id_1") == F.col("item_id_2")).cast("long")).alias("self_pairs"),
        F.sum((F.col("item_id_1") > F.col("item_id_2")).cast("long")).alias("non_canonical"),
        F.sum(
            (F.col("item_id_1").isNull() | F.col("item_id_2").isNull() | F.col("pair_type").isNull()).cast("long")
        ).alias("null_keys"),
        F.sum((F.col("num_clients") < min_num_clients).cast("long")).alias("below"),
    ).collect()[0]
    distinct = pairs.select(*keys).distinct().count()
    return verdicts(
        int(row["non_canonical"] or 0),
        int(row["self_pairs"] or 0),
        int(row["rows"]) - int(distinct),
        int(row["null_keys"] or 0),
        int(row["below"] or 0),
        min_num_clients,
    )
