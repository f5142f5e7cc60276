"""Spark version of :mod:`recsys_assets.stages.filtered_interactions` (seed 000, phase 1): the same rules
(:class:`~recsys_assets.stages.filtered_interactions.Phase1Rules`), output columns and order, stats and check
verdicts."""

from __future__ import annotations

import dataclasses
import typing

from ..stages.filtered_interactions import LABEL, OUTPUT_COLUMNS, Phase1Rules, verdicts

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


@dataclasses.dataclass
class SparkPhase1Result:
    interactions: typing.Any
    """Spark DataFrame in ``OUTPUT_COLUMNS``, ordered like the polars stage's output."""
    stats: dict[str, int]


def filter_interactions(clean, rules: Phase1Rules = Phase1Rules()) -> SparkPhase1Result:
    """Phase 1 in one shuffle: the day is hash-partitioned by client and sorted by ``SORT`` within each
    partition; a session's ``session_all_positive`` and a client's positive-CTR are windows over that order
    (no join, no further shuffle or sort). The output's parts are each in the polars order, not the whole
    partition (readers sort what they depend on). The statistics are aggregated from a separate scan."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    lf = clean.withColumn("__cls", interaction_class(rules))
    ordered = lf.repartition("client_id").sortWithinPartitions(*SORT)
    session = Window.partitionBy("client_id", "session_id")
    client = Window.partitionBy("client_id")
    ctr = F.sum((F.col("__cls") == 1).cast("long")).over(client) / F.sum((F.col("__cls") != 0).cast("long")).over(
        client
    )
    out = (
        ordered.withColumn("session_all_positive", F.bool_and(F.col("__cls") == 1).over(session))
        .withColumn("__ctr", ctr)
        .filter((F.col("__cls") != 0) & (F.col("__ctr") <= rules.max_client_positive_ctr))
        .withColumn(LABEL, F.col("__cls") == 1)
        .select(*OUTPUT_COLUMNS)
    )
    clients = (
        lf.filter(F.col("__cls") != 0)
        .groupBy("client_id")
        .agg(
            F.sum((F.col("__cls") == 1).cast("long")).alias("pos"),
            F.sum((F.col("__cls") == -1).cast("long")).alias("neg"),
        )
        .withColumn("ctr", F.col("pos") / (F.col("pos") + F.col("neg")))
    )
    counts = lf.agg(
        F.count(F.lit(1)).alias("rows_in"),
        F.sum((F.col("__cls") == 1).cast("long")).alias("positive"),
        F.sum((F.col("__cls") == -1).cast("long")).alias("negative"),
        F.sum((F.col("__cls") == 0).cast("long")).alias("neutral"),
    ).collect()[0]
    over = F.col("ctr") > rules.max_client_positive_ctr
    client_counts = clients.agg(
        F.count(F.lit(1)).alias("clients_classified"),
        F.sum(over.cast("long")).alias("clients_dropped"),
        F.sum(F.when(over, F.col("pos") + F.col("neg")).otherwise(0)).alias("rows_dropped_with_clients"),
    ).collect()[0]
    stats = {**counts.asDict(), **client_counts.asDict()}
    stats = {k: int(v or 0) for k, v in stats.items()}
    stats["rows_out"] = stats["positive"] + stats["negative"] - stats["rows_dropped_with_clients"]
    return SparkPhase1Result(out, stats)


def validate(df, rules: Phase1Rules = Phase1Rules()) -> dict[str, tuple[bool, dict]]:
    """Phase 1's check verdicts, counted on Spark (the verdict rule is the polars stage's ``verdicts``)."""
    from pyspark.sql import functions as F

    cls = interaction_class(rules)
    row = df.agg(
        F.sum((cls == 0).cast("long")).alias("neutral"),
        F.sum(((cls == 1) != F.col(LABEL)).cast("long")).alias("mislabelled"),
        F.sum(
            (F.col("client_id").isNull() | F.col("session_id").isNull() | F.col("item_id").isNull()).cast("long")
        ).alias("null_keys"),
    ).collect()[0]
    ctr = df.groupBy("client_id").agg(F.avg(F.col(LABEL).cast("double")).alias("ctr"))
    c = ctr.agg(
        F.sum((F.col("ctr") > rules.max_client_positive_ctr).cast("long")).alias("over"), F.max("ctr").alias("max_ctr")
    ).collect()[0]
    return verdicts(
        int(row["neutral"] or 0),
        int(row["mislabelled"] or 0),
        int(c["over"] or 0),
        float(c["max_ctr"] or 0.0),
        int(row["null_keys"] or 0),
    )
