"""Whole days that are wrong while every row looks fine, on real files and a real instance: an empty
delivery, a truncated one, another day's rows in the folder, a re-delivered day, implausible values,
writers' leftovers, unreadable files -- each stops at a blocking check or a clear error, naming what."""

import datetime as dt
import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest

from recsys_assets.defs import data_prep
from recsys_assets.sources.lake import read_snapshot
from recsys_assets.stages.raw_interactions import SCHEMA, SnapshotRules, enforce_schema
from recsys_assets.storage import ParquetReadError

from .conftest import tiny_assets, tiny_resources

ASSETS = tiny_assets(data_prep)
SELECT = ["raw_interactions", "raw_interactions_quarantine", "filtered_interactions"]
D0 = dt.date(2026, 11, 1)


def day_rows(day: dt.date, n: int = 300, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed + day.toordinal())
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    return pl.DataFrame(
        {
            "client_id": rng.integers(1, 60, n),
            "session_id": rng.integers(1, 500, n),
            "item_id": rng.integers(1, 40, n),
            "event_ts": [start + dt.timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, 86_399, n))],
            "timespent_s": rng.uniform(0.5, 60.0, n),
            "pcc": rng.uniform(0.0, 1.2, n),
            "liked": rng.random(n) < 0.1,
        },
        schema=SCHEMA,
    )


def write_day(lake, day: dt.date, df: pl.DataFrame, name: str = "part-0.parquet") -> None:
    folder = lake / f"dt={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    df.write_parquet(folder / name)


def run(tmp_path, instance, day: dt.date, **config):
    resources = tiny_resources(
        tmp_path,
        RECSYS_SOURCE="lake",
        RECSYS_SNAPSHOT_URL_TEMPLATE=str(tmp_path / "lake" / "dt={date}"),
        RECSYS_CATALOG_URI=str(tmp_path / "no-catalog"),
    )
    return dg.materialize(
        ASSETS,
        partition_key=day.isoformat(),
        selection=SELECT,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"raw_interactions": {"config": config}}} if config else None,
    )


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["raw_interactions"]}


