"""The Spark engine against the polars engine: the same rows, stats and check verdicts, on simulator days and
on hand-built snapshots with every kind of bad row and every rule boundary. Spark runs for real, in local mode.
"""

import dataclasses
import datetime as dt
import math
import os

import polars as pl
import pytest

from recsys_assets.spark import filtered_interactions as sphase1
from recsys_assets.spark import item_meta as sphase2
from recsys_assets.spark import item_pairs as sphase3
from recsys_assets.spark import raw_interactions as sraw
from recsys_assets.spark.metrics import NotYetObserved
from recsys_assets.spark.session import (
    java_version,
    local_cores,
    parse_conf,
    parse_scheme_map,
    spark_config,
    spark_path,
)
from recsys_assets.stages import filtered_interactions as phase1
from recsys_assets.stages import item_meta as phase2
from recsys_assets.stages import item_pairs as phase3
from recsys_assets.stages import raw_interactions as raw

from .conftest import interactions

needs_java = pytest.mark.skipif(
    java_version() is None and not os.environ.get("RECSYS_REQUIRE_JAVA"),  # CI requires it: there the tests fail
    reason="no Java runtime: the Spark engine needs Java 17+ (scripts/bootstrap says what to install)",
)
DAYS = (dt.date(2026, 11, 1), dt.date(2026, 11, 2))


@pytest.fixture(scope="module")
def spark():
    from recsys_assets.spark.session import build_session

    # a tiny day: a few shuffle partitions (the default of 8 is for the bench day)
    session = build_session(spark_config("local[2]", conf={"spark.sql.shuffle.partitions": "2"}))
    yield session
    session.stop()


def to_polars(df) -> pl.DataFrame:
    return pl.from_arrow(df.toArrow())


def spark_read(spark, tmp_path, frame: pl.DataFrame, name: str = "snap"):
    path = tmp_path / f"{name}.parquet"
    frame.write_parquet(path)
    return spark.read.parquet(str(path))


def hostile_snapshot() -> pl.DataFrame:
    """Every kind of bad row of a typed snapshot, beside rows on every rule boundary (phase 1's thresholds)."""
    ts = dt.datetime(2026, 11, 2, 8, tzinfo=dt.timezone.utc)
    rows = [
        {"client_id": None},
        {"session_id": None},
        {"item_id": None},
        {"event_ts": None},
        {"pcc": math.nan},
        {"pcc": -0.1},
        {"pcc": math.inf},
        {"pcc": None},
        {"pcc": 10.5},
        {"timespent_s": math.nan},
        {"timespent_s": -1.0},
        {"timespent_s": -math.inf},
        {"timespent_s": 90_000.0},
        {"liked": None},
        {"item_id": 5, "event_ts": ts},
        {"item_id": 5, "event_ts": ts, "pcc": 0.95},  # same key, other values: a duplicate, the first kept
        {"item_id": 6, "event_ts": ts + dt.timedelta(days=2)},  # outside the day
    ]
    # phase 1 boundaries: pcc exactly 0.9 / 0.3, timespent exactly 5 s, liked beats a skip
    for i, (pcc, spent, liked) in enumerate(
        [(0.9, 20.0, False), (0.9000001, 20.0, False), (0.3, 20.0, False), (0.2999, 20.0, False), (0.5, 5.0, False)]
        + [(0.5, 4.999, False), (0.1, 1.0, True), (10.0, 86_400.0, False), (0.0, 0.0, False)]
    ):
        rows.append(
            {
                "client_id": 2,
                "session_id": 20 + i % 2,
                "item_id": 100 + i,
                "pcc": pcc,
                "timespent_s": spent,
                "liked": liked,
            }
        )
    # a client at exactly the positive-CTR limit (9 of 10) and one above it (10 of 10)
    rows += [{"client_id": 3, "session_id": 30, "item_id": 200 + i, "pcc": 1.0 if i < 9 else 0.1} for i in range(10)]
    rows += [{"client_id": 4, "session_id": 40, "item_id": 200 + i, "pcc": 1.0} for i in range(10)]
    return interactions(rows)


def string_snapshot() -> pl.DataFrame:
    """A producer that writes strings and epoch milliseconds: parsed, and the unparseable quarantined."""
    return pl.DataFrame(
        {
            "client_id": ["1", "+2", "x3", " 4", "5", "99999999999999999999", "7", None],
            "session_id": [1, 1, 1, 1, 1, 1, 1, 1],
            "item_id": [7, 8, 9, 10, 11, 12, 13, 14],
            "event_ts": ["2026-11-02T10:00:00", "2026-11-02 10:00:01", "2026-11-02T10:00:02", "2026-11-02T10:00:03"]
            + ["not a time", "2026-11-02T10:00:05", "2026-11-02T10:00:06", "2026-11-02T10:00:07"],
            "timespent_s": [1, 2, 3, 4, 5, 6, 7, 8],
            "pcc": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
            "liked": ["true", "FALSE", "1", "maybe", "no", " yes ", None, "0"],
            "extra_column": ["dropped"] * 8,
        }
    )


