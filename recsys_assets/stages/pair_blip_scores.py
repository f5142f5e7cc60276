"""Seed 000 "after inputs": positive pairs over the training window and sampled negatives, scored by BLIP
similarity and bucketed.

* Positives (:func:`window_pairs`): over the training window (D-6 .. D), each client's fully watched /
  liked items of its *qualifying* sessions -- not every served video watched or liked -- are paired
  across sessions and days; a pair is counted by the distinct clients who co-watched it and kept when
  at least ``min_cowatch_clients`` did (the seed: "filter based on the number of times they have been
  full watched/liked together by different users across sessions").
* Negatives, one per positive pair (its *anchor*): the pair's *witness* is one client who had both items
  positive in qualifying sessions of the window (the smallest seeded hash among them; a client seen only
  in all-positive sessions is never a witness); the negative pairs ``item_id_1`` with an item drawn
  uniformly from the day's embedded items that the witness never interacted with anywhere in the window
  (any snapshot row counts, neutral and quarantined ones included: a quarantined row is still an
  interaction), nor either anchor item. ``max_anchors`` caps how many positive pairs get a negative
  (a seeded hash picks them).
* Score: cosine of the two ``blip_embedding`` s (unit vectors, so their dot product), in [-1, 1].
* Bucket: ``searchsorted(edges, similarity, side="right")``. The edges are given (config, or read from a
  reference partition's stored edges by the asset), else the quantiles of the whole window's scores
  (``num_buckets`` equal-count buckets); they are stored with the asset either way.
* Every positive pair appears once: unscored ones (an item without an embedding) keep a null
  ``similarity`` and an ``unscored_reason``.
* Deterministic: every frame that feeds a random draw is sorted first, so the same inputs in any row
  order and the same seed give identical output.
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import polars as pl

from . import item_pairs as phase3
from .ranking_metrics import auc

PAIR_TYPE = pl.Enum(["positive", "negative"])


@dataclasses.dataclass(frozen=True)
class ScoreRules:
    min_cowatch_clients: int = 2
    """Keep a positive pair co-watched by at least this many distinct clients over the window (ablation in
    benchmarks/README.md)."""
    max_positive_items_per_client: int = 200
    """Cap on a client's positives over the window before pairing (P items make P(P-1)/2 pairs)."""
    num_buckets: int = 10
    bucket_edges: tuple[float, ...] = ()
    """Interior bucket edges (ascending); empty = quantiles of the day's scores."""
    max_anchors: int = 2_000_000
    negative_attempts: int = 8
    """Candidates drawn per anchor; the first one the witness did not interact with is kept."""
    seed: int = 0


@dataclasses.dataclass
class ScoreResult:
    pairs: pl.DataFrame
    edges: list[float]
    stats: dict[str, typing.Any]


