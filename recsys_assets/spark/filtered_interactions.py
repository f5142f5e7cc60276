"""Spark version of :mod:`recsys_assets.stages.filtered_interactions` (seed 000, phase 1): the same rules
(:class:`~recsys_assets.stages.filtered_interactions.Phase1Rules`), output columns and order, stats and check
verdicts.

One job: the day is hash-partitioned by client and sorted by ``SORT`` within each partition; a session's
``session_all_positive`` and a client's positive-CTR are windows over that order (no join, no further shuffle
or sort). The statistics are counted on the classified rows and the check counts on the kept rows as that
job writes them (:mod:`recsys_assets.spark.metrics`): no scan of their own."""

from __future__ import annotations

import dataclasses
import typing

from ..stages.filtered_interactions import LABEL, OUTPUT_COLUMNS, Phase1Rules, verdicts
from .metrics import Observed, as_int, count_where, run_observed

SORT = ("client_id", "session_id", "event_ts", "item_id")


def interaction_class(rules: Phase1Rules):
    """1 positive, -1 negative, 0 neutral -- the seed's rules in their order (see the polars stage)."""
    from pyspark.sql import functions as F

    return (
        F.when((F.col("pcc") > rules.positive_pcc_above) | F.col("liked"), F.lit(1))
        .when(
            (F.col("timespent_s") < rules.negative_timespent_below_s) | (F.col("pcc") < rules.negative_pcc_below),
            F.lit(-1),
        )
        .otherwise(F.lit(0))
    )


def _client_windows():
    """A client's rows in ``SORT`` order: (ordered window, the same over the client's whole frame)."""
    from pyspark.sql import Window

    ordered = Window.partitionBy("client_id").orderBy(*SORT[1:])
    return ordered, ordered.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)


@dataclasses.dataclass
class SparkPhase1Result:
    interactions: typing.Any
    """Spark DataFrame in ``OUTPUT_COLUMNS``; each part in the polars stage's order (not the whole partition)."""
    observed: Observed
    """Counted as ``interactions`` is written: ``stats`` and ``verdicts`` exist once it ran."""

    @property
    def stats(self) -> dict[str, int]:
        stats = {k: as_int(v) for k, v in self.observed.get("classified").items()}
        stats["rows_out"] = stats["positive"] + stats["negative"] - stats["rows_dropped_with_clients"]
        return stats

    @property
    def verdicts(self) -> dict[str, tuple[bool, dict]]:
        return _verdicts(self.observed.get("kept"))


def filter_interactions(clean, rules: Phase1Rules = Phase1Rules()) -> SparkPhase1Result:
    """Phase 1 as one job (see the module). The classified rows' statistics and the kept rows' check counts
    are attached to the returned frame and counted when it is written."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cls = F.col("__cls")
    client, client_all = _client_windows()
    session = (
        Window.partitionBy("client_id", "session_id")
        .orderBy(*SORT[2:])
        .rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    )
    ordered = (
        clean.withColumn("__cls", interaction_class(rules))
        .repartition("client_id")
        .sortWithinPartitions(*SORT)
        .select(
            "*",
            F.bool_and(cls == 1).over(session).alias("session_all_positive"),
            count_where(cls == 1).over(client_all).alias("__pos"),
            count_where(cls != 0).over(client_all).alias("__classified"),
            F.row_number().over(client).alias("__row"),
        )
    )
    over = F.coalesce(F.try_divide(F.col("__pos"), F.col("__classified")) > rules.max_client_positive_ctr, F.lit(False))
    first = (F.col("__row") == 1) & (F.col("__classified") > 0)  # one row per client with classified rows
    observed = Observed()
    ordered = observed.attach(
        "classified",
        ordered,
        rows_in=F.count(F.lit(1)),
        positive=count_where(cls == 1),
        negative=count_where(cls == -1),
        neutral=count_where(cls == 0),
        clients_classified=count_where(first),
        clients_dropped=count_where(first & over),
        rows_dropped_with_clients=count_where((cls != 0) & over),
    )
    kept = ordered.filter((cls != 0) & ~over).withColumn(LABEL, cls == 1).select(*OUTPUT_COLUMNS)
    # the checks recount the kept rows themselves (their own class, their client's CTR among them): the
    # rows stay partitioned by client and in SORT order, so these windows need no shuffle or sort
    out = _attach_checks(observed, kept, rules).select(*OUTPUT_COLUMNS)
    return SparkPhase1Result(out, observed)


def _attach_checks(observed: Observed, df, rules: Phase1Rules):
    from pyspark.sql import functions as F

    client, client_all = _client_windows()
    df = df.select(
        "*",
        F.avg(F.col(LABEL).cast("double")).over(client_all).alias("__ctr"),
        F.row_number().over(client).alias("__row"),
    )
    cls = interaction_class(rules)
    return observed.attach(
        "kept",
        df,
        neutral=count_where(cls == 0),
        mislabelled=count_where((cls == 1) != F.col(LABEL)),
        clients_above=count_where((F.col("__row") == 1) & (F.col("__ctr") > rules.max_client_positive_ctr)),
        max_ctr=F.max("__ctr"),
        null_keys=count_where(F.col("client_id").isNull() | F.col("session_id").isNull() | F.col("item_id").isNull()),
    )


def _verdicts(m: dict) -> dict[str, tuple[bool, dict]]:
    return verdicts(
        as_int(m["neutral"]),
        as_int(m["mislabelled"]),
        as_int(m["clients_above"]),
        float(m["max_ctr"] or 0.0),
        as_int(m["null_keys"]),
    )


def validate(df, rules: Phase1Rules = Phase1Rules()) -> dict[str, tuple[bool, dict]]:
    """Phase 1's check verdicts of any stored or built table ``df`` -- the counts the write job attaches,
    run on their own (the verdict rule is the polars stage's ``verdicts``)."""
    observed = Observed()
    run_observed(_attach_checks(observed, df, rules), observed)
    return _verdicts(observed.get("kept"))
