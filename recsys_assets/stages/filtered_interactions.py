"""Phase 1 of seed 000: classify interactions, drop neutrals, drop clients with a too-high positive-CTR.

Rules (thresholds are parameters; defaults are the seed's):

1. Positive if ``pcc > 0.9`` or the client liked the item.
2. Otherwise Negative if ``timespent_s < 5`` (bounce/skip at 5 s) or ``pcc < 0.3``.
3. Otherwise Neutral -- dropped.
4. Positive-CTR of a client = positives / (positives + negatives) over the day's classified rows;
   clients with positive-CTR strictly above 0.9 are dropped (bots, auto-play, everything-likers).

One snapshot row is one served item in one session, so "positive items" are counted as rows.
Before neutrals go, each session is flagged ``session_all_positive`` when every item served in it
was positive: seed 000's refinement ("the user should not have watched/liked all the videos
served") needs the whole feed, which is gone after filtering.
"""

from __future__ import annotations

import dataclasses

import polars as pl

LABEL = "is_positive"
OUTPUT_COLUMNS = (
    "client_id",
    "session_id",
    "item_id",
    "event_ts",
    "timespent_s",
    "pcc",
    "liked",
    LABEL,
    "session_all_positive",
)


@dataclasses.dataclass(frozen=True)
class Phase1Rules:
    """Seed 000, phase 1. Defaults are the seed's thresholds."""

    positive_pcc_above: float = 0.9
    """Positive when play completion (pcc) is above this, or the client liked the item."""
    negative_timespent_below_s: float = 5.0
    """Negative when time spent is below this many seconds (bounce / skip) ..."""
    negative_pcc_below: float = 0.3
    """... or play completion is below this."""
    max_client_positive_ctr: float = 0.9
    """Clients whose positive / (positive + negative) is above this are dropped."""


@dataclasses.dataclass(frozen=True)
class Phase1Result:
    interactions: pl.DataFrame
    stats: dict[str, int]
    """rows_in, positive, negative, neutral, clients_in, clients_dropped, rows_dropped_with_clients, rows_out."""


def interaction_class(rules: Phase1Rules) -> pl.Expr:
    """1 positive, -1 negative, 0 neutral -- the seed's rules in their order."""
    return (
        pl.when((pl.col("pcc") > rules.positive_pcc_above) | pl.col("liked"))
        .then(pl.lit(1, pl.Int8))
        .when((pl.col("timespent_s") < rules.negative_timespent_below_s) | (pl.col("pcc") < rules.negative_pcc_below))
        .then(pl.lit(-1, pl.Int8))
        .otherwise(pl.lit(0, pl.Int8))
    )


def filter_interactions(clean: pl.DataFrame | pl.LazyFrame, rules: Phase1Rules = Phase1Rules()) -> Phase1Result:
    lf = clean.lazy().with_columns(interaction_class(rules).alias("__cls"))
    sessions = lf.group_by("client_id", "session_id").agg((pl.col("__cls") == 1).all().alias("session_all_positive"))
    clients = (
        lf.filter(pl.col("__cls") != 0)
        .group_by("client_id")
        .agg(pos=(pl.col("__cls") == 1).sum(), neg=(pl.col("__cls") == -1).sum())
        .with_columns(ctr=pl.col("pos") / (pl.col("pos") + pl.col("neg")))
    )
    keep_clients = clients.filter(pl.col("ctr") <= rules.max_client_positive_ctr).select("client_id")
    out_lf = (
        lf.filter(pl.col("__cls") != 0)
        .join(keep_clients, on="client_id", how="semi")
        .join(sessions, on=["client_id", "session_id"], how="left")
        .with_columns((pl.col("__cls") == 1).alias(LABEL))
        .select(OUTPUT_COLUMNS)
        .sort("client_id", "session_id", "event_ts", "item_id")  # joins do not keep order: the output's is fixed
    )
    counts_lf = lf.select(
        rows_in=pl.len(),
        positive=(pl.col("__cls") == 1).sum(),
        negative=(pl.col("__cls") == -1).sum(),
        neutral=(pl.col("__cls") == 0).sum(),
    )
    clients_lf = clients.select(
        clients_classified=pl.len(),
        clients_dropped=(pl.col("ctr") > rules.max_client_positive_ctr).sum(),
        rows_dropped_with_clients=pl.when(pl.col("ctr") > rules.max_client_positive_ctr)
        .then(pl.col("pos") + pl.col("neg"))
        .otherwise(0)
        .sum(),
    )
    out, counts, client_counts = pl.collect_all([out_lf, counts_lf, clients_lf])
    stats = {**counts.row(0, named=True), **client_counts.row(0, named=True), "rows_out": out.height}
    return Phase1Result(out, {k: int(v or 0) for k, v in stats.items()})


def validate(df: pl.DataFrame, rules: Phase1Rules = Phase1Rules()) -> dict[str, tuple[bool, dict]]:
    """The data-quality checks of phase 1's output: name -> (passed, metadata)."""
    neutral = df.filter(interaction_class(rules) == 0).height
    mislabelled = df.filter((interaction_class(rules) == 1) != pl.col(LABEL)).height
    ctr = df.group_by("client_id").agg(pl.col(LABEL).mean().alias("ctr"))
    over = ctr.filter(pl.col("ctr") > rules.max_client_positive_ctr).height
    null_keys = df.select(
        pl.any_horizontal(pl.col(c).is_null() for c in ("client_id", "session_id", "item_id")).sum()
    ).item()
    return verdicts(neutral, mislabelled, over, float(ctr["ctr"].max() or 0.0), int(null_keys))


def verdicts(
    neutral: int, mislabelled: int, clients_above: int, max_ctr: float, null_keys: int
) -> dict[str, tuple[bool, dict]]:
    """Phase 1's check verdicts from their counts (any engine computes the counts)."""
    return {
        "no_neutral_rows": (
            neutral == 0 and mislabelled == 0,
            {"neutral_rows": neutral, "mislabelled_rows": mislabelled},
        ),
        "no_client_above_ctr": (clients_above == 0, {"clients_above": clients_above, "max_ctr": max_ctr}),
        "keys_not_null": (null_keys == 0, {"rows_with_null_key": int(null_keys)}),
    }