def _rows(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` in a canonical row order (every column, nulls last)."""
    return df.sort(df.columns, nulls_last=True)


def assert_enforced_equal(spark_enforced, polars_enforced, day, rules=raw.SnapshotRules()):
    # the outputs as the engine writes them: counting the day summary as they run
    counted = sraw.count_summary(spark_enforced, day, rules)
    # Spark's parts are each in snapshot order, not the whole table: the same rows, compared sorted
    clean, quarantine = to_polars(counted.clean), to_polars(counted.quarantine)
    counted.observed.ran()
    assert _rows(clean).equals(_rows(polars_enforced.clean)), "accepted rows differ"
    assert _rows(quarantine).equals(_rows(polars_enforced.quarantine)), "quarantined rows differ (values or reasons)"
    # what the writes counted is what scans of their own count, the content hash included
    assert counted.summary == sraw.summarize(spark_enforced, day, rules)
    got = dataclasses.asdict(counted.summary)
    want = dataclasses.asdict(raw.summarize(polars_enforced, day, rules))
    got.pop("content_hash"), want.pop("content_hash")  # each engine's own digest
    assert got == want
    verdicts = lambda s: {k: v[0] for k, v in raw.day_verdicts(s, day, [], rules).items()}  # noqa: E731
    assert verdicts(sraw.summarize(spark_enforced, day, rules)) == verdicts(raw.summarize(polars_enforced, day, rules))


def test_settings_parse_and_map_urls():
    assert parse_conf("spark.executor.memory=4g, spark.sql.shuffle.partitions = 64") == {
        "spark.executor.memory": "4g",
        "spark.sql.shuffle.partitions": "64",
    }
    with pytest.raises(ValueError, match="not key=value"):
        parse_conf("spark.executor.memory")
    with pytest.raises(ValueError, match="letters and digits"):
        parse_scheme_map("s3=s3a://evil")
    assert spark_path("s3://bucket/a/b.parquet", {"s3": "s3a"}) == "s3a://bucket/a/b.parquet"
    assert spark_path("s3://bucket/a/b.parquet", {"s3": "s3"}) == "s3://bucket/a/b.parquet"
    assert spark_path("/tmp/x/../y.parquet", {}) == "file:///tmp/y.parquet"
    remote = spark_config(remote="sc://127.0.0.1:15002")
    assert remote["spark.remote"] == "sc://127.0.0.1:15002" and "spark.master" not in remote
    assert spark_config("local[2]", conf={"spark.sql.shuffle.partitions": "3"})["spark.sql.shuffle.partitions"] == "3"
    # a local session splits scans and shuffles into 4 tasks per core; a cluster keeps Spark's (and its own) settings
    assert {local_cores(m) for m in ("local", "local[1]", "local[1, 3]")} == {1}
    assert local_cores("local[*]") == len(os.sched_getaffinity(0)) and local_cores("local[8]") == 8
    assert local_cores("spark://host:7077") is None and local_cores("local-cluster[2,1,1024]") is None
    for k in ("spark.default.parallelism", "spark.sql.shuffle.partitions"):
        assert spark_config("local[2]")[k] == "8" and spark_config("local")[k] == "4"
        assert k not in spark_config("yarn") and k not in spark_config("local-cluster[2,1,1024]")
    with pytest.raises(ValueError, match="sc://"):
        spark_config(remote="http://127.0.0.1:15002")
    # MLlib ALS needs a checkpoint directory: a local session gets one, a cluster's comes from its conf
    assert spark_config("local[2]")["spark.checkpoint.dir"].endswith("recsys-spark-checkpoints")
    assert "spark.checkpoint.dir" not in spark_config("spark://host:7077") and "spark.checkpoint.dir" not in remote
    shared = {"spark.checkpoint.dir": "s3a://bucket/checkpoints"}
    assert spark_config("local[2]", conf=shared)["spark.checkpoint.dir"] == "s3a://bucket/checkpoints"
    # a local JVM gets the throughput collector; a deployment's own JVM options replace it, a cluster's are its own
    assert spark_config("local[2]")["spark.driver.extraJavaOptions"] == "-XX:+UseParallelGC"
    own = {"spark.driver.extraJavaOptions": "-Xss4m"}
    assert spark_config("local[2]", conf=own)["spark.driver.extraJavaOptions"] == "-Xss4m"
    assert "spark.driver.extraJavaOptions" not in spark_config("spark://host:7077")


@needs_java
def test_a_local_session_has_the_checkpoint_directory_mllib_als_needs(spark):
    """Without one MLlib never cuts its factors' lineage: a 15-iteration fit on a two-day window died with a
    StackOverflowError in the Spark daemon backfill (issue 12); train_als refuses a session without one."""
    from recsys_assets.spark.als_factors import checkpoint_dir

    found = checkpoint_dir(spark)
    assert found and "recsys-spark-checkpoints" in found


@needs_java
def test_dense_index_ranks_ids_across_range_parts(spark):
    """MLlib's 32-bit row and column indexes: each id's rank in id order, counted per range part and offset by the
    parts before it (no window over the whole frame in one task); the same from any input partitioning."""
    import numpy as np

    from recsys_assets.spark.als_factors import dense_index

    ids = sorted(int(x) for x in np.random.default_rng(5).choice(10**15, 5000, replace=False))
    df = spark.createDataFrame([(i,) for i in ids[::-1]], "item_id bigint")
    for frame, parts in ((df.repartition(5), 7), (df.repartition(1), 3), (df, None)):
        got = to_polars(dense_index(frame, "item_id", "col", parts).orderBy("item_id"))
        assert got["item_id"].to_list() == ids and got["col"].to_list() == list(range(len(ids)))
        assert got.schema["col"] == pl.Int32
    empty = dense_index(spark.createDataFrame([], "item_id bigint"), "item_id", "col", 4)
    assert empty.count() == 0 and empty.columns == ["item_id", "col"]
    # ranks within each language, the languages' rows spread over parts that hold several languages and split them
    langs = spark.createDataFrame([(("hi", "ta", "en")[i % 3], i) for i in ids], "language string, item_id bigint")
    want = pl.DataFrame({"language": [("hi", "ta", "en")[i % 3] for i in ids], "item_id": ids}).with_columns(
        pl.col("item_id").rank("ordinal").over("language").sub(1).cast(pl.Int32).alias("col")
    )
    for frame, parts in ((langs.repartition(4), 5), (langs, None)):
        got = to_polars(dense_index(frame, "item_id", "col", parts, within=["language"]))
        assert got.columns == ["language", "item_id", "col"]
        assert got.sort("language", "item_id").equals(want.sort("language", "item_id"))
    # the evaluation numbers its ids this way too, so it needs the checkpoint directory MLlib ALS needs
    from recsys_assets.spark.als_factors import require_checkpoint_dir

    class NoCheckpoints:  # the two places a session's checkpoint directory is read, both empty
        sparkContext = type("Context", (), {"getCheckpointDir": staticmethod(lambda: None)})()
        conf = type("Conf", (), {"get": staticmethod(lambda key, default=None: default)})()

    require_checkpoint_dir(spark, "als_evaluation on Spark")
    with pytest.raises(ValueError, match="als_evaluation on Spark needs a Spark checkpoint directory"):
        require_checkpoint_dir(NoCheckpoints(), "als_evaluation on Spark")
    with pytest.raises(ValueError, match="a null language"):
        dense_index(
            spark.createDataFrame([(None, 1)], "language string, item_id bigint"), "item_id", "c", within=["language"]
        )


@needs_java
def test_a_local_session_runs_the_throughput_collector(spark):
    """The JVM that spark_config's local settings start collects with ParallelGC (its two collectors), not G1."""
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    assert {b.getName() for b in beans} == {"PS Scavenge", "PS MarkSweep"}


@needs_java
def test_hostile_snapshots_are_enforced_alike(spark, tmp_path):
    day = dt.date(2026, 11, 2)
    for name, frame in (("hostile", hostile_snapshot()), ("strings", string_snapshot())):
        assert_enforced_equal(
            sraw.enforce_schema(spark_read(spark, tmp_path, frame, name)), raw.enforce_schema(frame), day
        )
    # the phases after it on the hostile day, boundaries included
    enforced = raw.enforce_schema(hostile_snapshot())
    s1 = sphase1.filter_interactions(spark_read(spark, tmp_path, enforced.clean, "clean"))
    p1 = phase1.filter_interactions(enforced.clean)
    assert to_polars(s1.interactions).sort(sphase1.SORT).equals(p1.interactions)  # parts in polars' order
    s1.observed.ran()  # the statistics and check counts were counted by that one job
    assert s1.stats == p1.stats and p1.stats["clients_dropped"] == 1
    assert s1.verdicts == phase1.validate(p1.interactions)


@needs_java
def test_snapshot_order_runs_across_files_by_name_and_the_content_hash_is_exact(spark, tmp_path):
    """A key repeated across files keeps the row of the first file by name, not by write order, as the polars
    stage reading the files in name order (the names need URL escaping); the summary's hash, summed as 32-bit
    halves, is exactly the sum of the 64-bit row hashes."""
    from pyspark.sql import functions as F

    ts = dt.datetime(2026, 11, 2, 8, tzinfo=dt.timezone.utc)
    row = {"client_id": 1, "session_id": 1, "item_id": 1, "event_ts": ts, "timespent_s": 5.0, "liked": False}
    folder = tmp_path / "snapshot"
    folder.mkdir()
    frames = {}
    for name, pcc in (("b part.parquet", 0.2), ("a part.parquet", 0.5), ("c%part.parquet", 0.9)):  # written b, a, c
        frames[name] = pl.DataFrame([{**row, "pcc": pcc}, {**row, "item_id": 10 + int(pcc * 10), "pcc": pcc}])
        frames[name].write_parquet(folder / name)
    in_name_order = pl.concat([frames[n] for n in sorted(frames)])
    day = dt.date(2026, 11, 2)
    expected = raw.enforce_schema(in_name_order)
    assert expected.clean.filter(pl.col("item_id") == 1)["pcc"].to_list() == [0.5]  # "a part" comes first
    enforced = sraw.enforce_schema(spark.read.parquet(str(folder)))
    assert_enforced_equal(enforced, expected, day)
    assert to_polars(enforced.quarantine)["quarantine_reason"].to_list() == ["duplicate", "duplicate"]

    metrics = sraw._clean_metrics(day, raw.SnapshotRules())
    halves = enforced.clean.agg(*[metrics[k].alias(k) for k in ("h1_high", "h1_low")]).collect()[0]
    decimal = enforced.clean.agg(F.sum(F.xxhash64(*raw.SCHEMA).cast("decimal(38,0)"))).collect()[0][0]
    assert (halves["h1_high"] << 32) + halves["h1_low"] == int(decimal)
    assert sraw._spellings("file:///tmp/a%20b.parquet") == ["file:///tmp/a%20b.parquet", "file:/tmp/a%20b.parquet"]
    assert sraw._spellings("s3a://bucket/day/part-0.parquet") == ["s3a://bucket/day/part-0.parquet"]


@needs_java
def test_pairs_repeated_by_the_url_join_fail_the_uniqueness_check_counted_as_they_are_written(spark, tmp_path):
    """The pair count emits each pair once; only the URL join after it could repeat a pair (an item twice in
    item_meta, which item_meta's blocking check stops). The verdict counted during the write sees it, and
    agrees with the checks run on their own over the table."""
    rows = [{"client_id": 1, "session_id": 1, "item_id": i, "pcc": 1.0} for i in (1, 2, 3)]
    rows += [{"client_id": 1, "session_id": 2, "item_id": 9, "pcc": 0.1}]
    filtered = phase1.filter_interactions(interactions(rows)).interactions
    meta = pl.DataFrame({"item_id": [1, 1, 2, 3, 9], "download_url": ["a", "b", "c", "d", "e"]})
    rules = phase3.PairRules(exclude_all_positive_sessions=False)
    s = sphase3.build_pairs(spark_read(spark, tmp_path, filtered, "f"), spark_read(spark, tmp_path, meta, "m"), rules)
    written = to_polars(s.pairs)
    s.observed.ran()
    assert written.height == 5  # (1,2) and (1,3) twice, (2,3) once
    assert s.verdicts["pairs_unique"] == (False, {"duplicate_pairs": 2, "null_keys": 0})
    assert s.verdicts == sphase3.validate(s.pairs, rules.min_num_clients)
    assert s.stats["positive_pairs"] == 3


def _random_day(first_id: int) -> pl.DataFrame:
    """A random day's interactions: 60 clients, 2 sessions of 6 rows each, 30 items numbered from ``first_id``."""
    import numpy as np

    rng = np.random.default_rng(7)
    rows = [
        {
            "client_id": c,
            "session_id": 10 * c + s,
            "item_id": first_id + int(rng.integers(30)),
            "pcc": float(rng.choice([0.95, 0.1, 0.5])),
        }
        for c in range(60)
        for s in range(2)
        for _ in range(6)
    ]
    return interactions(rows)


def _pair_day(first_id: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Phase 1's rows of :func:`_random_day`, and their items' URLs."""
    items = range(first_id, first_id + 30)
    meta = pl.DataFrame({"item_id": list(items), "download_url": [f"https://v.example/{i}.mp4" for i in items]})
    return phase1.filter_interactions(_random_day(first_id)).interactions, meta


@needs_java
def test_filtered_parts_are_in_the_polars_order(spark, tmp_path):
    """Phase 1 on Spark writes each part in the polars stage's order (client, session, time, item), whatever the
    order of the snapshot: its sort feeds the windows, so the optimizer keeps it (a sort that only a Project or
    Filter separates from a join or an aggregate, it drops)."""
    day = _random_day(1).sample(fraction=1.0, shuffle=True, seed=3)
    want = phase1.filter_interactions(day).interactions
    s = sphase1.filter_interactions(spark_read(spark, tmp_path, day))
    coalesce = "spark.sql.adaptive.coalescePartitions.enabled"  # a tiny day would otherwise be one part
    spark.conf.set(coalesce, "false")
    try:
        s.interactions.write.parquet(str(tmp_path / "filtered"))
    finally:
        spark.conf.unset(coalesce)
    s.observed.ran()
    parts = [pl.read_parquet(f) for f in sorted((tmp_path / "filtered").glob("part-*.parquet"))]
    assert len([p for p in parts if p.height]) >= 2
    assert all(p.equals(p.sort(sphase1.SORT)) for p in parts)
    assert pl.concat(parts).sort(sphase1.SORT).equals(want)


@needs_java
@pytest.mark.parametrize("first_id,packed", [(1, True), (2**31 - 30, True), (2**31 - 29, False), (-5, False)], ids=str)
@pytest.mark.parametrize("sort_aggregation", [True, False], ids=["sort-aggregation", "hash-aggregation"])
def test_pair_parts_are_in_the_polars_order_whatever_the_ids_and_the_aggregation(
    spark, tmp_path, first_id, packed, sort_aggregation
):
    """The pair key packs the ids into one long only where every id is in [0, 2**31); other ids are counted on
    the two columns. Either way, and whether the session aggregates sorted input by streaming or by hash, the
    pairs are the polars stage's and each written part is in its order: (negative last, item_id_1, item_id_2)."""
    filtered, meta = _pair_day(first_id)
    rules = phase3.PairRules(exclude_all_positive_sessions=False)
    want = phase3.build_pairs(filtered, meta, rules)
    before = spark.conf.get(sphase3.SORT_AGGREGATION)
    spark.conf.set(sphase3.SORT_AGGREGATION, str(sort_aggregation).lower())
    try:
        s = sphase3.build_pairs(
            spark_read(spark, tmp_path, filtered, "f"), spark_read(spark, tmp_path, meta, "m"), rules
        )
        s.pairs.write.parquet(str(tmp_path / "pairs"))
    finally:
        spark.conf.set(sphase3.SORT_AGGREGATION, before)
    s.observed.ran()
    assert s.key == sphase3.PairKey(packed=packed, sort_aggregation=sort_aggregation)
    parts = [pl.read_parquet(f) for f in sorted((tmp_path / "pairs").glob("part-*.parquet"))]
    order = [pl.col("pair_type") == "negative", "item_id_1", "item_id_2"]
    assert all(part.equals(part.sort(order)) for part in parts)
    got = pl.concat(parts).sort(order)
    as_strings = [pl.col(c).cast(pl.String) for c in ("pair_type", "download_url_1", "download_url_2")]
    assert got.equals(want.pairs.with_columns(as_strings))
    assert want.pairs["pair_type"].n_unique() == 2 and s.stats == want.stats
    assert sphase3.top_pairs(spark.read.parquet(str(tmp_path / "pairs"))).equals(phase3.top_pairs(want.pairs))
    clients = want.pairs.group_by("pair_type").agg(pl.col("num_clients").sum())
    assert s.pair_rows == {str(t): n for t, n in clients.iter_rows()}


@needs_java
def test_pairs_of_groups_with_null_keys_or_items_are_the_polars_ones(spark, tmp_path):
    """Phase 1's checks keep null keys out of its table, but phase 3 reads any table: a group with a null client or
    session counts as a group (size, cap) and makes no pairs, and a null item takes its place under the cap
    and pairs with nothing -- what the polars stage's joins on those keys give. Spark lists each group's items
    instead of joining, so it must agree."""
    rows = [
        # client 1: positives 1, 2, 3, a null item; a session with negatives 4, 5, 6 and one with 5, 6 again
        *[(1, 10, i, True) for i in (1, 2, 3, None)],
        *[(1, 11, i, False) for i in (4, 5, 6)],
        *[(1, 12, i, False) for i in (5, 6)],
        # client 2: negatives in a null session, and a session of one negative
        *[(2, None, i, False) for i in (4, 5)],
        (2, 20, 7, False),
        # a null client's positives and negatives
        *[(None, 30, i, True) for i in (1, 2)],
        *[(None, 31, i, False) for i in (4, 5)],
    ]
    frame = pl.DataFrame(
        {
            "client_id": [r[0] for r in rows],
            "session_id": [r[1] for r in rows],
            "item_id": [r[2] for r in rows],
            "is_positive": [r[3] for r in rows],
            "session_all_positive": [False] * len(rows),
        },
        schema_overrides={"client_id": pl.Int64, "session_id": pl.Int64, "item_id": pl.Int64},
    )
    meta = pl.DataFrame({"item_id": list(range(1, 8)), "download_url": [f"u{i}" for i in range(1, 8)]})
    as_strings = [pl.col(c).cast(pl.String) for c in ("pair_type", "download_url_1", "download_url_2")]
    order = [pl.col("pair_type") == "negative", "item_id_1", "item_id_2"]
    for rules in (
        phase3.PairRules(min_num_clients=2),  # every pair is below it: no rows and no top pairs
        phase3.PairRules(),
        phase3.PairRules(max_positive_items_per_client=3, max_negative_items_per_session=2, sample_seed=2),
    ):
        want = phase3.build_pairs(frame, meta, rules)
        s = sphase3.build_pairs(spark_read(spark, tmp_path, frame, "f"), spark_read(spark, tmp_path, meta, "m"), rules)
        got = to_polars(s.pairs).sort(order)
        s.observed.ran()
        assert got.equals(want.pairs.with_columns(as_strings)) and s.stats == want.stats
        top = sphase3.top_pairs(spark_read(spark, tmp_path, got, "t"))
        assert top.equals(phase3.top_pairs(want.pairs)) and top.height == min(want.pairs.height, phase3.TOP_PAIRS)
        if rules.min_num_clients > 1:
            assert want.pairs.is_empty() and want.stats["pairs_below_min_clients"] > 0
    assert want.stats["clients_capped"] == 1 and want.stats["sessions_capped"] == 1


@needs_java
def test_missing_columns_and_empty_days_fail_alike(spark, tmp_path):
    frame = hostile_snapshot()
    with pytest.raises(raw.SnapshotSchemaError) as polars_error:
        raw.enforce_schema(frame.drop("pcc"))
    with pytest.raises(raw.SnapshotSchemaError) as spark_error:
        sraw.enforce_schema(spark_read(spark, tmp_path, frame.drop("pcc")))
    assert str(spark_error.value) == str(polars_error.value)
    wrong = frame.with_columns(pl.col("pcc").cast(pl.String))
    with pytest.raises(raw.SnapshotSchemaError, match="'pcc' has type String"):
        sraw.enforce_schema(spark_read(spark, tmp_path, wrong, "wrong"))
    empty = frame.head(0)
    day = dt.date(2026, 11, 2)
    s, p = sraw.enforce_schema(spark_read(spark, tmp_path, empty, "empty")), raw.enforce_schema(empty)
    assert_enforced_equal(s, p, day)
    assert not raw.day_verdicts(sraw.summarize(s, day, raw.SnapshotRules()), day, [], raw.SnapshotRules())[
        "row_count_within_band"
    ][0]


@needs_java
@pytest.mark.parametrize("day", DAYS, ids=str)
def test_simulator_days_give_the_same_tables_stats_and_verdicts(spark, tmp_path, tiny_platform, day):
    snapshot = tiny_platform.interactions(day)
    enforced = raw.enforce_schema(snapshot)
    s_enforced = sraw.enforce_schema(spark_read(spark, tmp_path, snapshot))
    assert_enforced_equal(s_enforced, enforced, day)

    p1 = phase1.filter_interactions(enforced.clean)
    s1 = sphase1.filter_interactions(s_enforced.clean)
    with pytest.raises(NotYetObserved):  # counted as the table is written, not by a scan of their own
        _ = s1.stats
    filtered = to_polars(s1.interactions).sort(sphase1.SORT)
    s1.observed.ran()
    assert filtered.equals(p1.interactions) and s1.stats == p1.stats
    # the counts the write job observes, and the same checks run on their own over the table, agree with polars
    assert s1.verdicts == sphase1.validate(s1.interactions) == phase1.validate(p1.interactions)

    catalog = phase2.prepare_catalog(tiny_platform.catalog(), as_of=day)
    s_catalog = sphase2.prepare_catalog(
        spark_read(spark, tmp_path, tiny_platform.catalog(), "catalog"), as_of=day
    ).persist()
    assert to_polars(s_catalog).equals(catalog)
    assert sphase2.validate_catalog(s_catalog) == phase2.validate_catalog(catalog)

    meta = phase2.build_item_meta(p1.interactions, catalog)
    s_meta = sphase2.build_item_meta(s1.interactions, s_catalog)
    s_meta.items = s_meta.items.persist()
    got_meta = to_polars(s_meta.items)
    assert got_meta.equals(meta.items.with_columns(pl.col("num_interactions").cast(pl.Int64)))
    assert (s_meta.missing_count, s_meta.coverage) == (meta.missing.height, meta.coverage)
    assert sphase2.validate_item_meta(s_meta.items, s_meta.coverage, 0.99) == phase2.validate_item_meta(
        meta.items, meta.coverage, 0.99
    )

    # small caps, so that the seeded sampling under them is exercised too
    for rules in (
        phase3.PairRules(),
        phase3.PairRules(
            max_positive_items_per_client=3, max_negative_items_per_session=2, min_num_clients=2, sample_seed=5
        ),
    ):
        pairs = phase3.build_pairs(p1.interactions, meta.items, rules)
        s_pairs = sphase3.build_pairs(s1.interactions, s_meta.items, rules)
        as_strings = [pl.col(c).cast(pl.String) for c in ("pair_type", "download_url_1", "download_url_2")]
        order = [pl.col("pair_type") == "negative", "item_id_1", "item_id_2"]
        got = to_polars(s_pairs.pairs)
        s_pairs.observed.ran()
        assert got.sort(order).equals(pairs.pairs.with_columns(as_strings))
        assert s_pairs.stats == pairs.stats
        # the ten pairs with the most clients, many tied on the count: the same ten in the same order
        top = sphase3.top_pairs(spark_read(spark, tmp_path, got, "t"))
        assert top.equals(phase3.top_pairs(pairs.pairs)) and top["num_clients"].n_unique() < top.height
        want = phase3.validate(pairs.pairs, rules.min_num_clients)
        assert s_pairs.verdicts == sphase3.validate(s_pairs.pairs, rules.min_num_clients) == want
    assert pairs.stats["clients_capped"] > 0 and pairs.stats["sessions_capped"] > 0


PREP = (
    "raw_interactions",
    "raw_interactions_quarantine",
    "video_catalog",
    "filtered_interactions",
    "item_meta",
    "item_pairs",
)
SPARK_ENV = {
    "RECSYS_ENGINE": "spark",
    "RECSYS_SPARK_MASTER": "local[2]",
    "RECSYS_SPARK_CONF": "spark.sql.shuffle.partitions=2",
}
PIPES_ENV = {**SPARK_ENV, "RECSYS_ENGINE": "spark-subprocess"}
"""Each stage a Spark job in a subprocess, launched through Dagster Pipes: the EMR Serverless entry point."""
ENGINE_ENV = {"polars": {}, "spark": SPARK_ENV, "pipes": PIPES_ENV}


def _verdicts(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}.{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def _stored(root, key: str, day: str) -> pl.DataFrame:
    from recsys_assets.storage import LocalStore, read_parquet

    df = read_parquet(LocalStore(root / "assets"), f"{key}/{day}.parquet")
    # Spark's parts are each in the polars order, not the whole partition
    if key == "item_pairs":
        df = df.sort(pl.col("pair_type") == "negative", "item_id_1", "item_id_2")
    elif key == "filtered_interactions":
        df = df.sort(sphase1.SORT)
    elif key.startswith("raw_interactions"):
        df = _rows(df)
    return df.with_columns(
        [
            pl.col(c).cast(pl.String)
            for c, t in df.schema.items()
            if t in (pl.Categorical, pl.Enum) or isinstance(t, pl.Enum)
        ]
        + [pl.col(c).cast(pl.Int64) for c, t in df.schema.items() if t == pl.UInt32]
    )


def assert_evaluation_engines_agree(assets, root, platform: dict, spark_env: dict, day: str, model_day: str) -> None:
    """``als_evaluation`` of ``day`` on Spark (``spark_env``, the ``mllib`` engine) and in this process
    (``implicit``) from the same stored factors and days: each reports its engine and the model day, and the
    tables are equal (metrics within 1e-12)."""
    import dagster as dg

    from .conftest import tiny_resources

    tables = {}
    for name, env in (("mllib", spark_env), ("implicit", {})):
        result = dg.materialize(
            assets,
            selection=["als_evaluation"],
            partition_key=day,
            resources=tiny_resources(root, **platform, **env),
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
        md = result.asset_materializations_for_node("als_evaluation")[0].metadata
        assert md["engine"].value == name and md["model_partition"].value == model_day
        assert md["clients_evaluated"].value > 0
        tables[name] = _stored(root, "als_evaluation", day)
    metrics = [c for c in tables["implicit"].columns if "@" in c]
    assert tables["mllib"].drop(metrics).equals(tables["implicit"].drop(metrics))
    for m in metrics:
        assert tables["mllib"][m].to_list() == pytest.approx(tables["implicit"][m].to_list(), abs=1e-12, nan_ok=True)


@needs_java
def test_the_assets_on_spark_store_what_polars_stores_and_downstream_reads_it(spark, tmp_path_factory):
    """In-process Spark and the Pipes job (a subprocess running the EMR entry point) store what polars stores,
    with the same check verdicts; downstream assets read Spark's output and Spark reads polars'."""
    import dagster as dg

    from recsys_assets.defs import collaborative, data_prep
    from recsys_assets.storage import LocalStore, read_manifest

    from .conftest import tiny_assets, tiny_resources

    assets = tiny_assets(data_prep, collaborative)
    prep = [a for a in assets if a.keys & {dg.AssetKey(k) for k in PREP}]
    roots = {engine: tmp_path_factory.mktemp(engine) for engine in ENGINE_ENV}
    platform = {"RECSYS_SIM_ROOT": str(tmp_path_factory.mktemp("platform"))}  # one platform: the same media URLs
    day = "2026-11-02"
    results = {}
    for engine, root in roots.items():
        resources = tiny_resources(root, **platform, **ENGINE_ENV[engine])
        results[engine] = dg.materialize(
            prep, partition_key=day, resources=resources, instance=dg.DagsterInstance.ephemeral()
        )
        assert results[engine].success
    for engine in ("spark", "pipes"):
        assert _verdicts(results[engine]) == _verdicts(results["polars"]), engine
        store = LocalStore(roots[engine] / "assets")
        for key in PREP:
            manifest = read_manifest(store, f"{key}/{day}.parquet")
            assert manifest is not None and manifest["written_by"] == "spark", key  # written by Spark's executors
            assert _stored(roots[engine], key, day).equals(_stored(roots["polars"], key, day)), (engine, key)
    md = results["spark"].asset_materializations_for_node("filtered_interactions")[0].metadata
    assert md["engine"].value.startswith("spark (local[2]") and md["dagster/row_count"].value > 0
    # the Pipes job's report: the same statistics as in-process Spark, its row count from the manifest
    piped = results["pipes"].asset_materializations_for_node("filtered_interactions")[0].metadata
    assert piped["engine"].value.startswith("spark job via Dagster Pipes (subprocess, local[2]")
    for name in ("dagster/row_count", "positive", "negative", "neutral", "rows_dropped_with_clients"):
        assert piped[name].value == md[name].value, name
    assert piped["dagster/column_schema"].value == md["dagster/column_schema"].value
    spark_store = LocalStore(roots["spark"] / "assets")

    # downstream polars/implicit assets read Spark's output unchanged: ALS on the Spark-written day
    resources = tiny_resources(roots["spark"], **platform)
    config = {"ops": {"als_factors": {"config": {"min_cells_per_language": 50}}}}
    als = dg.materialize(
        assets,
        selection=["als_factors", "als_user_factors"],
        partition_key=day,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config=config,
    )
    assert als.success

    # ALS on MLlib through the Spark engine: the same asset, its factors stored by Spark and read back as polars'
    # fixed-size vectors
    mllib_config = {"ops": {"als_factors": {"config": {"min_cells_per_language": 50, "iterations": 2}}}}
    mllib = dg.materialize(
        assets,
        selection=["als_factors", "als_user_factors"],
        partition_key=day,
        resources=tiny_resources(roots["spark"], **platform, **SPARK_ENV),
        instance=dg.DagsterInstance.ephemeral(),
        run_config=mllib_config,
    )
    assert mllib.success
    assert mllib.asset_materializations_for_node("als_factors")[0].metadata["engine"].value == "mllib"
    assert read_manifest(spark_store, f"als_factors/{day}.parquet")["fixed_size"] == {"vector": 16}
    factors = _stored(roots["spark"], "als_factors", day)
    assert factors.schema["vector"] == pl.Array(pl.Float32, 16) and factors.height > 0

    # als_evaluation where ALS runs: on Spark's executors beside MLlib, in this process beside implicit -- the
    # same table from the same stored factors and days (the next day's interactions stored by polars)
    after = "2026-11-03"
    stored = dg.materialize(
        assets,
        selection=["raw_interactions", "raw_interactions_quarantine", "filtered_interactions"],
        partition_key=after,
        resources=tiny_resources(roots["spark"], **platform),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert stored.success
    assert_evaluation_engines_agree(assets, roots["spark"], platform, SPARK_ENV, after, "2026-11-02")

    # and Spark reads polars' output: phases 1-3 on Spark over the polars-written snapshot and catalog
    resources = tiny_resources(roots["polars"], **platform, **SPARK_ENV)
    mixed = dg.materialize(
        assets,
        selection=["filtered_interactions", "item_meta", "item_pairs"],
        partition_key=day,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert mixed.success
    polars_store = LocalStore(roots["polars"] / "assets")
    assert read_manifest(polars_store, f"item_pairs/{day}.parquet") is not None
    assert not polars_store.exists(f"item_pairs/{day}.parquet")  # the single object was replaced by the parts
    assert _stored(roots["polars"], "item_pairs", day).equals(_stored(roots["spark"], "item_pairs", day))


def test_without_java_the_polars_default_runs_and_spark_says_what_to_install(monkeypatch, tmp_path):
    import dagster as dg

    from recsys_assets.defs import data_prep
    from recsys_assets.defs.engine import PolarsEngine, SparkEngine

    from .conftest import tiny_assets, tiny_resources

    monkeypatch.setenv("PATH", str(tmp_path / "no-java-here"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert java_version() is None
    resources = tiny_resources(tmp_path)
    assert isinstance(resources["prep_engine"], PolarsEngine)
    assets = [a for a in tiny_assets(data_prep) if a.keys & {dg.AssetKey("raw_interactions")}]
    assert dg.materialize(assets, partition_key="2026-11-02", resources=resources).success
    spark_engine = tiny_resources(tmp_path, **SPARK_ENV)["prep_engine"]
    assert isinstance(spark_engine, SparkEngine)
    with pytest.raises(RuntimeError, match="openjdk-17-jre-headless"):
        _ = spark_engine.spark


@needs_java
def test_mllib_and_implicit_als_both_beat_popularity_and_agree_on_the_next_day(spark, tmp_path, tiny_platform):
    from recsys_assets.spark import als_evaluation as seval
    from recsys_assets.spark import als_factors as sals
    from recsys_assets.stages import als_evaluation as als_eval
    from recsys_assets.stages import als_factors as als

    days = [dt.date(2026, 11, 1) + dt.timedelta(days=i) for i in range(8)]
    filtered = {
        d: phase1.filter_interactions(raw.enforce_schema(tiny_platform.interactions(d)).clean).interactions
        for d in days
    }
    train, next_day = pl.concat([filtered[d] for d in days[:7]]), filtered[days[7]]
    languages = tiny_platform.catalog().select("item_id", "language")
    params = als.AlsParams(min_cells_per_language=50, iterations=6)
    implicit = als.train_als(train, languages, params)
    spark_train = spark_read(spark, tmp_path, train, "train")
    mllib = sals.train_als(spark_train, spark_read(spark, tmp_path, languages, "lang"), params)
    vectors = pl.col("vector").list.to_array(params.factors)
    items = to_polars(mllib.item_factors).with_columns(vectors)
    users = to_polars(mllib.user_factors).with_columns(vectors)
    got, want = sals.validate(mllib.item_factors, mllib.stats, 100.0), als.validate(items, mllib.stats, 100.0)
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in want.items()} and all(v[0] for v in got.values())
    assert got["norms_within_bounds"][1]["max_norm"] == pytest.approx(want["norms_within_bounds"][1]["max_norm"])
    trained = sorted(items["language"].unique())
    assert trained and set(trained) <= {s["language"] for s in implicit.stats if s["trained"]}
    for s in mllib.stats:  # the shared minimum counts: the same cells, items and clients before the solve
        same = next(t for t in implicit.stats if t["language"] == s["language"])
        assert {k: s[k] for k in ("cells", "cells_cancelled", "items_in_window", "clients_in_window")} == {
            k: same[k] for k in ("cells", "cells_cancelled", "items_in_window", "clients_in_window")
        }
    recall = {}
    for name, (itf, uf) in {
        "implicit": (implicit.item_factors, implicit.user_factors),
        "mllib": (items, users),
    }.items():
        keep = pl.col("language").is_in(trained)
        table, _ = als_eval.evaluate(itf.filter(keep), uf.filter(keep), train, next_day)
        overall = {r["method"]: r["recall@50"] for r in als_eval.overall(table).iter_rows(named=True)}
        assert overall["als"] > overall["popularity"], (name, overall)
        recall[name] = overall["als"]
    assert abs(recall["mllib"] - recall["implicit"]) <= 0.1 * recall["implicit"], recall

    # als_evaluation on Spark's executors: the polars stage's table and counts from MLlib's factors as Spark
    # holds them, with blocks small enough that every language with more items than a block is split
    spark_next_day = spark_read(spark, tmp_path, next_day, "next_day")
    for exclude_seen in (True, False):
        want, want_counts = als_eval.evaluate(items, users, train, next_day, exclude_seen=exclude_seen)
        got, got_counts = seval.evaluate(
            mllib.item_factors,
            mllib.user_factors,
            spark_train,
            spark_next_day,
            exclude_seen=exclude_seen,
            client_block=16,
            item_block=32,
        )
        assert got_counts == want_counts and any(c["clients_evaluated"] > 16 for c in got_counts)
        assert any(c["items_in_model"] > 32 for c in got_counts)
        assert got.select("language", "method", "clients").equals(want.select("language", "method", "clients"))
        for metric in [c for c in want.columns if "@" in c]:  # the same rankings; means summed in another order
            assert got[metric].to_list() == pytest.approx(want[metric].to_list(), abs=1e-12, nan_ok=True), metric
    # deterministic to the bit, whatever the blocks (one block per language here): each client's top 100 is the
    # same, and the means are exact decimal sums, not float sums in arrival order
    again, _ = seval.evaluate(mllib.item_factors, mllib.user_factors, spark_train, spark_next_day, exclude_seen=False)
    assert again.equals(got)


@needs_java
def test_als_evaluation_edge_cases_give_the_polars_table(spark, tmp_path):
    """Hand-built factors and days: a language with items but no client, a client with a NaN vector, tied
    scores, targets the client saw in the window (left out), a positive on an item no model has, and a day with
    no positive at all (every language evaluated on no client: NaN metrics, zero clients)."""
    from recsys_assets.spark import als_evaluation as seval
    from recsys_assets.stages import als_evaluation as als_eval

    vec = pl.Array(pl.Float32, 2)
    items = pl.DataFrame(
        {
            "item_id": [1, 2, 3, 4, 5, 6, 7],
            "language": ["a", "a", "a", "a", "a", "b", "b"],
            "vector": [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
        }
    ).with_columns(pl.col("vector").cast(vec))
    users = pl.DataFrame(
        {
            "client_id": [10, 11, 12, 13],
            "language": ["a", "a", "a", "a"],
            "vector": [[1.0, 0.0], [0.0, 1.0], [float("nan"), 0.0], [1.0, 1.0]],
        }
    ).with_columns(pl.col("vector").cast(vec))

    def day(rows):
        return pl.DataFrame(
            rows, schema={"client_id": pl.Int64, "item_id": pl.Int64, "is_positive": pl.Boolean}, orient="row"
        )

    train = day([(10, 1, True), (10, 3, False), (11, 2, True), (11, 2, True), (13, 4, True), (12, 5, False)])
    next_day = day(
        [
            (10, 2, True),
            (10, 3, True),
            (10, 1, True),
            (11, 1, True),
            (11, 99, True),
            (12, 4, True),
            (13, 4, True),
            (13, 5, False),
        ]
    )
    frames = {"items": items, "users": users, "train": train, "next_day": next_day, "empty": next_day.clear()}
    sdf = {name: spark_read(spark, tmp_path, frame, name) for name, frame in frames.items()}
    for today in ("next_day", "empty"):
        want, want_counts = als_eval.evaluate(items, users, train, frames[today])
        got, got_counts = seval.evaluate(
            sdf["items"], sdf["users"], sdf["train"], sdf[today], client_block=2, item_block=2
        )
        assert got_counts == want_counts, today
        assert got.select("language", "method", "clients").equals(want.select("language", "method", "clients"))
        for metric in [c for c in want.columns if "@" in c]:
            assert got[metric].to_list() == pytest.approx(want[metric].to_list(), abs=1e-12, nan_ok=True), metric
    assert [c["clients_evaluated"] for c in want_counts] == [0, 0]  # the empty day: no client, no metric
