"""Spark version of :mod:`recsys_assets.stages.item_pairs` (seed 000, phase 3): the same rules
(:class:`~recsys_assets.stages.item_pairs.PairRules`, the seeded cap hash), output rows and columns, stats and
check verdicts. Pairs are made on the cluster, each group's (the seed's self-join key's) from its list of
items, and counted with a ``groupBy``; ``pair_type`` is a string and the URL columns are plain strings (polars
writes them dictionary-encoded: the values are the same). The rows are the polars stage's, and each part file
is in its order: (negative last, item_id_1, item_id_2).

Positive and negative pairs are counted apart, each hash-partitioned by its pair key: the item ids packed into
one long where they allow (:data:`PACKED_ID_LIMIT`, as the polars stage packs its indexes), and with sort
aggregation on (``session.BASE_CONF``) the count streams over the sorted keys, so the sort that orders the
output is the count's only work (:class:`PairKey`).

The day's rows are shuffled by client (the positive and the negative side each with the columns it reads):
a client's positives and each of its sessions' negatives are then in one partition, where each group's
distinct items are listed in seeded hash order (the cap keeps the first), its pairs generated from the list
(two generators instead of a self-join: no join, nothing persisted) and a client's negative pairs
deduplicated; only the pair keys are shuffled again, to be counted.

One job builds, counts and writes the pairs; the group sizes, the pair statistics and the check counts are
counted as it runs (:mod:`recsys_assets.spark.metrics`). One small job before it reads the item id range and
counts the sessions left out as all-positive.
"""

from __future__ import annotations

import dataclasses
import typing

import polars as pl

from ..stages.item_pairs import (
    CAP_HASH_MODULUS,
    PAIR_COLUMNS,
    TOP_COLUMNS,
    TOP_PAIRS,
    TOP_SCHEMA,
    PairRules,
    cap_hash_multiplier,
    verdicts,
)
from .metrics import Observed, as_int, count_where, run_observed


def _cap_hash(seed: int):
    from pyspark.sql import functions as F

    p, m = CAP_HASH_MODULUS, cap_hash_multiplier(seed)
    return F.pmod(F.pmod(F.col("item_id"), F.lit(p)) * F.lit(m), F.lit(p))


def _groups(rows, group: list[str], cap: int, seed: int):
    """One row per group of ``rows`` (distinct ``group`` + ``item_id`` rows): its size ``__n`` and its first
    ``cap`` items ``__items`` by seeded hash (the smallest first, ties by item_id, nulls first: the polars
    stage's ``_cap`` order). Rows partitioned by client already are grouped where they are: no shuffle."""
    from pyspark.sql import functions as F

    ranked = F.sort_array(F.collect_list(F.struct(_cap_hash(seed).alias("h"), F.col("item_id").alias("i"))))
    return (
        rows.groupBy(*group)
        .agg(ranked.alias("__ranked"))
        .select(*group, F.size("__ranked").alias("__n"), F.slice("__ranked", 1, cap).getField("i").alias("__items"))
    )


def _group_pairs(groups, group: list[str], keep: list[str]):
    """``keep`` + (item_id_1 < item_id_2) for every pair of the items of each group with at least two; groups
    with a null key make no pairs and null items pair with nothing (a join on them matches nothing, as in
    the polars stage). Two generators over each group's item list: no join, no shuffle."""
    from pyspark.sql import functions as F

    keyed = F.col(group[0]).isNotNull()
    for c in group[1:]:
        keyed = keyed & F.col(c).isNotNull()
    g = groups.filter((F.col("__n") >= 2) & keyed).select(*keep, F.array_compact("__items").alias("__items"))
    first = g.select(*keep, "__items", F.posexplode("__items").alias("__p", "__a"))
    rest = F.slice("__items", F.col("__p") + 2, F.size("__items"))
    both = first.select(*keep, "__a", F.explode(rest).alias("__b"))
    return both.select(*keep, F.least("__a", "__b").alias("item_id_1"), F.greatest("__a", "__b").alias("item_id_2"))


