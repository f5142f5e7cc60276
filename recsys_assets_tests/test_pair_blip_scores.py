"""pair_blip_scores on hand-made data and on random data checked against plain-Python invariants."""

import numpy as np
import polars as pl

from recsys_assets.stages.pair_blip_scores import ScoreRules, histogram, score_pairs, summary, validate, window_pairs

VEC = {1: [1, 0, 0], 2: [0.6, 0.8, 0], 3: [0, 1, 0], 4: [0, 0, 1], 5: [-1, 0, 0], 6: [0, -0.6, 0.8]}


def embeddings(vectors=VEC, failed=(7,)):
    rows = [(i, "ok", np.asarray(v, np.float32) / np.linalg.norm(v)) for i, v in vectors.items()]
    rows += [(i, "failed", None) for i in failed]
    dim = len(next(iter(vectors.values())))
    return pl.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "status": [r[1] for r in rows],
            "blip_embedding": pl.Series(
                [None if r[2] is None else r[2].tolist() for r in rows], dtype=pl.Array(pl.Float32, dim)
            ),
        }
    )


def frames():
    pairs = pl.DataFrame(
        {
            "item_id_1": [1, 1, 2, 1, 4],
            "item_id_2": [2, 3, 3, 7, 5],
            "pair_type": ["positive", "positive", "positive", "positive", "negative"],
            "num_clients": [1, 1, 2, 1, 3],
        }
    )
    served = pl.DataFrame({"client_id": [10, 10, 10, 10, 11, 11, 11, 12, 12], "item_id": [1, 2, 3, 5, 2, 3, 4, 1, 7]})
    positive = {(10, 1), (10, 2), (10, 3), (11, 2), (11, 3), (12, 1), (12, 7)}
    filtered = served.with_columns(is_positive=pl.Series([(c, i) in positive for c, i in served.iter_rows()])).filter(
        pl.col("is_positive") | (pl.col("item_id") == 4)
    )
    return pairs, filtered, served


def test_hand_made_day():
    pairs, filtered, served = frames()
    res = score_pairs(pairs, embeddings(), filtered, served, ScoreRules(bucket_edges=(0.0, 0.5), negative_attempts=64))
    out = res.pairs
    pos = out.filter(pl.col("pair_type") == "positive").sort("item_id_1", "item_id_2")
    assert pos.select("item_id_1", "item_id_2").rows() == [
        (1, 2),
        (1, 3),
        (1, 7),
        (2, 3),
    ]  # the co-skip pair is not used
    sims = dict(zip(zip(pos["item_id_1"], pos["item_id_2"]), pos["similarity"].to_list()))
    assert abs(sims[(1, 2)] - 0.6) < 1e-6 and abs(sims[(1, 3)]) < 1e-6 and abs(sims[(2, 3)] - 0.8) < 1e-6
    assert sims[(1, 7)] is None
    assert pos.filter(pl.col("item_id_2") == 7)["unscored_reason"].to_list() == ["no_embedding_item_2"]
    witness = dict(zip(zip(pos["item_id_1"], pos["item_id_2"]), pos["witness_client_id"].to_list()))
    assert witness[(1, 2)] == 10 and witness[(1, 3)] == 10 and witness[(2, 3)] in (10, 11)
    neg = out.filter(pl.col("pair_type") == "negative")
    assert neg.height == 3
    seen = {c: set(served.filter(pl.col("client_id") == c)["item_id"]) for c in (10, 11, 12)}
    for row in neg.iter_rows(named=True):
        anchor = pos.filter(pl.col("anchor") == row["anchor"]).row(0, named=True)
        assert row["witness_client_id"] == anchor["witness_client_id"] and row["item_id_1"] == anchor["item_id_1"]
        assert row["item_id_2"] not in seen[row["witness_client_id"]] | {anchor["item_id_2"]}
        assert row["item_id_2"] != 7  # only embedded items are drawn
        want = float(
            np.dot(
                np.asarray(VEC[row["item_id_1"]]) / np.linalg.norm(VEC[row["item_id_1"]]),
                np.asarray(VEC[row["item_id_2"]]) / np.linalg.norm(VEC[row["item_id_2"]]),
            )
        )
        assert abs(row["similarity"] - want) < 1e-6
    # fixed edges (0, 0.5): bucket 0 below 0, 1 in [0, 0.5), 2 from 0.5
    scored = out.filter(pl.col("similarity").is_not_null())
    want_bucket = np.searchsorted([0.0, 0.5], scored["similarity"].to_numpy(), side="right")
    assert scored["bucket"].to_list() == want_bucket.tolist()
    assert out.filter(pl.col("similarity").is_null())["bucket"].null_count() == 1
    checks = validate(res, pairs, served)
    for name in ("scores_finite_in_unit_interval", "every_pair_scored_or_reported", "negatives_not_interacted"):
        assert checks[name][0], name
    assert res.stats["positive_pairs_unscored"] == 1 and res.stats["negatives"] == 3
    assert summary(out).height == 2 and "positive" in histogram(out)


