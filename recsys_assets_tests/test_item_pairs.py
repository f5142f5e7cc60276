import itertools

import numpy as np
import polars as pl

from recsys_assets.stages import item_pairs as phase3
from recsys_assets.stages.filtered_interactions import filter_interactions
from recsys_assets.stages.item_pairs import PAIR_TYPE, PairRules, build_pairs, validate

from .conftest import interactions


def phase1(rows):
    return filter_interactions(interactions(rows)).interactions


def as_set(pairs: pl.DataFrame, pair_type: str) -> dict[tuple[int, int], int]:
    p = pairs.filter(pl.col("pair_type") == pair_type)
    return {(a, b): n for a, b, n in p.select("item_id_1", "item_id_2", "num_clients").iter_rows()}


POS, NEG = {"pcc": 1.0}, {"pcc": 0.1}
NEUTRAL_NEG_MIX = [{"item_id": 900 + i, "pcc": 0.1, "session_id": 99} for i in range(3)]


def test_positive_pairs_span_sessions_and_count_each_client_once():
    rows = [
        {"client_id": 1, "session_id": 1, "item_id": 1, **POS},
        {"client_id": 1, "session_id": 2, "item_id": 2, **POS},
        {"client_id": 1, "session_id": 3, "item_id": 1, **POS},  # item 1 again in another session
        {"client_id": 1, "session_id": 3, "item_id": 2, **POS},
        {"client_id": 2, "session_id": 5, "item_id": 2, **POS},
        {"client_id": 2, "session_id": 5, "item_id": 1, **POS},
    ]
    rows += [{**r, "client_id": c} for c in (1, 2) for r in NEUTRAL_NEG_MIX]
    res = build_pairs(phase1(rows), rules=PairRules(exclude_all_positive_sessions=False))
    assert as_set(res.pairs, "positive") == {(1, 2): 2}


def test_negative_pairs_only_within_a_session():
    rows = [
        {"client_id": 1, "session_id": 1, "item_id": 5, **NEG},
        {"client_id": 1, "session_id": 1, "item_id": 3, **NEG},
        {"client_id": 1, "session_id": 2, "item_id": 4, **NEG},
        {"client_id": 1, "session_id": 2, "item_id": 1, **POS},
    ]
    res = build_pairs(phase1(rows))
    assert as_set(res.pairs, "negative") == {(3, 5): 1}


def test_negative_pair_repeated_in_sessions_counts_one_client():
    rows = [{"client_id": 1, "session_id": s, "item_id": i, **NEG} for s in (1, 2) for i in (7, 8)]
    rows += [{"client_id": 1, "session_id": 3, "item_id": 1, **POS}]
    rows += [{"client_id": 2, "session_id": 9, "item_id": i, **NEG} for i in (8, 7)]
    rows += [{"client_id": 2, "session_id": 9, "item_id": 1, **POS}]
    res = build_pairs(phase1(rows))
    assert as_set(res.pairs, "negative") == {(7, 8): 2}


def test_single_item_clients_make_no_pairs():
    rows = [{"client_id": c, "item_id": c, **POS} for c in range(5)] + [
        {"client_id": c, "item_id": 100 + c, "session_id": 2, **NEG} for c in range(5)
    ]
    res = build_pairs(phase1(rows))
    assert res.pairs.is_empty()
    assert res.stats["clients_with_positive_pairs"] == 0


def test_all_positive_sessions_are_left_out_when_configured():
    rows = [
        {"client_id": 1, "session_id": 1, "item_id": 1, **POS},
        {"client_id": 1, "session_id": 1, "item_id": 2, **POS},  # session 1: all watched
        {"client_id": 1, "session_id": 2, "item_id": 3, **POS},
        {"client_id": 1, "session_id": 2, "item_id": 4, **POS},
        {"client_id": 1, "session_id": 2, "item_id": 5, **NEG},
        {"client_id": 1, "session_id": 2, "item_id": 6, **NEG},
    ]
    on = build_pairs(phase1(rows), rules=PairRules(exclude_all_positive_sessions=True))
    off = build_pairs(phase1(rows), rules=PairRules(exclude_all_positive_sessions=False))
    assert set(as_set(on.pairs, "positive")) == {(3, 4)}
    assert on.stats["sessions_excluded_all_positive"] == 1
    assert len(as_set(off.pairs, "positive")) == 6  # 4 items -> 6 pairs


def test_min_num_clients_filters_and_is_counted():
    rows = []
    for c in (1, 2):
        rows += [{"client_id": c, "item_id": i, "session_id": 1, **POS} for i in (1, 2)]
        rows += [{"client_id": c, "item_id": 50 + i, "session_id": 2, **NEG} for i in (1, 2)]
    rows += [{"client_id": 3, "item_id": i, "session_id": 1, **POS} for i in (1, 3)]
    rows += [{"client_id": 3, "item_id": 60, "session_id": 2, **NEG}]
    res = build_pairs(phase1(rows), rules=PairRules(min_num_clients=2, exclude_all_positive_sessions=False))
    assert as_set(res.pairs, "positive") == {(1, 2): 2}
    assert as_set(res.pairs, "negative") == {(51, 52): 2}
    assert res.stats["pairs_below_min_clients"] == 1
    assert all(ok for ok, _ in validate(res.pairs, 2).values())


def test_cap_bounds_pairs_per_client_deterministically():
    rows = [{"client_id": 1, "item_id": i, "session_id": 1, **POS} for i in range(30)]
    rows += [{"client_id": 1, "item_id": 1000 + i, "session_id": 2, **NEG} for i in range(10)]  # CTR 0.75
    rules = PairRules(max_positive_items_per_client=10, exclude_all_positive_sessions=False)
    a = build_pairs(phase1(rows), rules=rules)
    b = build_pairs(phase1(rows), rules=rules)
    assert len(as_set(a.pairs, "positive")) == 10 * 9 // 2
    assert a.stats["clients_capped"] == 1
    assert a.pairs.equals(b.pairs)


