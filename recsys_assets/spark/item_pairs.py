"""Spark version of :mod:`recsys_assets.stages.item_pairs` (seed 000, phase 3): the same rules
(:class:`~recsys_assets.stages.item_pairs.PairRules`, the seeded cap hash), output rows and columns, stats and
check verdicts. Pairs are made by self-joins on the cluster and counted with a ``groupBy``; ``pair_type`` is a
string and the URL columns are plain strings (polars writes them dictionary-encoded: the values are the same).
The rows are the polars stage's; their order is (negative last, item_id_1, item_id_2) within each part file.
"""

from __future__ import annotations

import dataclasses
import typing

from ..stages.item_pairs import CAP_HASH_MODULUS, PAIR_COLUMNS, PairRules, cap_hash_multiplier, verdicts


def _cap_hash(seed: int):
    from pyspark.sql import functions as F

    p, m = CAP_HASH_MODULUS, cap_hash_multiplier(seed)
    return F.pmod(F.pmod(F.col("item_id"), F.lit(p)) * F.lit(m), F.lit(p))


def _ranked(df, group: list[str], seed: int):
    """Each row's rank in its group (the smallest seeded hash first, ties by item_id, as the polars stage) and
    its group's size ``__n``: one window over one shuffle gives both the caps and the size statistics."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(*group).orderBy(_cap_hash(seed), F.col("item_id"))
    n = Window.partitionBy(*group)
    return df.withColumn("__n", F.count(F.lit(1)).over(n)).withColumn("__rank", F.row_number().over(w))


@dataclasses.dataclass
class SparkPairsResult:
    pairs: typing.Any
    """Spark DataFrame in ``PAIR_COLUMNS``; each part holds the pairs of a range of key hashes, sorted by
    (negative last, item_id_1, item_id_2) -- the polars stage's order within a part, not across parts (readers
    sort what they depend on)."""
    stats: dict[str, int]
    keys: typing.Any = None
    """The pairs without their URLs (item_id_1, item_id_2, pair_type, num_clients), over the cached count: what
    the checks and the top pairs read. The URL joins are many-to-one (item_meta's blocking ``item_id_unique``
    check guarantees one row per item), so the written rows are exactly these."""
    persisted: list = dataclasses.field(default_factory=list)
    """Intermediate DataFrames this build persisted; ``release()`` them once the pairs are written."""

    def release(self) -> None:
        for df in self.persisted:
            df.unpersist()
        self.persisted.clear()


def _group_counts(ranked, cap: int, with_pairs: str, capped: str):
    """Over one row per group of :func:`_ranked` (its first-ranked item): groups with at least two items
    (``with_pairs``) and groups above ``cap`` (``capped``)."""
    from pyspark.sql import functions as F

    return (
        ranked.filter(F.col("__rank") == 1)
        .agg(
            F.sum((F.col("__n") >= 2).cast("long")).alias(with_pairs),
            F.sum((F.col("__n") > cap).cast("long")).alias(capped),
        )
        .collect()[0]
    )


def build_pairs(interactions, item_meta=None, rules: PairRules = PairRules()) -> SparkPairsResult:
    """Pairs by distinct clients, as the polars stage. Work done once: the day's pair inputs (four columns)
    are cached and read by every statistic; each side's distinct items are ranked in one window that also
    sizes the groups; pairs are counted on a boolean pair type and the URLs, a broadcast of item_meta's
    (item, url) map, are joined after the count. No global sort: the count's hash partitions are each sorted."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    cols = ["client_id", "session_id", "item_id", "is_positive"]
    if rules.exclude_all_positive_sessions:
        cols.append("session_all_positive")
    day = interactions.select(*cols).persist(StorageLevel.MEMORY_AND_DISK)
    pos = day.filter(F.col("is_positive"))
    excluded = 0
    if rules.exclude_all_positive_sessions:
        excluded = pos.filter(F.col("session_all_positive")).select("client_id", "session_id").distinct().count()
        pos = pos.filter(~F.col("session_all_positive"))
    # partitioned by the group first: the distinct and the ranking window then share that one shuffle
    pos = pos.select("client_id", "item_id").repartition("client_id").distinct()
    pos = _ranked(pos, ["client_id"], rules.sample_seed).persist()
    neg = _ranked(
        day.filter(~F.col("is_positive"))
        .select("client_id", "session_id", "item_id")
        .repartition("client_id", "session_id")
        .distinct(),
        ["client_id", "session_id"],
        rules.sample_seed,
    ).persist()
    persisted = [day, pos, neg]
    # group sizes: one row per group (its first-ranked item)
    size = _group_counts(pos, rules.max_positive_items_per_client, "clients_with_positive_pairs", "clients_capped")
    nsize = _group_counts(neg, rules.max_negative_items_per_session, "sessions_with_negative_pairs", "sessions_capped")
    day.unpersist()
    persisted.remove(day)

    def self_pairs(df, on: list[str], cap: int):
        df = df.filter((F.col("__n") >= 2) & (F.col("__rank") <= cap))
        a = df.select(*on, F.col("item_id").alias("item_id_1"))
        b = df.select(*on, F.col("item_id").alias("item_id_2"))
        return a.join(b, on).filter(F.col("item_id_1") < F.col("item_id_2"))

    # Both sides are hash-partitioned by the pair once; the negative side's per-client distinct, the count and
    # the checks' distinct keys all group by supersets of (item_id_1, item_id_2), so none of them shuffles again.
    by_pair = ("item_id_1", "item_id_2")
    pos_pairs = (
        self_pairs(pos, ["client_id"], rules.max_positive_items_per_client)
        .select("client_id", "item_id_1", "item_id_2", F.lit(False).alias("__neg"))
        .repartition(*by_pair)
    )
    # a negative pair seen in several sessions of one client counts once for that client
    neg_pairs = (
        self_pairs(neg, ["client_id", "session_id"], rules.max_negative_items_per_session)
        .select("client_id", "item_id_1", "item_id_2", F.lit(True).alias("__neg"))
        .repartition(*by_pair)
        .distinct()
    )
    counted = (
        pos_pairs.unionByName(neg_pairs)
        .groupBy("__neg", "item_id_1", "item_id_2")
        .agg(F.count(F.lit(1)).alias("num_clients"))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    persisted.append(counted)
    c = counted.agg(
        F.count(F.lit(1)).alias("before"),
        F.sum((F.col("num_clients") < rules.min_num_clients).cast("long")).alias("below"),
        F.sum(((F.col("num_clients") >= rules.min_num_clients) & ~F.col("__neg")).cast("long")).alias("positive_pairs"),
    ).collect()[0]
    pos.unpersist(), neg.unpersist()
    persisted.remove(pos), persisted.remove(neg)

    # sorted before the URLs are joined (a broadcast join keeps its stream's order): the sort moves 4 narrow
    # columns, not two strings per pair
    kept = counted.filter(F.col("num_clients") >= rules.min_num_clients)
    pair_type = F.when(F.col("__neg"), F.lit("negative")).otherwise(F.lit("positive")).alias("pair_type")
    keys = kept.select("item_id_1", "item_id_2", pair_type, "num_clients")
    kept = kept.sortWithinPartitions("__neg", "item_id_1", "item_id_2")
    if item_meta is not None:
        urls = F.broadcast(item_meta.select("item_id", "download_url"))
        kept = kept.join(
            urls.withColumnsRenamed({"item_id": "item_id_1", "download_url": "download_url_1"}), "item_id_1", "left"
        ).join(urls.withColumnsRenamed({"item_id": "item_id_2", "download_url": "download_url_2"}), "item_id_2", "left")
    else:
        kept = kept.withColumn("download_url_1", F.lit(None).cast("string")).withColumn(
            "download_url_2", F.lit(None).cast("string")
        )
    pairs = kept.select(*[pair_type if c == "pair_type" else c for c in PAIR_COLUMNS])

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
    return SparkPairsResult(pairs, stats, keys, persisted)


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