def test_checks_catch_a_bad_output():
    pairs, filtered, served = frames()
    res = score_pairs(pairs, embeddings(), filtered, served, ScoreRules(negative_attempts=64))
    bad = res.pairs.with_columns(
        item_id_2=pl.when(pl.col("pair_type") == "negative").then(pl.lit(2, pl.Int64)).otherwise(pl.col("item_id_2"))
    )
    res.pairs = bad
    assert validate(res, pairs, served)["negatives_not_interacted"][0] is False
    res.pairs = bad.filter(~((pl.col("item_id_1") == 1) & (pl.col("item_id_2") == 3)))
    assert validate(res, pairs, served)["every_pair_scored_or_reported"][0] is False
    res.pairs = bad.with_columns(similarity=pl.col("similarity") * 3)
    assert validate(res, pairs, served)["scores_finite_in_unit_interval"][0] is False


def test_random_day_against_plain_python():
    rng = np.random.default_rng(4)
    n_items, n_clients = 60, 40
    vectors = {i: rng.standard_normal(8).tolist() for i in range(1, n_items + 1)}
    served_rows = [
        (c, int(i)) for c in range(n_clients) for i in rng.choice(np.arange(1, n_items + 1), 12, replace=False)
    ]
    served = pl.DataFrame(served_rows, schema={"client_id": pl.Int64, "item_id": pl.Int64}, orient="row")
    filtered = served.with_columns(is_positive=pl.Series(rng.random(served.height) < 0.5))
    pos_by_client = {}
    for c, i, p in filtered.iter_rows():
        if p:
            pos_by_client.setdefault(c, set()).add(i)
    pairs = sorted({(a, b) for items in pos_by_client.values() for a in items for b in items if a < b})
    item_pairs = pl.DataFrame(
        {
            "item_id_1": [a for a, _ in pairs],
            "item_id_2": [b for _, b in pairs],
            "pair_type": ["positive"] * len(pairs),
            "num_clients": [1] * len(pairs),
        }
    )
    res = score_pairs(item_pairs, embeddings(vectors, failed=()), filtered, served, ScoreRules(num_buckets=4))
    out = res.pairs
    unit = {i: np.asarray(v) / np.linalg.norm(v) for i, v in vectors.items()}
    seen = {}
    for c, i in served_rows:
        seen.setdefault(c, set()).add(i)
    for row in out.iter_rows(named=True):
        assert abs(row["similarity"] - float(unit[row["item_id_1"]] @ unit[row["item_id_2"]])) < 1e-5
        w = row["witness_client_id"]
        if row["pair_type"] == "positive":
            assert {row["item_id_1"], row["item_id_2"]} <= pos_by_client[w]
        else:
            assert row["item_id_2"] not in seen[w]
    assert out.filter(pl.col("pair_type") == "positive").height == len(pairs)
    # quantile buckets: four nearly equal groups
    counts = out["bucket"].value_counts()["count"].to_numpy()
    assert len(counts) == 4 and counts.min() >= 0.2 * out.height
    assert all(
        v[0] for k, v in validate(res, item_pairs, served).items() if k != "positives_more_similar_than_negatives"
    )


def window_frame(rows):
    """rows: (client, session, item, is_positive, session_all_positive)."""
    return pl.DataFrame(
        rows,
        schema={
            "client_id": pl.Int64,
            "session_id": pl.Int64,
            "item_id": pl.Int64,
            "is_positive": pl.Boolean,
            "session_all_positive": pl.Boolean,
        },
        orient="row",
    )