def qualifying_positives(interactions: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """``client_id, item_id`` positives of sessions that qualify (not every served video watched or liked)."""
    lf = interactions.lazy().filter(pl.col("is_positive"))
    if "session_all_positive" in lf.collect_schema():
        lf = lf.filter(~pl.col("session_all_positive"))
    return lf.select("client_id", "item_id").unique().sort("client_id", "item_id").collect()


def window_pairs(
    interactions: pl.DataFrame | pl.LazyFrame,
    rules: ScoreRules = ScoreRules(),
    max_pairs_per_pass: int = 100_000_000,
) -> phase3.PairsResult:
    """Positive pairs over a window of ``filtered_interactions`` (client_id, session_id, item_id,
    is_positive, session_all_positive): phase 3's positive rule -- same client, counted by distinct
    clients, canonical ``item_id_1 < item_id_2``, each client's positives capped as in phase 3 -- across
    the window's sessions and days, qualifying sessions only, kept from ``min_cowatch_clients`` clients.

    The window's client pairs (sum of P(P-1)/2 over clients: ~10^9 at the seed's size) are never in memory
    together: they are made and counted in passes over buckets of the first item (about
    ``max_pairs_per_pass`` pairs a pass), and only the pairs that reach the minimum are kept."""
    lf = interactions.lazy()
    positives = qualifying_positives(lf)
    excluded = (
        lf.filter(pl.col("is_positive") & pl.col("session_all_positive"))
        .select("client_id", "session_id")
        .unique()
        .select(pl.len())
        .collect(engine="streaming")
        .item()
    )
    cap = rules.max_positive_items_per_client
    sizes = positives.group_by("client_id").agg(n=pl.len())
    capped = phase3._cap(positives, sizes, ["client_id"], cap, rules.seed)
    items = capped["item_id"].unique().sort()
    idx = capped.join(phase3._dense_index(items), on="item_id").select("client_id", "idx").lazy()
    n = sizes["n"].clip(upper_bound=cap).cast(pl.Int64)
    total = int((n * (n - 1) // 2).sum())
    passes = max(1, -(-total // max_pairs_per_pass))
    kept_parts, before = [], 0
    for b in range(passes):
        first = idx.filter(pl.col("idx") % passes == b)
        keys = phase3._count_keys(phase3._self_pairs(idx, ["client_id"], first=first).select("key")).collect()
        before += keys.height
        kept_parts.append(keys.filter(pl.col("len") >= rules.min_cowatch_clients))
        del keys
    kept = pl.concat(kept_parts).sort("value")
    idx_1, idx_2 = phase3._decode(kept["value"])
    pairs = pl.DataFrame(
        {
            "item_id_1": items.gather(idx_1),
            "item_id_2": items.gather(idx_2),
            "pair_type": pl.repeat("positive", kept.height, dtype=phase3.PAIR_TYPE, eager=True),
            "num_clients": kept["len"].cast(pl.Int64),
        }
    )
    stats = {
        "clients_with_positive_pairs": int((sizes["n"] >= 2).sum()),
        "clients_capped": int((sizes["n"] > cap).sum()),
        "sessions_excluded_all_positive": int(excluded),
        "pairs_before_min_clients": before,
        "pairs_below_min_clients": before - kept.height,
        "positive_pairs": kept.height,
        "pair_passes": passes,
    }
    return phase3.PairsResult(pairs, stats)


def _cosine(emb: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 1_000_000) -> np.ndarray:
    out = np.empty(len(a), dtype=np.float32)
    for s in range(0, len(a), chunk):
        out[s : s + chunk] = np.einsum("nd,nd->n", emb[a[s : s + chunk]], emb[b[s : s + chunk]])
    return np.clip(out, -1.0, 1.0)


def _witnesses(anchors: pl.DataFrame, positives: pl.DataFrame, seed: int, buckets: int = 16) -> pl.DataFrame:
    """anchor -> one client with both items positive (smallest seeded hash of client_id, then client_id).

    Worked from the clients' side: each client's own positive pairs that are anchors, ``buckets`` groups of
    clients at a time, so memory follows the pairs clients actually have -- never anchors x every client of
    a popular item (which at 1 M interactions a day is billions of rows)."""
    a = anchors.lazy().select("anchor", "item_id_1", "item_id_2")
    p = positives.lazy().select("client_id", "item_id").unique()
    parts = []
    for b in range(buckets):
        mine = p.filter(pl.col("client_id").hash(seed + 1) % buckets == b)
        # the bucket's client pairs first (anchors are canonical: item_id_1 < item_id_2), then the anchors: left
        # to the optimizer, the anchors join the clients' items on item_id_1 alone first, which explodes
        pairs = (
            mine.rename({"item_id": "item_id_1"})
            .join(mine.rename({"item_id": "item_id_2"}), on="client_id")
            .filter(pl.col("item_id_1") < pl.col("item_id_2"))
            .collect()
        )
        parts.append(
            pairs.lazy()
            .join(a, on=["item_id_1", "item_id_2"])
            .select("anchor", "client_id", h=pl.col("client_id").hash(seed))
            .sort("anchor", "h", "client_id")
            .unique("anchor", keep="first", maintain_order=True)
            .collect()
        )
    return (
        pl.concat(parts)
        .sort("anchor", "h", "client_id")
        .unique("anchor", keep="first", maintain_order=True)
        .select("anchor", "client_id")
    )


def _interacted(served: pl.DataFrame | pl.LazyFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """The (client_id, item_id) of ``candidates`` that occur in ``served``: the window's interactions are
    streamed past a hash table of the candidates, never held or deduplicated whole."""
    keys = candidates.select("client_id", "item_id").unique()
    return (
        served.lazy()
        .select("client_id", "item_id")
        .drop_nulls()
        .join(keys.lazy(), on=["client_id", "item_id"], how="semi")
        .unique()
        .collect(engine="streaming")
    )


def score_pairs(
    item_pairs: pl.DataFrame,
    embeddings: pl.DataFrame,
    filtered_interactions: pl.DataFrame | pl.LazyFrame,
    served: pl.DataFrame | pl.LazyFrame,
    rules: ScoreRules = ScoreRules(),
) -> ScoreResult:
    """``item_pairs``: item_id_1, item_id_2, pair_type, num_clients (positive rows are used);
    ``embeddings``: item_id, status, blip_embedding; ``filtered_interactions``: client_id, item_id,
    is_positive (and session_all_positive: positives of all-positive sessions never make a witness);
    ``served``: client_id, item_id of every interaction of the window (raw and quarantined rows)."""
    emb = embeddings.filter(pl.col("status") != "failed").select("item_id", "blip_embedding").sort("item_id")
    E = emb["blip_embedding"].to_numpy().astype(np.float32) if emb.height else np.zeros((0, 1), np.float32)
    index = emb.select("item_id", pl.int_range(pl.len(), dtype=pl.Int64).alias("idx"))
    pos = (
        item_pairs.filter(pl.col("pair_type") == "positive")
        .select("item_id_1", "item_id_2", "num_clients")
        .sort("item_id_1", "item_id_2")  # anchors numbered the same whatever the input's row order
        .with_row_index("anchor")
        .join(index.rename({"item_id": "item_id_1", "idx": "idx_1"}), on="item_id_1", how="left")
        .join(index.rename({"item_id": "item_id_2", "idx": "idx_2"}), on="item_id_2", how="left")
        .sort("anchor")
    )
    pos = pos.with_columns(
        unscored_reason=pl.when(pl.col("idx_1").is_null() & pl.col("idx_2").is_null())
        .then(pl.lit("no_embedding_item_1_and_2"))
        .when(pl.col("idx_1").is_null())
        .then(pl.lit("no_embedding_item_1"))
        .when(pl.col("idx_2").is_null())
        .then(pl.lit("no_embedding_item_2"))
    )
    scorable = pos.filter(pl.col("unscored_reason").is_null())
    sims = (
        _cosine(E, scorable["idx_1"].to_numpy(), scorable["idx_2"].to_numpy())
        if scorable.height
        else np.zeros(0, np.float32)
    )
    scorable = scorable.with_columns(similarity=pl.Series(sims, dtype=pl.Float32))

    # anchors and their witnesses
    anchors = scorable
    if anchors.height > rules.max_anchors:
        anchors = anchors.filter(pl.col("anchor").hash(rules.seed).rank("ordinal") <= rules.max_anchors)
    positives = qualifying_positives(filtered_interactions)
    witness = _witnesses(anchors, positives, rules.seed)
    # sorted: row i of the random draws below must be the same anchor in every run (joins do not keep order)
    anchors = anchors.join(witness, on="anchor", how="inner").sort("anchor")

    # negatives: K uniform candidates per anchor, the first the witness never interacted with
    rng = np.random.default_rng(rules.seed)
    k = rules.negative_attempts
    n_items = emb.height
    negatives = pl.DataFrame(
        schema={
            "anchor": pl.UInt32,
            "client_id": pl.Int64,
            "item_id_1": pl.Int64,
            "idx_1": pl.Int64,
            "item_id_2": pl.Int64,
            "idx_neg": pl.Int64,
        }
    )
    if anchors.height and n_items:
        cand = rng.integers(0, n_items, size=(anchors.height, k))
        item_ids = emb["item_id"].to_numpy()
        long = pl.DataFrame(
            {
                "row": np.repeat(np.arange(anchors.height), k),
                "attempt": np.tile(np.arange(k), anchors.height),
                "idx_neg": cand.reshape(-1).astype(np.int64),
            }
        ).with_columns(item_id=pl.Series(item_ids[cand.reshape(-1)]))
        a = (
            anchors.select("anchor", "client_id", "item_id_1", "item_id_2", "idx_1")
            .with_row_index("row")
            .with_columns(pl.col("row").cast(pl.Int64))
        )
        long = long.join(a, on="row").filter(
            (pl.col("item_id") != pl.col("item_id_1")) & (pl.col("item_id") != pl.col("item_id_2"))
        )
        seen = _interacted(served, long)
        long = (
            long.join(seen, on=["client_id", "item_id"], how="anti")
            .sort("row", "attempt")
            .unique("row", keep="first", maintain_order=True)
        )
        negatives = long.select(
            "anchor", "client_id", "item_id_1", "idx_1", pl.col("item_id").alias("item_id_2"), "idx_neg"
        )
    neg_sims = (
        _cosine(E, negatives["idx_1"].to_numpy(), negatives["idx_neg"].to_numpy())
        if negatives.height
        else np.zeros(0, np.float32)
    )

    all_sims = np.concatenate([sims, neg_sims])
    if rules.bucket_edges:
        edges = np.asarray(sorted(rules.bucket_edges), dtype=np.float64)
    elif all_sims.size:
        edges = np.quantile(all_sims.astype(np.float64), np.arange(1, rules.num_buckets) / rules.num_buckets)
    else:
        edges = np.zeros(0)

    pos_out = pos.join(scorable.select("anchor", "similarity"), on="anchor", how="left").join(
        anchors.select("anchor", "client_id"), on="anchor", how="left"
    )
    pos_out = pos_out.select(
        "item_id_1",
        "item_id_2",
        pl.lit("positive", PAIR_TYPE).alias("pair_type"),
        pl.col("num_clients").cast(pl.Int64),
        pl.col("client_id").alias("witness_client_id"),
        pl.col("anchor").cast(pl.Int64),
        "similarity",
        "unscored_reason",
    )
    neg_out = negatives.select(
        "item_id_1",
        "item_id_2",
        pl.lit("negative", PAIR_TYPE).alias("pair_type"),
        pl.lit(None, pl.Int64).alias("num_clients"),
        pl.col("client_id").alias("witness_client_id"),
        pl.col("anchor").cast(pl.Int64),
        pl.Series("similarity", neg_sims, dtype=pl.Float32),
        pl.lit(None, pl.String).alias("unscored_reason"),
    )
    out = pl.concat([pos_out, neg_out])
    sim_all = out["similarity"].fill_null(np.nan).to_numpy()
    buckets = np.searchsorted(edges, np.nan_to_num(sim_all), side="right").astype(np.int16)
    out = out.with_columns(
        bucket=pl.when(pl.col("similarity").is_not_null()).then(pl.Series(buckets, dtype=pl.Int16))
    ).sort("anchor", "pair_type")

    # paired comparison: the positive pair vs its own negative
    paired = pos_out.select("anchor", pl.col("similarity").alias("pos")).join(
        neg_out.select("anchor", pl.col("similarity").alias("neg")), on="anchor"
    )
    stats: dict[str, typing.Any] = {
        "positive_pairs": pos.height,
        "positive_pairs_scored": scorable.height,
        "positive_pairs_unscored": pos.height - scorable.height,
        "unscored_by_reason": dict(
            pos.filter(pl.col("unscored_reason").is_not_null()).group_by("unscored_reason").len().iter_rows()
        ),
        "anchors": anchors.height,
        "anchors_sampled_out": scorable.height - min(scorable.height, rules.max_anchors),
        "anchors_without_witness": min(scorable.height, rules.max_anchors) - anchors.height,
        "negatives": negatives.height,
        "anchors_without_negative": anchors.height - negatives.height,
        "paired_share_positive_more_similar": float((paired["pos"] > paired["neg"]).mean())
        if paired.height
        else float("nan"),
        "auc_positive_vs_negative": _auc(sims, neg_sims),
    }
    return ScoreResult(out, [float(e) for e in edges], stats)


def _auc(pos: np.ndarray, neg: np.ndarray, max_n: int = 2_000_000) -> float:
    """P(a random positive's similarity > a random negative's), ties count half (Mann-Whitney)."""
    if not len(pos) or not len(neg):
        return float("nan")
    rng = np.random.default_rng(0)
    if len(pos) > max_n:
        pos = rng.choice(pos, max_n, replace=False)
    if len(neg) > max_n:
        neg = rng.choice(neg, max_n, replace=False)
    labels = np.r_[np.ones(len(pos), dtype=bool), np.zeros(len(neg), dtype=bool)]
    return auc(np.concatenate([pos, neg]), labels)


def summary(pairs: pl.DataFrame) -> pl.DataFrame:
    return (
        pairs.filter(pl.col("similarity").is_not_null())
        .group_by("pair_type")
        .agg(
            pairs=pl.len(),
            mean=pl.col("similarity").mean(),
            p10=pl.col("similarity").quantile(0.1),
            p50=pl.col("similarity").median(),
            p90=pl.col("similarity").quantile(0.9),
        )
        .sort("pair_type")
    )


def histogram(pairs: pl.DataFrame, bins: int = 20, width: int = 30) -> str:
    """A markdown bar chart of similarity by pair type (shares of each type per bin)."""
    scored = pairs.filter(pl.col("similarity").is_not_null())
    if scored.height == 0:
        return "(no scored pairs)"
    s = scored["similarity"].to_numpy()
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, bins + 1)
    lines = ["| similarity | positive | negative |", "|---|---|---|"]
    counts = {}
    for t in ("positive", "negative"):
        v = scored.filter(pl.col("pair_type") == t)["similarity"].to_numpy()
        c, _ = np.histogram(v, bins=edges)
        counts[t] = c / max(c.sum(), 1)
    top = max(max(c.max() for c in counts.values()), 1e-9)
    for b in range(bins):
        bars = [
            "`" + "█" * int(round(width * counts[t][b] / top)) + f"` {100 * counts[t][b]:.1f}%"
            for t in ("positive", "negative")
        ]
        lines.append(f"| {edges[b]:.3f} .. {edges[b + 1]:.3f} | {bars[0]} | {bars[1]} |")
    return "\n".join(lines)


def validate(
    result: ScoreResult,
    item_pairs: pl.DataFrame,
    served: pl.DataFrame | pl.LazyFrame,
    filtered_interactions: typing.Optional[pl.DataFrame | pl.LazyFrame] = None,
) -> dict[str, tuple[bool, dict]]:
    out = result.pairs
    scored = out.filter(pl.col("similarity").is_not_null())["similarity"].to_numpy()
    in_range = bool(np.isfinite(scored).all() and (scored >= -1.0 - 1e-6).all() and (scored <= 1.0 + 1e-6).all())
    want = item_pairs.filter(pl.col("pair_type") == "positive").select("item_id_1", "item_id_2")
    got = out.filter(pl.col("pair_type") == "positive").select("item_id_1", "item_id_2")
    missing = want.join(got, on=["item_id_1", "item_id_2"], how="anti").height
    duplicated = got.height - got.unique().height
    unexplained = out.filter(pl.col("similarity").is_null() & pl.col("unscored_reason").is_null()).height
    negs = out.filter(pl.col("pair_type") == "negative").select(
        pl.col("witness_client_id").alias("client_id"), pl.col("item_id_2").alias("item_id")
    )
    interacted = negs.join(_interacted(served, negs), on=["client_id", "item_id"], how="semi").height
    out_checks: dict[str, tuple[bool, dict]] = {}
    if filtered_interactions is not None:
        ok = qualifying_positives(filtered_interactions)
        pos = out.filter((pl.col("pair_type") == "positive") & pl.col("witness_client_id").is_not_null())
        bad = (
            pos.select(pl.col("witness_client_id").alias("client_id"), pl.col("item_id_1").alias("item_id"))
            .join(ok, on=["client_id", "item_id"], how="anti")
            .height
            + pos.select(pl.col("witness_client_id").alias("client_id"), pl.col("item_id_2").alias("item_id"))
            .join(ok, on=["client_id", "item_id"], how="anti")
            .height
        )
        out_checks["witnesses_qualify"] = (
            bad == 0,
            {"witnessed_pairs": pos.height, "witness_items_not_positive_in_a_qualifying_session": bad},
        )
    return out_checks | {
        "scores_finite_in_unit_interval": (in_range, {"scored_pairs": int(scored.size)}),
        "every_pair_scored_or_reported": (
            missing == 0 and duplicated == 0 and unexplained == 0,
            {
                "positive_pairs_missing": missing,
                "duplicated": duplicated,
                "null_score_without_reason": unexplained,
                **{f"unscored_{k}": v for k, v in result.stats["unscored_by_reason"].items()},
            },
        ),
        "negatives_not_interacted": (
            interacted == 0,
            {"negatives": negs.height, "negatives_the_client_interacted_with": interacted},
        ),
        "positives_more_similar_than_negatives": (
            result.stats["paired_share_positive_more_similar"] > 0.5,
            {k: result.stats[k] for k in ("paired_share_positive_more_similar", "auc_positive_vs_negative")},
        ),
    }
