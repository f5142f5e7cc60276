"""Spark version of :mod:`recsys_assets.stages.item_pairs` (seed 000, phase 3): the same rules
(:class:`~recsys_assets.stages.item_pairs.PairRules`, the seeded cap hash), output rows and columns, stats and
check verdicts. Pairs are made by self-joins on the cluster and counted with a ``groupBy``; ``pair_type`` is a
string and the URL columns are plain strings (polars writes them dictionary-encoded: the values are the same).
The rows are the polars stage's; their order is (negative last, item_id_1, item_id_2) within each part file.

One job builds, counts and writes the pairs; the pair statistics and the check counts are counted as it runs
(:mod:`recsys_assets.spark.metrics`). Small jobs of their own: the sessions left out as all-positive, and the
group sizes, counted on the persisted ranked groups (which fills the cache that job reads).
"""

from __future__ import annotations

import dataclasses
import typing

from ..stages.item_pairs import CAP_HASH_MODULUS, PAIR_COLUMNS, PairRules, cap_hash_multiplier, verdicts
from .metrics import Observed, as_int, count_where, run_observed


def _cap_hash(seed: int):
    from pyspark.sql import functions as F

    p, m = CAP_HASH_MODULUS, cap_hash_multiplier(seed)
    return F.pmod(F.pmod(F.col("item_id"), F.lit(p)) * F.lit(m), F.lit(p))


def _ranked(df, group: list[str], seed: int):
    """``group`` and ``item_id`` with each row's rank in its group (the smallest seeded hash first, ties by
    item_id, as the polars stage) and its group's size ``__n``: one window spec, so one sort."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(*group).orderBy("__hash", "item_id")
    whole = w.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    return df.withColumn("__hash", _cap_hash(seed)).select(
        *group, "item_id", F.row_number().over(w).alias("__rank"), F.count(F.lit(1)).over(whole).alias("__n")
    )


@dataclasses.dataclass
class SparkPairsResult:
    pairs: typing.Any
    """Spark DataFrame in ``PAIR_COLUMNS``; each part holds the pairs of a range of key hashes, sorted by
    (negative last, item_id_1, item_id_2) -- the polars stage's order within a part, not across parts (readers
    sort what they depend on)."""
    observed: Observed
    """Counted as ``pairs`` is written: ``stats`` and ``verdicts`` exist once it ran."""
    group_stats: dict[str, int]
    """Clients / sessions with pairs and above the caps, counted on the persisted ranked groups."""
    sessions_excluded: int
    min_num_clients: int
    persisted: list = dataclasses.field(default_factory=list)
    """The ranked item groups (each read by both sides of its self-join); ``release()`` them once written."""

    def release(self) -> None:
        for df in self.persisted:
            df.unpersist()
        self.persisted.clear()

    @property
    def stats(self) -> dict[str, int]:
        counted = self.observed.get("counted")
        before, below, positive = (as_int(counted[k]) for k in ("before", "below", "positive_pairs"))
        return {
            **self.group_stats,
            "sessions_excluded_all_positive": self.sessions_excluded,
            "pairs_before_min_clients": before,
            "pairs_below_min_clients": below,
            "positive_pairs": positive,
            "negative_pairs": before - below - positive,
        }

    @property
    def verdicts(self) -> dict[str, tuple[bool, dict]]:
        """The check counts of the written rows. A pair is unique by construction of the count (one row per
        (pair_type, item_id_1, item_id_2) group), and only the URL joins after it could repeat one: the
        duplicates are the written rows beyond the groups the count emitted (:func:`validate` recounts the
        distinct keys of any table instead)."""
        m, counted = self.observed.get("written"), self.observed.get("counted")
        groups = as_int(counted["before"]) - as_int(counted["below"])
        return _verdicts(m, as_int(m["rows"]) - groups, self.min_num_clients)


def _group_counts(ranked, cap: int, with_pairs: str, capped: str) -> dict[str, int]:
    """Over one row per group of :func:`_ranked` (its first-ranked item): groups with at least two items
    (``with_pairs``) and groups above ``cap`` (``capped``). An action on the persisted groups (it fills the
    cache the write job then reads): metrics observed inside a cached plan are not reliably reported."""
    from pyspark.sql import functions as F

    row = (
        ranked.filter(F.col("__rank") == 1)
        .agg(count_where(F.col("__n") >= 2).alias(with_pairs), count_where(F.col("__n") > cap).alias(capped))
        .collect()[0]
    )
    return {k: as_int(v) for k, v in row.asDict().items()}


def build_pairs(interactions, item_meta=None, rules: PairRules = PairRules()) -> SparkPairsResult:
    """Pairs by distinct clients, as the polars stage, as one job (see the module): each side's distinct items
    are ranked in one window that also sizes the groups, and persisted (both sides of its self-join read
    them); pairs are counted on a boolean pair type, sorted within the count's hash partitions, and the URLs,
    a broadcast of item_meta's (item, url) map, are joined after the count."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    cols = ["client_id", "session_id", "item_id", "is_positive"]
    if rules.exclude_all_positive_sessions:
        cols.append("session_all_positive")
    day = interactions.select(*cols)
    pos = day.filter(F.col("is_positive"))
    excluded = 0
    if rules.exclude_all_positive_sessions:
        excluded = pos.filter(F.col("session_all_positive")).select("client_id", "session_id").distinct().count()
        pos = pos.filter(~F.col("session_all_positive"))
    # partitioned by the group first: the distinct and the ranking window then share that one shuffle
    pos = pos.select("client_id", "item_id").repartition("client_id").distinct()
    pos = _ranked(pos, ["client_id"], rules.sample_seed).persist(StorageLevel.MEMORY_AND_DISK)
    neg = day.filter(~F.col("is_positive")).select("client_id", "session_id", "item_id")
    neg = _ranked(neg.repartition("client_id", "session_id").distinct(), ["client_id", "session_id"], rules.sample_seed)
    neg = neg.persist(StorageLevel.MEMORY_AND_DISK)
    groups = {
        **_group_counts(pos, rules.max_positive_items_per_client, "clients_with_positive_pairs", "clients_capped"),
        **_group_counts(neg, rules.max_negative_items_per_session, "sessions_with_negative_pairs", "sessions_capped"),
    }
    observed = Observed()

    def self_pairs(df, on: list[str], cap: int):
        df = df.filter((F.col("__n") >= 2) & (F.col("__rank") <= cap))
        a = df.select(*on, F.col("item_id").alias("item_id_1"))
        b = df.select(*on, F.col("item_id").alias("item_id_2"))
        return a.join(b, on).filter(F.col("item_id_1") < F.col("item_id_2"))

    # Both sides are hash-partitioned by the pair once; the negative side's per-client distinct and the count
    # group by supersets of (item_id_1, item_id_2), so neither shuffles again.
    by_pair = ("item_id_1", "item_id_2")
    pos_pairs = (
        self_pairs(pos, ["client_id"], rules.max_positive_items_per_client)
        .select(*by_pair, F.lit(False).alias("__neg"))
        .repartition(*by_pair)
    )
    # a negative pair seen in several sessions of one client counts once for that client
    neg_pairs = (
        self_pairs(neg, ["client_id", "session_id"], rules.max_negative_items_per_session)
        .select("client_id", *by_pair)
        .repartition(*by_pair)
        .distinct()
        .select(*by_pair, F.lit(True).alias("__neg"))
    )
    counted = pos_pairs.unionByName(neg_pairs).groupBy("__neg", *by_pair).agg(F.count(F.lit(1)).alias("num_clients"))
    below = F.col("num_clients") < rules.min_num_clients
    counted = observed.attach(
        "counted",
        counted,
        before=F.count(F.lit(1)),
        below=count_where(below),
        positive_pairs=count_where(~below & ~F.col("__neg")),
    )
    # sorted before the URLs are joined (a broadcast join keeps its stream's order): the sort moves 4 narrow
    # columns, not two strings per pair
    kept = counted.filter(~below).sortWithinPartitions("__neg", *by_pair)
    if item_meta is not None:
        urls = F.broadcast(item_meta.select("item_id", "download_url"))
        kept = kept.join(
            urls.withColumnsRenamed({"item_id": "item_id_1", "download_url": "download_url_1"}), "item_id_1", "left"
        ).join(urls.withColumnsRenamed({"item_id": "item_id_2", "download_url": "download_url_2"}), "item_id_2", "left")
    else:
        kept = kept.withColumn("download_url_1", F.lit(None).cast("string")).withColumn(
            "download_url_2", F.lit(None).cast("string")
        )
    pair_type = F.when(F.col("__neg"), F.lit("negative")).otherwise(F.lit("positive")).alias("pair_type")
    pairs = kept.select(*[pair_type if c == "pair_type" else c for c in PAIR_COLUMNS])
    pairs = observed.attach("written", pairs, **_row_checks(rules.min_num_clients))
    return SparkPairsResult(pairs, observed, groups, int(excluded), rules.min_num_clients, [pos, neg])