@dataclasses.dataclass
class SparkPairsResult:
    pairs: typing.Any
    """Spark DataFrame in ``PAIR_COLUMNS``; each part holds the pairs of a range of key hashes, of one type or
    both, sorted by (negative last, item_id_1, item_id_2) -- the polars stage's order within a part, not across
    parts (readers sort what they depend on)."""
    observed: Observed
    """Counted as ``pairs`` is written: ``stats`` and ``verdicts`` exist once it ran."""
    sessions_excluded: int
    min_num_clients: int
    key: PairKey
    """How the pairs were keyed and counted (see :class:`PairKey`)."""

    @property
    def stats(self) -> dict[str, int]:
        counted = self.observed.get("counted")
        before, below, positive = (as_int(counted[k]) for k in ("before", "below", "positive_pairs"))
        pos, neg = self.observed.get("positive_groups"), self.observed.get("negative_groups")
        return {
            "clients_with_positive_pairs": as_int(pos["with_pairs"]),
            "clients_capped": as_int(pos["capped"]),
            "sessions_with_negative_pairs": as_int(neg["with_pairs"]),
            "sessions_capped": as_int(neg["capped"]),
            "sessions_excluded_all_positive": self.sessions_excluded,
            "pairs_before_min_clients": before,
            "pairs_below_min_clients": below,
            "positive_pairs": positive,
            "negative_pairs": before - below - positive,
        }

    @property
    def pair_rows(self) -> dict[str, int]:
        """The rows the pair count counted, by pair type: one per client and pair (the sum of ``num_clients``
        over the pairs of that type before ``min_num_clients``)."""
        return {t: as_int(self.observed.get(f"{t}_rows")["rows"]) for t in ("positive", "negative")}

    @property
    def verdicts(self) -> dict[str, tuple[bool, dict]]:
        """The check counts of the written rows. A pair is unique by construction of the count (one row per
        (pair_type, item_id_1, item_id_2) group), and only the URL joins after it could repeat one: the
        duplicates are the written rows beyond the groups the count emitted (:func:`validate` recounts the
        distinct keys of any table instead)."""
        m, counted = self.observed.get("written"), self.observed.get("counted")
        groups = as_int(counted["before"]) - as_int(counted["below"])
        return _verdicts(m, as_int(m["rows"]) - groups, self.min_num_clients)


PACKED_ID_LIMIT = 2**31
"""Item ids in ``[0, PACKED_ID_LIMIT)`` pack into one long, ``item_id_1 << 32 | item_id_2``, which sorts as
(item_id_1, item_id_2): the pair count then shuffles, sorts and groups one column, and Spark sorts a single
long key by radix. Other ids are counted on the two columns (same rows, slower)."""

SORT_AGGREGATION = "spark.sql.execution.replaceHashWithSortAgg"
"""Spark's setting (in ``session.BASE_CONF``) to aggregate a sorted input by streaming over it."""


def sort_aggregation_enabled(spark) -> bool:
    return str(spark.conf.get(SORT_AGGREGATION, "false")).strip().lower() == "true"


def _packable(ranges: typing.Sequence[tuple]) -> bool:
    """Whether every (smallest, largest) item id in ``ranges`` (None: no rows) is in ``[0, PACKED_ID_LIMIT)``."""
    return all(lo is None or (lo >= 0 and hi < PACKED_ID_LIMIT) for lo, hi in ranges)


@dataclasses.dataclass(frozen=True)
class PairKey:
    """How the pair count keys its rows: one packed long (``packed``) or (item_id_1, item_id_2)."""

    packed: bool
    sort_aggregation: bool
    """The session aggregates a sorted input by streaming (:data:`SORT_AGGREGATION`): the count then sorts the
    pairs before it groups them and its output is in key order; otherwise it groups by hash, then sorts."""

    @property
    def names(self) -> tuple[str, ...]:
        return ("__key",) if self.packed else ("item_id_1", "item_id_2")

    def columns(self) -> list:
        """The key of a row with ``item_id_1`` and ``item_id_2``, as columns to select."""
        from pyspark.sql import functions as F

        if self.packed:
            return [F.shiftleft(F.col("item_id_1"), 32).bitwiseOR(F.col("item_id_2")).alias("__key")]
        return [F.col("item_id_1"), F.col("item_id_2")]

    def count(self, observed: Observed, name: str, rows, negative: bool):
        """``(__neg, item_id_1, item_id_2, num_clients)``: ``rows`` (one per client and pair, hash-partitioned
        by the key) counted per pair; each part in (item_id_1, item_id_2) order. ``name`` observes the rows
        counted. With sort aggregation the observation also keeps the sort under the count: Spark's optimizer
        drops a sort that only a Project or Filter separates from an aggregate (or a join), as order-irrelevant."""
        from pyspark.sql import functions as F

        rows = rows.select(*self.names)
        if self.sort_aggregation:
            rows = rows.sortWithinPartitions(*self.names)
        rows = observed.attach(name, rows, rows=F.count(F.lit(1)))
        # already in key order after a streaming count (Spark then drops this sort as redundant)
        counts = rows.groupBy(*self.names).agg(F.count(F.lit(1)).alias("num_clients")).sortWithinPartitions(*self.names)
        if self.packed:
            ids = [
                F.shiftright(F.col("__key"), 32).alias("item_id_1"),
                F.col("__key").bitwiseAND(F.lit(2**32 - 1)).alias("item_id_2"),
            ]
        else:
            ids = [F.col("item_id_1"), F.col("item_id_2")]
        return counts.select(F.lit(negative).alias("__neg"), *ids, "num_clients")


