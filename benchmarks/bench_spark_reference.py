"""Issue 12's reference query, reconstructed: a straightforward Spark query of phase 1 plus both pair
self-joins of the bench day, counts only, on ``local[2]`` -- to read ``bench_spark.py``'s figures against the
issue's "73 s after a 9 s start" on the machine at hand.

    .venv/bin/python benchmarks/bench_spark_reference.py            # the bench day of bench_spark.py
    .venv/bin/python benchmarks/bench_spark_reference.py --master 'local[4]'
    .venv/bin/python benchmarks/bench_spark_reference.py --gc parallel   # the engine's local JVM option

A straightforward query runs on the JVM's default collector (G1 on Java 17); the engine's local sessions use
ParallelGC (``spark.session.LOCAL_CONF``). ``--gc parallel`` runs the reference with it too, to compare like
with like. ``--tasks engine`` runs it with the engine's local task counts (4 per core for scans and shuffles,
``spark.session.local_parallelism``); the default keeps the counts it had when it reproduced the issue's 73 s
(8 shuffle partitions on ``local[2]``, scans split by Spark's default parallelism, the cores).

The query reads the raw snapshot file (no schema enforcement), classifies each row by the seed's rules, drops
neutrals and the clients above the positive-CTR limit (an aggregate joined back), and counts the rows left, the
positive pairs (same client) and the negative pairs (same client and session), each grouped by pair with
``countDistinct(client_id)``. No caps, no all-positive-session rule, no URLs, nothing written: three count
actions, phase 1 recomputed by each (as such a query does unless it caches).
"""

import argparse
import time
from pathlib import Path

from bench_data_prep import _paths

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="bench")
    ap.add_argument("--day", default="2026-11-03")
    ap.add_argument("--data", type=Path, default=HERE / "_data")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--gc", choices=("default", "parallel"), default="default", help="the JVM's collector")
    ap.add_argument(
        "--tasks",
        choices=("calibrated", "engine"),
        default="calibrated",
        help="calibrated: scans split by Spark's default parallelism (the cores), as when this query gave the "
        "issue's 73 s; engine: the engine's local task counts (spark.session.local_parallelism)",
    )
    args = ap.parse_args()
    snapshot = _paths(args.data, args.profile, args.day)["snapshot"]
    if not snapshot.exists():
        raise SystemExit(f"no bench day at {snapshot}: run benchmarks/bench_spark.py (or bench_data_prep.py) first")

    from pyspark.sql import functions as F

    from recsys_assets.spark.session import build_session, spark_config
    from recsys_assets.stages.filtered_interactions import Phase1Rules

    r = Phase1Rules()
    t = time.perf_counter()
    config = spark_config(args.master, conf={"spark.driver.memory": "6g"})
    if args.gc == "default":
        config.pop("spark.driver.extraJavaOptions", None)
    if args.tasks == "calibrated":
        config.pop("spark.default.parallelism", None)
    spark = build_session(config)
    spark.range(1).count()
    start = time.perf_counter() - t

    t = time.perf_counter()
    raw = spark.read.parquet(str(snapshot))
    cls = (
        F.when((F.col("pcc") > r.positive_pcc_above) | F.col("liked"), 1)
        .when((F.col("timespent_s") < r.negative_timespent_below_s) | (F.col("pcc") < r.negative_pcc_below), -1)
        .otherwise(0)
    )
    day = raw.withColumn("cls", cls).filter(F.col("cls") != 0)
    ctr = day.groupBy("client_id").agg(F.avg((F.col("cls") == 1).cast("double")).alias("ctr"))
    kept = day.join(ctr.filter(F.col("ctr") <= r.max_client_positive_ctr), "client_id", "left_semi")
    pos = kept.filter(F.col("cls") == 1).select("client_id", "item_id").distinct()
    neg = kept.filter(F.col("cls") == -1).select("client_id", "session_id", "item_id").distinct()

    def pairs(df, on):
        a = df.select(*on, F.col("item_id").alias("i"))
        b = df.select(*on, F.col("item_id").alias("j"))
        return a.join(b, on).filter(F.col("i") < F.col("j")).groupBy("i", "j").agg(F.countDistinct("client_id"))

    counts = {
        "phase 1 rows": kept.count(),
        "positive pairs": pairs(pos, ["client_id"]).count(),
        "negative pairs": pairs(neg, ["client_id", "session_id"]).count(),
    }
    seconds = time.perf_counter() - t
    spark.stop()
    label = f"{args.master} ({args.gc} GC, {args.tasks} task counts)"
    print(f"{label}: session start {start:.1f} s; phase 1 + both self-joins, counts only: {seconds:.1f} s")
    print(", ".join(f"{k} {v:,}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