def _row_checks(min_num_clients: int) -> dict:
    from pyspark.sql import functions as F

    one, two = F.col("item_id_1"), F.col("item_id_2")
    return {
        "rows": F.count(F.lit(1)),
        "self_pairs": count_where(one == two),
        "non_canonical": count_where(one > two),
        "null_keys": count_where(one.isNull() | two.isNull() | F.col("pair_type").isNull()),
        "below": count_where(F.col("num_clients") < min_num_clients),
    }


def _verdicts(m: dict, duplicates: int, min_num_clients: int) -> dict[str, tuple[bool, dict]]:
    return verdicts(
        as_int(m["non_canonical"]),
        as_int(m["self_pairs"]),
        duplicates,
        as_int(m["null_keys"]),
        as_int(m["below"]),
        min_num_clients,
    )


def validate(pairs, min_num_clients: int) -> dict[str, tuple[bool, dict]]:
    """The check verdicts of any pairs table: the written job's row counts, run on their own, and the
    duplicates recounted as the rows beyond the distinct (item_id_1, item_id_2, pair_type) keys."""
    observed = Observed()
    run_observed(observed.attach("written", pairs, **_row_checks(min_num_clients)), observed)
    m = observed.get("written")
    distinct = pairs.select("item_id_1", "item_id_2", "pair_type").distinct().count()
    return _verdicts(m, as_int(m["rows"]) - int(distinct), min_num_clients)