def build_pairs(interactions, item_meta=None, rules: PairRules = PairRules()) -> SparkPairsResult:
    """Pairs by distinct clients, as the polars stage, in one job (see the module): the day is shuffled by
    client, which places every group of both kinds (a client's positives, a client's session's negatives)
    in one partition; each group's distinct items are listed in seeded hash order and capped, its pairs are
    generated from that list, and the pair keys shuffled and counted, positive and negative apart
    (:meth:`PairKey.count`); the URLs, a broadcast of item_meta's (item, url) map, are joined after the count.
    One small job before it finds the item id range (which decides the pair key) and counts the sessions
    left out as all-positive."""
    from pyspark.sql import functions as F

    cols = ["client_id", "session_id", "item_id", "is_positive"]
    if rules.exclude_all_positive_sessions:
        cols.append("session_all_positive")
    day = interactions.select(*cols)
    summary = [F.min("item_id").alias("lo"), F.max("item_id").alias("hi")]
    if rules.exclude_all_positive_sessions:
        excluded_session = F.when(
            F.col("is_positive") & F.col("session_all_positive"), F.struct("client_id", "session_id")
        )
        summary.append(F.count_distinct(excluded_session).alias("excluded"))
    first = day.agg(*summary).collect()[0]
    excluded = as_int(first["excluded"]) if rules.exclude_all_positive_sessions else 0
    key = PairKey(_packable([(first["lo"], first["hi"])]), sort_aggregation_enabled(interactions.sparkSession))

    observed = Observed()
    # the day's rows are shuffled by client (each side with its own columns): groups and pairs then stay in place
    day = day.repartition("client_id")
    pos = day.filter(F.col("is_positive"))
    if rules.exclude_all_positive_sessions:
        pos = pos.filter(~F.col("session_all_positive"))
    neg = day.filter(~F.col("is_positive"))

    def groups(rows, group: list[str], cap: int, name: str):
        g = _groups(rows.select(*group, "item_id").distinct(), group, cap, rules.sample_seed)
        return observed.attach(
            name, g, with_pairs=count_where(F.col("__n") >= 2), capped=count_where(F.col("__n") > cap)
        )

    pos_groups = groups(pos, ["client_id"], rules.max_positive_items_per_client, "positive_groups")
    neg_groups = groups(neg, ["client_id", "session_id"], rules.max_negative_items_per_session, "negative_groups")
    pos_pairs = _group_pairs(pos_groups, ["client_id"], []).select(*key.columns()).repartition(*key.names)
    # a negative pair seen in several sessions of one client counts once for that client: deduplicated where
    # the client's rows are, before the pair keys are shuffled
    neg_pairs = (
        _group_pairs(neg_groups, ["client_id", "session_id"], ["client_id"])
        .select(*key.columns(), "client_id")
        .distinct()
        .select(*key.names)
        .repartition(*key.names)
    )
    counted = key.count(observed, "positive_rows", pos_pairs, negative=False).unionByName(
        key.count(observed, "negative_rows", neg_pairs, negative=True)
    )
    below = F.col("num_clients") < rules.min_num_clients
    counted = observed.attach(
        "counted",
        counted,
        before=F.count(F.lit(1)),
        below=count_where(below),
        positive_pairs=count_where(~below & ~F.col("__neg")),
    )
    # each side's parts are in (item_id_1, item_id_2) order, and a union part is a positive part followed by a
    # negative part (or one of them); the broadcast URL joins keep that order (a broadcast join streams its big
    # side)
    kept = counted.filter(~below)
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
    return SparkPairsResult(pairs, observed, excluded, rules.min_num_clients, key)


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


def top_pairs(pairs, n: int = TOP_PAIRS) -> pl.DataFrame:
    """The polars stage's ``top_pairs`` of a Spark pairs table (the stored one: the pairs are not counted
    again). Two small jobs instead of one ordering of every row by four columns: the ``n`` largest counts
    (one column read), then only the rows with at least the ``n``-th of them (a filter pushed down to the
    parquet reader) ordered in full; ties in table order, as in polars (bench day, warm: 1.4-2.1 s against
    2.0-2.4 s for the one ordering)."""
    from pyspark.sql import functions as F

    counts = pairs.select("num_clients").orderBy(F.desc_nulls_last("num_clients")).limit(n).toArrow()
    least = counts["num_clients"][-1].as_py() if counts.num_rows else None
    rows = pairs if least is None else pairs.filter(F.col("num_clients") >= least)
    order = [F.desc_nulls_last("num_clients"), F.col("pair_type") == "negative", "item_id_1", "item_id_2"]
    top = pl.from_arrow(rows.select(*TOP_COLUMNS).orderBy(*order).limit(n).toArrow())
    return typing.cast(pl.DataFrame, top).cast(TOP_SCHEMA)  # type: ignore[arg-type]
