"""Spark version of :mod:`recsys_assets.stages.als_factors`: implicit-feedback ALS per language on MLlib
(``pyspark.ml.recommendation.ALS``, ``implicitPrefs=True``) over the trailing window, with the polars stage's
confidence rules (:class:`~recsys_assets.stages.als_factors.ConfidenceRules`), minimum counts, stats, output
schema (``item_id | client_id, language, vector``) and check verdicts.

MLlib's implicit model differs from ``implicit``'s in two documented ways, so the same hyper-parameters give
close, not identical, factors: a cell's confidence is ``1 + alpha * |value|`` (``alpha=1``: the cells already
carry the rules' confidence) and ``regParam`` is scaled by each row's number of cells (ALS-WR). The ids are
re-indexed densely per language (MLlib's ids are 32-bit), each id's rank in id order (:func:`dense_index`). A
language with no more items (or clients) than factors is skipped and says why: MLlib's normal equations for a
client with only negative cells are singular there (``implicit`` regularises every row and trains it).
"""

from __future__ import annotations

import dataclasses
import time
import typing

from ..stages.als_factors import AlsParams, ConfidenceRules, verdicts

FIXED_SIZE = "fixed_size"
"""Column metadata key: a Spark ``array<float>`` column of this fixed length (polars reads it as ``Array``)."""


def confidence_cells(interactions, rules: ConfidenceRules):
    """``client_id, item_id, value`` per cell of the window (see the polars stage)."""
    from pyspark.sql import functions as F

    liked = F.col("liked").cast("float")
    looped = (F.col("pcc") > 1.0).cast("float")
    weight = F.when(
        F.col("is_positive"), F.lit(rules.alpha) * (1.0 + rules.like_bonus * liked + rules.loop_bonus * looped)
    ).otherwise(F.lit(-rules.negative_weight))
    return interactions.groupBy("client_id", "item_id").agg(F.sum(weight.cast("float")).cast("float").alias("value"))


@dataclasses.dataclass
class SparkAlsResult:
    item_factors: typing.Any
    user_factors: typing.Any
    stats: list[dict]


