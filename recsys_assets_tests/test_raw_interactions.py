import datetime as dt
import math

import polars as pl
import pytest

from recsys_assets.stages.raw_interactions import SnapshotSchemaError, enforce_schema

from .conftest import interactions


def test_clean_rows_pass_untouched():
    df = interactions([{"item_id": i} for i in range(5)])
    out = enforce_schema(df)
    assert out.quarantine.height == 0
    assert out.clean.equals(df)


@pytest.mark.parametrize(
    "row,reason",
    [
        ({"client_id": None}, "null_client_id"),
        ({"session_id": None}, "null_session_id"),
        ({"item_id": None}, "null_item_id"),
        ({"pcc": math.nan}, "bad_pcc"),
        ({"pcc": -0.1}, "bad_pcc"),
        ({"pcc": math.inf}, "bad_pcc"),
        ({"pcc": None}, "bad_pcc"),
        ({"timespent_s": math.nan}, "bad_timespent_s"),
        ({"timespent_s": -3.0}, "bad_timespent_s"),
        ({"liked": None}, "null_liked"),
        ({"event_ts": None}, "null_event_ts"),
    ],
)
def test_each_kind_of_bad_row_is_quarantined_with_its_reason(row, reason):
    df = interactions([{"item_id": 1}, {"item_id": 2, **row}, {"item_id": 3}])
    out = enforce_schema(df)
    assert out.clean["item_id"].to_list() == [1, 3]
    assert out.quarantine.height == 1
    assert out.reason_counts() == {reason: 1}
    assert out.clean.height + out.quarantine.height == df.height


def test_exact_duplicates_are_quarantined_but_the_first_copy_is_kept():
    ts = dt.datetime(2026, 11, 2, 8, tzinfo=dt.timezone.utc)
    df = interactions([{"item_id": 1, "event_ts": ts}, {"item_id": 1, "event_ts": ts}, {"item_id": 1, "event_ts": ts}])
    out = enforce_schema(df)
    assert out.clean.height == 1
    assert out.reason_counts() == {"duplicate": 2}


def test_same_item_in_another_session_is_not_a_duplicate():
    ts = dt.datetime(2026, 11, 2, 8, tzinfo=dt.timezone.utc)
    df = interactions([{"session_id": 1, "event_ts": ts}, {"session_id": 2, "event_ts": ts}])
    assert enforce_schema(df).quarantine.height == 0


def test_string_columns_are_parsed_and_unparseable_values_quarantined():
    df = pl.DataFrame(
        {
            "client_id": ["1", "2", "x3", "4"],
            "session_id": [1, 1, 1, 1],
            "item_id": [7, 8, 9, 10],
            "event_ts": ["2026-11-02T10:00:00", "not a time", "2026-11-02T10:00:02", "2026-11-02T10:00:03"],
            "timespent_s": [1.0, 2.0, 3.0, 4.0],
            "pcc": [0.1, 0.2, 0.3, 0.4],
            "liked": ["true", "false", "1", "maybe"],
        }
    )
    out = enforce_schema(df)
    assert out.clean["client_id"].to_list() == [1]
    assert out.clean["event_ts"].dtype == pl.Datetime("us", "UTC")
    assert out.reason_counts() == {"unparseable_event_ts": 1, "unparseable_client_id": 1, "unparseable_liked": 1}


def test_epoch_millisecond_timestamps_are_accepted():
    df = interactions([{}]).with_columns(event_ts=pl.lit(1_793_000_000_000, pl.Int64))
    out = enforce_schema(df)
    assert out.clean["event_ts"][0] == dt.datetime.fromtimestamp(1_793_000_000, tz=dt.timezone.utc)


def test_missing_column_fails_naming_it():
    df = interactions([{}]).drop("pcc")
    with pytest.raises(SnapshotSchemaError, match=r"missing column\(s\) \['pcc'\]"):
        enforce_schema(df)


def test_incompatible_type_fails_naming_the_column():
    df = interactions([{}]).with_columns(pl.col("pcc").cast(pl.String))
    with pytest.raises(SnapshotSchemaError, match="'pcc' has type String"):
        enforce_schema(df)


def test_extra_columns_are_dropped_and_order_normalised():
    df = (
        interactions([{}])
        .with_columns(extra=pl.lit("x"))
        .select(["extra", "pcc", "liked", "client_id", "session_id", "item_id", "event_ts", "timespent_s"])
    )
    out = enforce_schema(df)
    assert out.clean.columns == ["client_id", "session_id", "item_id", "event_ts", "timespent_s", "pcc", "liked"]