def test_window_pairs_count_distinct_clients_across_sessions_and_filter_by_cowatch():
    rows = [
        # client 1 watches 1 and 2 in different sessions (days): one co-watch of (1, 2)
        (1, 10, 1, True, False),
        (1, 10, 9, False, False),
        (1, 11, 2, True, False),
        # client 2 watches (1, 2) twice in two sessions: still one client
        (2, 20, 1, True, False),
        (2, 20, 2, True, False),
        (2, 20, 8, False, False),
        (2, 21, 1, True, False),
        (2, 21, 2, True, False),
        (2, 21, 3, True, False),
        (2, 21, 8, False, False),
        # client 3: (2, 3) and (1, 3), but only in an all-positive session: not counted
        (3, 30, 1, True, True),
        (3, 30, 2, True, True),
        (3, 30, 3, True, True),
        # client 4: (1, 3) in a qualifying session
        (4, 40, 1, True, False),
        (4, 40, 3, True, False),
        (4, 40, 7, False, False),
    ]
    window = window_frame(rows)
    # plain Python: per qualifying client, its positive items; pairs counted by distinct clients
    items_of = {}
    for c, _, i, pos, allpos in rows:
        if pos and not allpos:
            items_of.setdefault(c, set()).add(i)
    counts = {}
    for items in items_of.values():
        for a in items:
            for b in items:
                if a < b:
                    counts[(a, b)] = counts.get((a, b), 0) + 1
    assert counts == {(1, 2): 2, (1, 3): 2, (2, 3): 1}
    for min_cowatch in (1, 2, 3):
        got = window_pairs(window, ScoreRules(min_cowatch_clients=min_cowatch)).pairs
        want = {k: v for k, v in counts.items() if v >= min_cowatch}
        assert dict(zip(zip(got["item_id_1"], got["item_id_2"]), got["num_clients"])) == want
        assert set(got["pair_type"].cast(pl.String)) <= {"positive"}


def test_a_witness_from_an_all_positive_session_is_never_used():
    # pair (1, 2): client 5 had both positive only in an all-positive session, client 6 in a qualifying one.
    # Client 5's seeded hash may sort first; it must never be the witness.
    rows = [(5, 50, 1, True, True), (5, 50, 2, True, True), (6, 60, 1, True, False), (6, 60, 2, True, False)]
    rows += [(6, 60, 3, False, False)]
    window = window_frame(rows)
    pairs = pl.DataFrame({"item_id_1": [1], "item_id_2": [2], "pair_type": ["positive"], "num_clients": [1]})
    served = window.select("client_id", "item_id")
    vectors = {i: np.eye(4)[i % 4].tolist() for i in range(1, 9)}
    for seed in range(8):
        res = score_pairs(pairs, embeddings(vectors, failed=()), window, served, ScoreRules(seed=seed))
        pos = res.pairs.filter(pl.col("pair_type") == "positive")
        assert pos["witness_client_id"].to_list() == [6], seed
        assert validate(res, pairs, served, window)["witnesses_qualify"][0]
    # without the session flag client 5 may be chosen; with it, only a qualifying witness passes the check
    forged = res.pairs.with_columns(witness_client_id=pl.lit(5, pl.Int64))
    res.pairs = forged
    assert validate(res, pairs, served, window)["witnesses_qualify"][0] is False


def test_a_quarantined_interaction_blocks_the_item_as_a_negative():
    # the witness (client 1) has a quarantined row on item 4: only item 5 may be its negative
    window = window_frame([(1, 10, 1, True, False), (1, 10, 2, True, False), (1, 10, 3, False, False)])
    quarantined = pl.DataFrame(
        {"client_id": [1, None], "item_id": [4, 6]}, schema={"client_id": pl.Int64, "item_id": pl.Int64}
    )
    served = pl.concat([window.select("client_id", "item_id"), quarantined])
    pairs = pl.DataFrame({"item_id_1": [1], "item_id_2": [2], "pair_type": ["positive"], "num_clients": [1]})
    vectors = {i: np.eye(6)[i - 1].tolist() for i in range(1, 6)}
    for seed in range(10):
        res = score_pairs(
            pairs, embeddings(vectors, failed=()), window, served, ScoreRules(seed=seed, negative_attempts=32)
        )
        neg = res.pairs.filter(pl.col("pair_type") == "negative")
        assert neg["item_id_2"].to_list() == [5], seed
        assert validate(res, pairs, served, window)["negatives_not_interacted"][0]