def test_pairs_are_canonical_and_carry_both_urls():
    rows = [{"client_id": 1, "item_id": i, "session_id": 1, **POS} for i in (9, 3, 6)]
    rows += [{"client_id": 1, "item_id": 70, "session_id": 2, **NEG}]
    meta = pl.DataFrame({"item_id": [3, 6, 9, 70], "download_url": [f"file:///m/{i}.mp4" for i in (3, 6, 9, 70)]})
    res = build_pairs(phase1(rows), meta, PairRules(exclude_all_positive_sessions=False))
    assert (res.pairs["item_id_1"] < res.pairs["item_id_2"]).all()
    row = res.pairs.filter((pl.col("item_id_1") == 3) & (pl.col("item_id_2") == 9)).row(0, named=True)
    assert row["download_url_1"].endswith("/3.mp4") and row["download_url_2"].endswith("/9.mp4")


def test_validate_flags_bad_pairs():
    bad = pl.DataFrame(
        {"item_id_1": [2, 1, 1], "item_id_2": [1, 2, 2], "pair_type": ["positive"] * 3, "num_clients": [1, 0, 1]}
    )
    v = validate(bad, 1)
    assert not v["pairs_canonical"][0] and not v["pairs_unique"][0] and not v["num_clients_at_least_min"][0]


def test_validate_counts_duplicates_whether_sorted_or_not():
    def frame(t, a, b):
        return pl.DataFrame(
            {"item_id_1": a, "item_id_2": b, "pair_type": pl.Series(t, dtype=PAIR_TYPE), "num_clients": [1] * len(a)}
        )

    ok = frame(["positive", "positive", "negative"], [1, 1, 1], [2, 3, 2])
    assert validate(ok, 1)["pairs_unique"][0]
    sorted_dup = frame(["positive", "positive", "negative"], [1, 1, 1], [2, 2, 3])
    unsorted_dup = frame(["positive", "negative", "positive"], [1, 1, 1], [2, 3, 2])
    unsorted_ok = frame(["negative", "positive"], [1, 1], [2, 2])
    assert validate(sorted_dup, 1)["pairs_unique"][1]["duplicate_pairs"] == 1
    assert validate(unsorted_dup, 1)["pairs_unique"][1]["duplicate_pairs"] == 1
    assert validate(unsorted_ok, 1)["pairs_unique"][0]


def test_pairs_match_a_plain_python_reference_on_random_days():
    """The packed-key counting against the seed's rules written out with sets, on random data."""
    rng = np.random.default_rng(3)
    n = 4000
    rows = pl.DataFrame(
        {
            "client_id": rng.integers(1, 60, n),
            "item_id": rng.integers(10**12, 10**12 + 80, n),  # large ids: the dense index must hide them
            "is_positive": rng.random(n) < 0.5,
        }
    ).with_columns(
        session_id=pl.col("client_id") * 10 + pl.lit(rng.integers(0, 3, n)),
        session_all_positive=pl.lit(False),
    )
    got = build_pairs(rows, rules=PairRules(max_positive_items_per_client=10**6, max_negative_items_per_session=10**6))
    want: dict[tuple[int, int, str], set[int]] = {}
    pos = rows.filter(pl.col("is_positive")).group_by("client_id").agg(pl.col("item_id").unique())
    for c, items in pos.iter_rows():
        for a, b in itertools.combinations(sorted(items), 2):
            want.setdefault((a, b, "positive"), set()).add(c)
    neg = rows.filter(~pl.col("is_positive")).group_by("client_id", "session_id").agg(pl.col("item_id").unique())
    for c, _, items in neg.iter_rows():
        for a, b in itertools.combinations(sorted(items), 2):
            want.setdefault((a, b, "negative"), set()).add(c)
    got_map = {
        (a, b, t): n
        for a, b, t, n in got.pairs.select("item_id_1", "item_id_2", "pair_type", "num_clients").iter_rows()
    }
    assert got_map == {k: len(v) for k, v in want.items()}
    assert validate(got.pairs, 1)["pairs_unique"][0]
    assert (
        got.pairs.select("pair_type", "item_id_1", "item_id_2").to_dicts()
        == got.pairs.sort("pair_type", "item_id_1", "item_id_2")
        .select("pair_type", "item_id_1", "item_id_2")
        .to_dicts()
    )


def test_top_pairs_break_ties_alike_for_the_enum_and_a_plain_string_pair_type():
    """The asset's top pairs: most clients first, ties positive before negative, then by item ids -- whatever the
    row order and whether ``pair_type`` is the stage's enum or the string a Spark-written table holds."""
    rows = pl.DataFrame(
        {
            "item_id_1": [3, 1, 2, 4, 5],
            "item_id_2": [7, 5, 6, 8, 9],
            "pair_type": ["negative", "negative", "positive", "positive", "positive"],
            "num_clients": [3, 3, 3, 1, 9],
        }
    )
    want = [(5, 9, "positive", 9), (2, 6, "positive", 3), (1, 5, "negative", 3), (3, 7, "negative", 3)]
    as_enum = rows.with_columns(pl.col("pair_type").cast(PAIR_TYPE))
    for frame in (rows, as_enum, rows.reverse(), as_enum.reverse()):
        top = phase3.top_pairs(frame, 4)
        assert top.rows() == want and dict(top.schema) == phase3.TOP_SCHEMA
    assert phase3.top_pairs(rows.clear()).is_empty()