def materialized(result) -> set[str]:
    return {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.fixture
def four_good_days(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    for i in range(4):
        day = D0 + dt.timedelta(days=i)
        write_day(tmp_path / "lake", day, day_rows(day))
        res = run(tmp_path, instance, day)
        assert res.success and all(c.passed for c in checks(res).values()), checks(res)
    return instance


def test_an_empty_delivery_fails_and_stops_downstream(tmp_path, four_good_days):
    day = D0 + dt.timedelta(days=4)
    write_day(tmp_path / "lake", day, day_rows(day).clear())
    res = run(tmp_path, four_good_days, day)
    c = checks(res)
    assert not res.success and not c["row_count_within_band"].passed
    assert c["row_count_within_band"].metadata["problem"].value == "the day has no usable row"
    assert "filtered_interactions" not in materialized(res)


def test_a_truncated_delivery_is_outside_the_band_of_the_trailing_median(tmp_path, four_good_days):
    day = D0 + dt.timedelta(days=4)
    write_day(tmp_path / "lake", day, day_rows(day).head(40))
    res = run(tmp_path, four_good_days, day)
    band = checks(res)["row_count_within_band"]
    assert not res.success and not band.passed
    assert band.metadata["trailing_median"].value == 300.0 and band.metadata["rows"].value == 40


def test_another_days_rows_in_the_folder_fail_two_checks(tmp_path, four_good_days):
    day, other = D0 + dt.timedelta(days=4), D0 + dt.timedelta(days=1)
    # the original failure: without the day checks (as before) such a folder passed green
    write_day(tmp_path / "lake", day, day_rows(other))
    old = run(tmp_path, dg.DagsterInstance.ephemeral(), day, max_outside_day_share=1.0, window_days=0)
    assert old.success and all(c.passed for c in checks(old).values())
    # now
    res = run(tmp_path, four_good_days, day)
    c = checks(res)
    assert not res.success
    assert not c["event_ts_within_day"].passed and c["event_ts_within_day"].metadata["outside_share"].value == 1.0
    assert not c["content_unique_in_window"].passed
    assert c["content_unique_in_window"].metadata["same_content_as"].value == [other.isoformat()]


def test_a_re_delivered_day_is_recognised_whatever_its_files(tmp_path, four_good_days):
    """The same rows, re-sorted and split over two files, in a later day's folder whose timestamps were
    shifted to look right: only the content hash can tell."""
    day, source = D0 + dt.timedelta(days=4), D0 + dt.timedelta(days=2)
    rows = day_rows(source).with_columns(pl.col("event_ts") + dt.timedelta(days=2))
    res_distinct = run(tmp_path, four_good_days, source)  # re-materializing a day compares with the others only
    assert checks(res_distinct)["content_unique_in_window"].passed
    # the same rows as day 2, but with day 4's dates: a different content; now copy day 2's file as is
    shutil.copytree(tmp_path / "lake" / f"dt={source}", tmp_path / "lake" / f"dt={day}")
    res = run(tmp_path, four_good_days, day, max_outside_day_share=1.0)
    assert not checks(res)["content_unique_in_window"].passed
    shuffled = day_rows(source).sample(fraction=1.0, shuffle=True, seed=1)
    shutil.rmtree(tmp_path / "lake" / f"dt={day}")
    write_day(tmp_path / "lake", day, shuffled.head(100), "part-0.parquet")
    write_day(tmp_path / "lake", day, shuffled.tail(200), "part-1.parquet")
    res = run(tmp_path, four_good_days, day, max_outside_day_share=1.0)
    assert checks(res)["content_unique_in_window"].metadata["same_content_as"].value == [source.isoformat()]
    shutil.rmtree(tmp_path / "lake" / f"dt={day}")
    write_day(tmp_path / "lake", day, rows)
    assert checks(run(tmp_path, four_good_days, day))["content_unique_in_window"].passed


def test_implausible_values_are_quarantined_not_classified(tmp_path):
    day = D0
    rows = day_rows(day, 20)
    bad = rows.head(2).with_columns(pcc=pl.Series([50.0, 0.5]), timespent_s=pl.Series([10.0, 1e12]))
    df = pl.concat([rows.tail(18), bad])
    # the original failure: with no plausible maximum, the pcc = 50 row became a positive
    old = enforce_schema(df, SnapshotRules(max_pcc=float("inf"), max_timespent_s=float("inf")))
    assert old.quarantine.height == 0
    # now
    out = enforce_schema(df)
    assert out.reason_counts() == {"pcc_above_max": 1, "timespent_s_above_max": 1}
    assert out.clean.height == 18 and out.clean["pcc"].max() <= 1.2
    write_day(tmp_path / "lake", day, df)
    res = run(tmp_path, dg.DagsterInstance.ephemeral(), day, max_quarantine_share=0.2)
    assert res.success
    assert checks(res)["quarantine_share_below_max"].metadata["pcc_above_max"].value == 1
    assert res.asset_value("filtered_interactions")["pcc"].max() <= 1.2


def test_writers_leftovers_are_never_read(tmp_path):
    day = D0
    folder = tmp_path / "lake" / f"dt={day}"
    good, stray = day_rows(day, 50), day_rows(day, 30, seed=9)
    write_day(tmp_path / "lake", day, good)
    (folder / "_temporary" / "0").mkdir(parents=True)
    stray.write_parquet(folder / "_temporary" / "0" / "part-00001.parquet")
    stray.write_parquet(folder / ".part-00002.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-0.parquet.crc").write_bytes(b"crc")
    (folder / "_committed_123").write_text("{}")
    # the original failure: every parquet file below the folder was data (a plain glob even takes the dotfile)
    assert pl.read_parquet(folder / "**" / "*.parquet").height == 110
    # now
    assert read_snapshot(str(tmp_path / "lake" / "dt={date}"), day).height == 50


def test_the_template_may_name_a_folder_a_file_or_a_glob(tmp_path):
    day = D0
    write_day(tmp_path / "lake", day, day_rows(day, 10), "part-0.parquet")
    write_day(tmp_path / "lake", day, day_rows(day, 7, seed=2), "part-1.parquet")
    lake = tmp_path / "lake"
    assert read_snapshot(str(lake / "dt={date}/"), day).height == 17
    assert read_snapshot(str(lake / "dt={date}/part-0.parquet"), day).height == 10
    assert read_snapshot(str(lake / "dt={date}/part-1.*"), day).height == 7
    assert read_snapshot(str(lake / "dt={date}/*.parquet"), day).height == 17
    assert read_snapshot(str(lake / "*={date}/part-*.parquet"), day).height == 17


@pytest.mark.parametrize("content", [b"", b"PAR1 not really", "truncated"])
def test_an_unreadable_file_is_named_with_what_was_expected(tmp_path, content):
    day = D0
    write_day(tmp_path / "lake", day, day_rows(day, 10))
    bad = tmp_path / "lake" / f"dt={day}" / "part-9.parquet"
    if content == "truncated":
        day_rows(day, 10).write_parquet(bad)
        bad.write_bytes(bad.read_bytes()[:-20])
    else:
        bad.write_bytes(content)
    with pytest.raises(ParquetReadError, match=r"part-9\.parquet \(\d+ bytes\) is not a readable parquet file"):
        read_snapshot(str(tmp_path / "lake" / "dt={date}"), day)


def test_a_partition_whose_blocking_check_failed_is_refused_by_later_readers(tmp_path, four_good_days):
    day = D0 + dt.timedelta(days=4)
    write_day(tmp_path / "lake", day, day_rows(day).head(40))  # truncated: blocking check fails ...
    assert not run(tmp_path, four_good_days, day).success
    assert (tmp_path / "assets" / "raw_interactions" / f"{day}.parquet").exists()  # ... but the file is there
    # a later run of the downstream asset alone must not use it (it used to, and ended RUN_SUCCESS)
    resources = tiny_resources(
        tmp_path,
        RECSYS_SOURCE="lake",
        RECSYS_SNAPSHOT_URL_TEMPLATE=str(tmp_path / "lake" / "dt={date}"),
        RECSYS_CATALOG_URI=str(tmp_path / "no-catalog"),
    )

    def downstream_only():
        return dg.materialize(
            ASSETS,
            partition_key=day.isoformat(),
            selection=["filtered_interactions"],
            resources=resources,
            instance=four_good_days,
            raise_on_error=False,
        )

    res = downstream_only()
    assert not res.success
    [failure] = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert f"raw_interactions partition {day} is not used" in message and "row_count_within_band" in message
    # fixed at the source and re-materialized: readers take it again
    write_day(tmp_path / "lake", day, day_rows(day))
    assert run(tmp_path, four_good_days, day).success
    assert downstream_only().success


def test_an_unreadable_catalog_is_named(tmp_path):
    from recsys_assets.sources.lake import CatalogReadError, read_catalog

    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "part-0.parquet").write_bytes(b"not a delta table")
    with pytest.raises(CatalogReadError, match=r"video catalog Delta table .*video at version 3"):
        read_catalog(str(tmp_path / "video"), version=3)


def test_glob_templates_and_leftovers_on_s3(s3_env, tmp_path):
    endpoint, bucket, client = s3_env
    day = D0
    for key, n in (("part-0.parquet", 10), ("part-1.parquet", 5), ("_temporary/0/part-2.parquet", 7)):
        path = tmp_path / key.replace("/", "_")
        day_rows(day, n, seed=n).write_parquet(path)
        client.upload_file(str(path), bucket, f"snap/dt={day}/{key}")
    client.put_object(Bucket=bucket, Key=f"snap/dt={day}/_SUCCESS", Body=b"")
    opts = {"endpoint_url": endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    assert read_snapshot(f"s3://{bucket}/snap/dt={{date}}/", day, **opts).height == 15
    assert read_snapshot(f"s3://{bucket}/snap/dt={{date}}/part-1.parquet", day, **opts).height == 5
    assert read_snapshot(f"s3://{bucket}/snap/dt={{date}}/part-*.parquet", day, **opts).height == 15