def dense_index(df, column: str, index: str, parts: typing.Optional[int] = None, within: typing.Sequence[str] = ()):
    """``df[column]`` (distinct values, per group of the ``within`` columns) with ``index``: each value's rank in
    ascending order within its group, from 0 (int), over ``parts`` ranges (the session's shuffle partitions by
    default). Returns ``within``, ``column`` and ``index``; the ``within`` values must not be null.

    A window ordered over the whole frame (or over a whole group) would move every id of it to one task. Here the
    rows are range-partitioned by (``within``, ``column``) and sorted within their parts, each row takes its part
    and its position in it (``monotonically_increasing_id``), and one row per part and group -- its size and
    first position -- comes back to the driver to give each part the offset of its group's rows in the parts
    before it. Range partitioning samples its bounds, and a recomputed sample may draw other bounds, so the ranged
    ids are checkpointed (the checkpoint directory ALS needs anyway) before the parts are counted: the offsets
    and the positions then come from the same parts."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, LongType, StructField, StructType

    keys = [*within, column]
    ranged = (
        df.select(*keys)
        .repartitionByRange(*([parts] if parts else []), *keys)
        .sortWithinPartitions(*keys)
        .select(*keys, F.spark_partition_id().alias("__part"), F.monotonically_increasing_id().alias("__pos"))
        .checkpoint(eager=True)
    )
    sizes = (
        ranged.groupBy("__part", *within).agg(F.count(F.lit(1)).alias("__n"), F.min("__pos").alias("__first")).collect()
    )
    offsets, before = [], {}
    for row in sorted(sizes, key=lambda r: r["__part"]):
        group = tuple(row[w] for w in within)
        if any(v is None for v in group):
            raise ValueError(f"dense_index: a null {', '.join(within)} among the rows to index by {column}")
        offsets.append((int(row["__part"]), *group, before.get(group, 0) - int(row["__first"])))
        before[group] = before.get(group, 0) + int(row["__n"])
    schema = StructType(
        [
            StructField("__part", IntegerType()),
            *[StructField(w, df.schema[w].dataType) for w in within],
            StructField("__offset", LongType()),
        ]
    )
    offset = df.sparkSession.createDataFrame(offsets, schema)
    return ranged.join(F.broadcast(offset), ["__part", *within]).select(
        *keys, (F.col("__pos") + F.col("__offset")).cast("int").alias(index)
    )


def _vectors(factors, ids, id_name: str, language: str, k: int):
    from pyspark.sql import functions as F

    return factors.join(ids, factors["id"] == ids["idx"]).select(
        F.col(id_name).cast("bigint").alias(id_name),
        F.lit(language).alias("language"),
        F.col("features").cast("array<float>").alias("vector", metadata={FIXED_SIZE: k}),
    )


CHECKPOINT_INTERVAL = 10
"""MLlib ALS checkpoints its factor RDDs every this many iterations (its default)."""


def checkpoint_dir(spark) -> typing.Optional[str]:
    """The session's checkpoint directory (``spark.checkpoint.dir`` or ``SparkContext.setCheckpointDir``), None if
    it has none."""
    try:
        found = spark.sparkContext.getCheckpointDir()
    except Exception:  # a Spark Connect session has no SparkContext: the server's setting is what counts
        found = None
    return found or spark.conf.get("spark.checkpoint.dir", None) or None


def require_checkpoint_dir(spark, who: str) -> None:
    """Fail with what to set when ``spark`` has no checkpoint directory (``who`` needs one)."""
    if checkpoint_dir(spark) is None:
        raise ValueError(
            f"{who} needs a Spark checkpoint directory: set spark.checkpoint.dir (RECSYS_SPARK_CONF) to a path "
            "every executor can write -- HDFS or S3 on a cluster; for Spark Connect, in the server's own "
            "configuration (a client cannot set it)"
        )


def train_als(interactions, item_language, params: AlsParams = AlsParams(), rules: ConfidenceRules = ConfidenceRules()):
    """One MLlib ALS model per language (see the polars stage's ``train_als`` for the rules).

    The session needs a checkpoint directory (``spark.checkpoint.dir``; local sessions get one from
    :func:`~recsys_assets.spark.session.spark_config`): without it MLlib never cuts the lineage of its factors, whose
    plan then grows with every iteration until a task dies with a StackOverflowError (seen at 15 iterations on a
    two-day window). Each language's vectors are checkpointed, so nothing downstream recomputes the iterations."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    require_checkpoint_dir(interactions.sparkSession, "MLlib ALS")

    cells = (
        confidence_cells(interactions.select("client_id", "item_id", "is_positive", "liked", "pcc"), rules)
        .join(item_language.select("item_id", "language"), "item_id", "left")
        .persist()
    )
    no_language = cells.filter(F.col("language").isNull()).count()
    present = [
        r["language"] for r in cells.filter(F.col("language").isNotNull()).select("language").distinct().collect()
    ]
    wanted = list(params.languages) or sorted(present)
    items_out, users_out, stats = [], [], []
    for lang in wanted:
        lc = cells.filter(F.col("language") == lang).select("client_id", "item_id", "value")
        nonzero = lc.filter(F.col("value") != 0)
        item_clients = nonzero.groupBy("item_id").agg(F.count(F.lit(1)).alias("n")).persist()
        items = dense_index(
            item_clients.filter(F.col("n") >= params.min_item_clients).select("item_id"), "item_id", "col"
        )
        kept = nonzero.join(items, "item_id")
        client_items = kept.groupBy("client_id").agg(F.count(F.lit(1)).alias("n")).persist()
        clients = dense_index(
            client_items.filter(F.col("n") >= params.min_client_items).select("client_id"), "client_id", "row"
        ).persist()
        matrix = kept.join(clients, "client_id").select("row", "col", "value").persist()
        items = items.persist()
        c = item_clients.agg(F.count(F.lit(1)).alias("items_in_window"), F.sum("n").alias("nonzero")).collect()[0]
        m = matrix.agg(F.count(F.lit(1)).alias("nnz"), F.sum((F.col("value") < 0).cast("long")).alias("neg")).collect()[
            0
        ]
        n_cells = lc.count()
        n_items, n_clients = items.count(), clients.count()
        st = {
            "language": lang,
            "cells": int(n_cells),
            "cells_cancelled": int(n_cells) - int(c["nonzero"] or 0),
            "items_in_window": int(c["items_in_window"]),
            "items_below_min_clients": int(c["items_in_window"]) - int(n_items),
            "clients_in_window": int(nonzero.select("client_id").distinct().count()),
            "clients_below_min_items": int(client_items.count()) - int(n_clients),
            "clients": int(n_clients),
            "items": int(n_items),
            "nnz": int(m["nnz"]),
            "negative_cells": int(m["neg"] or 0),
            "engine": "mllib",
            "trained": False,
            "seconds": 0.0,
        }
        if st["nnz"] < params.min_cells_per_language or n_items < 2:
            st["skipped"] = f"{st['nnz']} cells < {params.min_cells_per_language}"
            stats.append(st)
            continue
        if min(n_items, n_clients) <= params.factors:
            # MLlib regularises a row by its number of positive cells: a client with only negatives then has
            # no regularisation, and with no more items than factors its normal equations are singular
            st["skipped"] = f"{n_items} items / {n_clients} clients <= {params.factors} factors (MLlib needs more)"
            stats.append(st)
            continue
        # MLlib regularises a row by its positive cells only: a row without one has a singular system (and would
        # get a zero vector), so rows and columns with no positive cell are left out of the solve (counted)
        pos_items = matrix.filter(F.col("value") > 0).select("col").distinct()
        solvable = matrix.join(pos_items, "col", "left_semi")
        pos_rows = solvable.filter(F.col("value") > 0).select("row").distinct()
        solvable = solvable.join(pos_rows, "row", "left_semi").persist()
        solved = solvable.agg(
            F.count(F.lit(1)).alias("nnz"), F.countDistinct("row").alias("rows"), F.countDistinct("col").alias("cols")
        ).collect()[0]
        st["cells_without_positive_row_or_column"] = st["nnz"] - int(solved["nnz"])
        st["clients_without_positive"] = st["clients"] - int(solved["rows"])
        st["items_without_positive"] = st["items"] - int(solved["cols"])
        st["clients"], st["items"] = int(solved["rows"]), int(solved["cols"])
        t = time.perf_counter()
        model = ALS(
            rank=params.factors,
            maxIter=params.iterations,
            regParam=params.regularization,
            implicitPrefs=True,
            alpha=1.0,
            userCol="row",
            itemCol="col",
            ratingCol="value",
            seed=params.seed,
            nonnegative=False,
            checkpointInterval=CHECKPOINT_INTERVAL,
        ).fit(solvable)
        item_vectors = _vectors(
            model.itemFactors, items.withColumnRenamed("col", "idx"), "item_id", lang, params.factors
        )
        user_vectors = _vectors(
            model.userFactors, clients.withColumnRenamed("row", "idx"), "client_id", lang, params.factors
        )
        # checkpointed (written, lineage cut): the checks, the write and the next language never replay ALS
        items_out.append(item_vectors.checkpoint(eager=True))
        users_out.append(user_vectors.checkpoint(eager=True))
        st["seconds"] = round(time.perf_counter() - t, 3)
        st["trained"] = True
        stats.append(st)
    if stats:
        stats[0]["cells_without_language"] = int(no_language)

    def union(frames, id_name):
        if not frames:
            spark = interactions.sparkSession
            return spark.createDataFrame([], f"{id_name} bigint, language string, vector array<float>").select(
                id_name, "language", F.col("vector").alias("vector", metadata={FIXED_SIZE: params.factors})
            )
        out = frames[0]
        for f in frames[1:]:
            out = out.unionByName(f)
        return out.orderBy("language", id_name)

    return SparkAlsResult(union(items_out, "item_id"), union(users_out, "client_id"), stats)


def validate(item_factors, stats: list[dict], max_norm: float) -> dict[str, tuple[bool, dict]]:
    """The polars stage's checks, counted on Spark."""
    from pyspark.sql import functions as F

    v = F.col("vector")
    norm = F.sqrt(F.aggregate(v, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x.cast("double")))
    finite = F.forall(v, lambda x: ~F.isnan(x) & (F.abs(x) < float("inf")))
    row = item_factors.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum((~finite).cast("long")).alias("not_finite"),
        F.min(norm).alias("min_norm"),
        F.max(norm).alias("max_norm"),
        F.countDistinct("item_id").alias("distinct"),
    ).collect()[0]
    rows = int(row["rows"])
    multi = item_factors.groupBy("item_id").agg(F.countDistinct("language").alias("n")).filter(F.col("n") > 1).count()
    if rows:
        is_finite = int(row["not_finite"] or 0) == 0
        lo, hi = float(row["min_norm"]), float(row["max_norm"])
        norm_stats = {"min_norm": lo, "max_norm": hi, "bound": max_norm}
        norms_ok = is_finite and lo > 0 and hi <= max_norm
    else:
        is_finite, norms_ok, norm_stats = True, True, {}
    return verdicts(rows, is_finite, norms_ok, norm_stats, stats, int(row["distinct"] or 0), int(multi))