def test_identical_output_for_the_same_inputs_in_any_row_order():
    rng = np.random.default_rng(11)
    rows = [
        (int(c), int(c) * 10 + int(s), int(i), bool(rng.random() < 0.6), False)
        for c in range(30)
        for s in range(2)
        for i in rng.choice(np.arange(1, 41), 6, replace=False)
    ]
    window = window_frame(rows).unique(["client_id", "session_id", "item_id"], keep="first", maintain_order=True)
    served = window.select("client_id", "item_id")
    emb = embeddings({i: rng.standard_normal(8).tolist() for i in range(1, 41)}, failed=())
    rules = ScoreRules(min_cowatch_clients=1)

    def run(w, s, e):
        pairs = window_pairs(w, rules).pairs
        return score_pairs(pairs, e, w, s, rules).pairs

    first = run(window, served, emb)
    assert first.height > 40
    for seed in range(3):
        again = run(
            window.sample(fraction=1.0, shuffle=True, seed=seed),
            served.sample(fraction=1.0, shuffle=True, seed=seed),
            emb.sample(fraction=1.0, shuffle=True, seed=seed),
        )
        assert again.equals(first)
        assert again.write_ipc(None).getvalue() == first.write_ipc(None).getvalue()  # bit-identical


def test_witness_is_the_smallest_hash_client_with_both_items_positive():
    """The clients'-side witness search gives, per anchor, exactly the brute-force choice."""
    import numpy as np

    from recsys_assets.stages.pair_blip_scores import _witnesses

    rng = np.random.default_rng(3)
    positives = pl.DataFrame({"client_id": rng.integers(0, 80, 900), "item_id": rng.integers(0, 40, 900)})
    pairs = (
        positives.join(positives, on="client_id", suffix="_2")
        .filter(pl.col("item_id") < pl.col("item_id_2"))
        .select(item_id_1="item_id", item_id_2="item_id_2")
        .unique()
        .sort("item_id_1", "item_id_2")
        .with_row_index("anchor")
    )
    got = _witnesses(pairs, positives, seed=5, buckets=3).sort("anchor")
    both = (
        pairs.join(positives.rename({"item_id": "item_id_1"}), on="item_id_1")
        .join(positives.rename({"item_id": "item_id_2"}), on=["client_id", "item_id_2"], how="semi")
        .group_by("anchor")
        .agg(pl.col("client_id").sort_by(pl.col("client_id").hash(5), pl.col("client_id")).first())
        .sort("anchor")
    )
    assert got.height == pairs.height and got.equals(both.select("anchor", "client_id"))


def test_window_pairs_counted_in_passes_equal_phase_3s_pairs():
    """The multi-pass count (a bucket of first items per pass, so the window's client pairs are never in memory
    together) gives phase 3's positive pairs exactly -- same pairs, counts, order and stats -- with the
    per-client cap applied."""
    from recsys_assets.stages import item_pairs as phase3

    rng = np.random.default_rng(4)
    n = 6_000
    rows = list(
        zip(
            rng.integers(0, 300, n).tolist(),
            rng.integers(0, 40, n).tolist(),
            rng.integers(0, 120, n).tolist(),
            (rng.random(n) < 0.7).tolist(),
            (rng.random(n) < 0.05).tolist(),
        )
    )
    window = window_frame(rows)
    for min_cowatch, cap in ((1, 200), (2, 200), (3, 10)):
        rules = ScoreRules(min_cowatch_clients=min_cowatch, max_positive_items_per_client=cap)
        want = phase3.build_pairs(
            window.filter(pl.col("is_positive")),
            None,
            phase3.PairRules(min_num_clients=min_cowatch, max_positive_items_per_client=cap, sample_seed=rules.seed),
        )
        one = window_pairs(window, rules)
        many = window_pairs(window, rules, max_pairs_per_pass=2_000)
        assert many.stats["pair_passes"] > 3 and one.stats["pair_passes"] == 1
        expected = want.pairs.select("item_id_1", "item_id_2", "pair_type", "num_clients")
        assert one.pairs.equals(expected) and many.pairs.equals(expected)
        for key in (
            "clients_with_positive_pairs",
            "clients_capped",
            "sessions_excluded_all_positive",
            "pairs_before_min_clients",
            "pairs_below_min_clients",
            "positive_pairs",
        ):
            assert one.stats[key] == many.stats[key] == want.stats[key], key
