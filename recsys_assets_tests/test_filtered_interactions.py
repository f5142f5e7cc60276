import polars as pl
import pytest

from recsys_assets.stages.filtered_interactions import Phase1Rules, filter_interactions, validate

from .conftest import interactions


def classify(**row) -> str:
    """The class one row gets, seen through phase 1 (a second, negative row keeps the client's CTR legal)."""
    df = interactions([{"item_id": 1, **row}, {"item_id": 2, "pcc": 0.1, "timespent_s": 1.0}])
    out = filter_interactions(df).interactions.filter(pl.col("item_id") == 1)
    if out.is_empty():
        return "neutral"
    return "positive" if out["is_positive"][0] else "negative"


@pytest.mark.parametrize(
    "row,expected",
    [
        ({"pcc": 0.9, "timespent_s": 20.0}, "neutral"),  # exactly 0.9 is not above 90 %
        ({"pcc": 0.9000001, "timespent_s": 20.0}, "positive"),
        ({"pcc": 1.7, "timespent_s": 40.0}, "positive"),  # loops
        ({"pcc": 0.3, "timespent_s": 20.0}, "neutral"),  # exactly 0.3 is not below 30 %
        ({"pcc": 0.2999, "timespent_s": 20.0}, "negative"),
        ({"pcc": 0.5, "timespent_s": 5.0}, "neutral"),  # exactly 5 s is not a bounce
        ({"pcc": 0.5, "timespent_s": 4.999}, "negative"),
        ({"pcc": 0.05, "timespent_s": 1.0, "liked": True}, "positive"),  # a like wins over a skip
        ({"pcc": 0.95, "timespent_s": 2.0}, "positive"),  # completed a 2 s video: positive first
    ],
)
def test_rule_boundaries(row, expected):
    assert classify(**row) == expected


def client_rows(client: int, pos: int, neg: int, neutral: int = 0) -> list[dict]:
    rows = [{"client_id": client, "item_id": i, "pcc": 1.0} for i in range(pos)]
    rows += [{"client_id": client, "item_id": 100 + i, "pcc": 0.1} for i in range(neg)]
    rows += [{"client_id": client, "item_id": 200 + i, "pcc": 0.5} for i in range(neutral)]
    return rows


def test_client_at_exactly_90_percent_ctr_is_kept_and_above_is_dropped():
    df = interactions(
        client_rows(1, pos=9, neg=1, neutral=5) + client_rows(2, pos=10, neg=1) + client_rows(3, pos=5, neg=0)
    )
    res = filter_interactions(df)
    kept = set(res.interactions["client_id"].unique().to_list())
    assert kept == {1, 2} - {2} | {1}  # client 2 has 10/11 = 0.909 > 0.9; client 3 has 1.0
    assert kept == {1}
    assert res.stats["clients_dropped"] == 2
    assert res.stats["rows_dropped_with_clients"] == 11 + 5
    assert res.stats["neutral"] == 5
    assert res.stats["rows_out"] == 10


def test_neutrals_do_not_count_in_ctr():
    # 1 positive, 1 negative and many neutrals: CTR 0.5, kept
    df = interactions(client_rows(1, pos=1, neg=1, neutral=20))
    assert filter_interactions(df).interactions.height == 2


def test_thresholds_are_configurable():
    df = interactions(client_rows(1, pos=9, neg=1))
    assert filter_interactions(df, Phase1Rules(max_client_positive_ctr=0.85)).interactions.is_empty()


def test_session_all_positive_flag_uses_the_whole_feed_before_neutrals_go():
    rows = [
        {"session_id": 1, "item_id": 1, "pcc": 1.0},
        {"session_id": 1, "item_id": 2, "pcc": 0.95},  # session 1: every served item positive
        {"session_id": 2, "item_id": 3, "pcc": 1.0},
        {"session_id": 2, "item_id": 4, "pcc": 0.5},  # session 2 had a neutral: not all positive
        {"session_id": 3, "item_id": 5, "pcc": 0.1},
        {"session_id": 3, "item_id": 6, "pcc": 0.1},
    ]
    out = filter_interactions(interactions(rows)).interactions
    flags = dict(zip(out["session_id"], out["session_all_positive"]))
    assert flags == {1: True, 2: False, 3: False}
    assert 4 not in out["item_id"].to_list()


def test_validate_catches_neutrals_and_high_ctr_clients():
    good = filter_interactions(interactions(client_rows(1, pos=2, neg=2))).interactions
    assert all(ok for ok, _ in validate(good).values())
    bad = good.with_columns(pcc=pl.lit(0.5), liked=pl.lit(False), timespent_s=pl.lit(30.0))
    assert validate(bad)["no_neutral_rows"][0] is False
    greedy = good.with_columns(is_positive=pl.lit(True), pcc=pl.lit(1.0))
    assert validate(greedy)["no_client_above_ctr"][0] is False
