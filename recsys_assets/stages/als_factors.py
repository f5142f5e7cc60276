"""Collaborative factors: implicit-feedback ALS per language over a trailing window of phase-1 interactions.

Confidence (Hu, Koren & Volinsky 2008, with implicit's negative-feedback extension). For each
(client, item) cell of the window, every positive row adds

    alpha * (1 + like_bonus * liked + loop_bonus * (pcc > 1))

and every negative row adds ``negative_weight`` to the negative side. The cell's value is
``positive - negative``: above zero it is a positive preference (P=1) with that confidence, below zero
a known negative (P=0) with confidence ``|value|`` -- implicit treats a negative entry exactly so --
and cells that cancel to zero are dropped and counted. Unobserved cells are P=0 with confidence 1.

A language's matrix holds the interactions with items of that language. Items seen by fewer than
``min_item_clients`` distinct clients, and then clients with fewer than ``min_client_items`` items,
are left out (and counted). The engine is a seam (:class:`AlsEngine`): the output contract --
``item_id, language, vector`` and ``client_id, language, vector`` -- does not depend on it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

import numpy as np
import polars as pl
import scipy.sparse as sp


@dataclasses.dataclass(frozen=True)
class ConfidenceRules:
    alpha: float = 2.0
    like_bonus: float = 1.0
    loop_bonus: float = 0.5
    negative_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class AlsParams:
    factors: int = 16
    regularization: float = 2.0
    iterations: int = 15
    seed: int = 0
    num_threads: int = 0
    min_item_clients: int = 3
    min_client_items: int = 2


class AlsEngine(Protocol):
    name: str

    def fit(self, user_items: sp.csr_matrix, params: AlsParams) -> tuple[np.ndarray, np.ndarray]:
        """Return (user_factors, item_factors) as float32 arrays for a clients x items confidence matrix."""
        ...


class ImplicitAls:
    """``implicit``'s CPU ALS with the conjugate-gradient solver; BLAS held to one thread while it runs
    (implicit parallelises over users itself and an oversubscribed BLAS makes it many times slower)."""

    name = "implicit"

    def fit(self, user_items: sp.csr_matrix, params: AlsParams) -> tuple[np.ndarray, np.ndarray]:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=params.factors,
                regularization=params.regularization,
                alpha=1.0,  # confidences are built by confidence_cells
                use_cg=True,
                iterations=params.iterations,
                num_threads=params.num_threads,
                random_state=params.seed,
            )
            model.fit(user_items.astype(np.float32).tocsr(), show_progress=False)
        return np.asarray(model.user_factors, dtype=np.float32), np.asarray(model.item_factors, dtype=np.float32)


def confidence_cells(interactions: pl.DataFrame | pl.LazyFrame, rules: ConfidenceRules = ConfidenceRules()) -> pl.DataFrame:
    """``client_id, item_id, value, n_pos, n_neg`` per cell of the window (value != 0), plus dropped-zero cells
    are left out. Rows repeated across days add up."""
    weight = (
        pl.when(pl.col("is_positive"))
        .then(
            rules.alpha
            * (1.0 + rules.like_bonus * pl.col("liked").cast(pl.Float64) + rules.loop_bonus * (pl.col("pcc") > 1.0).cast(pl.Float64))
        )
        .otherwise(-rules.negative_weight)
    )
    return (
        interactions.lazy()
        .group_by("client_id", "item_id")
        .agg(value=weight.sum(), n_pos=pl.col("is_positive").sum().cast(pl.Int32), n_neg=(~pl.col("is_positive")).sum().cast(pl.Int32))
        .sort("client_id", "item_id")
        .collect()
    )


@dataclasses.dataclass
class LanguageMatrix:
    language: str
    client_ids: np.ndarray
    item_ids: np.ndarray
    matrix: sp.csr_matrix
    stats: dict


def language_matrix(cells: pl.DataFrame, language: str, params: AlsParams) -> LanguageMatrix:
    """Apply the minimum counts (items first, then clients) and index the cells of one language."""
    nonzero = cells.filter(pl.col("value") != 0)
    item_clients = nonzero.group_by("item_id").agg(n=pl.len())
    keep_items = item_clients.filter(pl.col("n") >= params.min_item_clients).select("item_id")
    kept = nonzero.join(keep_items, on="item_id", how="semi")
    client_items = kept.group_by("client_id").agg(n=pl.len())
    keep_clients = client_items.filter(pl.col("n") >= params.min_client_items).select("client_id")
    kept = kept.join(keep_clients, on="client_id", how="semi")
    client_ids = np.sort(kept["client_id"].unique().to_numpy())
    item_ids = np.sort(kept["item_id"].unique().to_numpy())
    rows = np.searchsorted(client_ids, kept["client_id"].to_numpy())
    cols = np.searchsorted(item_ids, kept["item_id"].to_numpy())
    m = sp.csr_matrix((kept["value"].to_numpy().astype(np.float32), (rows, cols)), shape=(len(client_ids), len(item_ids)))
    stats = {
        "language": language,
        "cells": cells.height,
        "cells_cancelled": cells.height - nonzero.height,
        "items_in_window": item_clients.height,
        "items_below_min_clients": item_clients.height - keep_items.height,
        "clients_in_window": nonzero["client_id"].n_unique(),
        "clients_below_min_items": client_items.height - keep_clients.height,
        "clients": len(client_ids),
        "items": len(item_ids),
        "nnz": int(m.nnz),
        "negative_cells": int((m.data < 0).sum()),
    }
    return LanguageMatrix(language, client_ids, item_ids, m, stats)


@dataclasses.dataclass
class AlsResult:
    item_factors: pl.DataFrame
    user_factors: pl.DataFrame
    stats: list[dict]


def _factor_frame(id_name: str, ids: np.ndarray, language: str, vectors: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            id_name: pl.Series(ids, dtype=pl.Int64),
            "language": pl.Series([language] * len(ids), dtype=pl.String),
            "vector": pl.Series(vectors.astype(np.float32), dtype=pl.Array(pl.Float32, vectors.shape[1])),
        }
    )


def empty_factors(id_name: str, factors: int) -> pl.DataFrame:
    return _factor_frame(id_name, np.zeros(0, dtype=np.int64), "", np.zeros((0, factors), dtype=np.float32))


def train_als(
    interactions: pl.DataFrame,
    item_language: pl.DataFrame,
    params: AlsParams = AlsParams(),
    rules: ConfidenceRules = ConfidenceRules(),
    engine: AlsEngine | None = None,
    languages: list[str] | None = None,
    min_cells_per_language: int = 100,
) -> AlsResult:
    """Train one ALS model per language. ``item_language``: ``item_id, language`` (the catalog).

    ``languages=None`` trains every language with at least ``min_cells_per_language`` cells after the
    minimum counts; languages skipped for too little data appear in the stats with ``trained=False``.
    Interactions whose item has no language in the catalog are counted, not guessed.
    """
    engine = engine or ImplicitAls()
    joined = interactions.lazy().join(item_language.lazy().select("item_id", "language"), on="item_id", how="left").collect()
    no_language = joined.filter(pl.col("language").is_null())
    joined = joined.filter(pl.col("language").is_not_null())
    wanted = languages if languages is not None else sorted(joined["language"].unique().to_list())
    items, users, stats = [], [], []
    for lang in wanted:
        cells = confidence_cells(joined.filter(pl.col("language") == lang), rules)
        lm = language_matrix(cells, lang, params)
        st = {**lm.stats, "engine": engine.name, "trained": False, "seconds": 0.0}
        if lm.matrix.nnz < min_cells_per_language or lm.matrix.shape[1] < 2:
            st["skipped"] = f"{lm.matrix.nnz} cells < {min_cells_per_language}"
            stats.append(st)
            continue
        t = time.perf_counter()
        uf, itf = engine.fit(lm.matrix, params)
        st["seconds"] = round(time.perf_counter() - t, 3)
        st["trained"] = True
        items.append(_factor_frame("item_id", lm.item_ids, lang, itf))
        users.append(_factor_frame("client_id", lm.client_ids, lang, uf))
        stats.append(st)
    if stats:
        stats[0]["rows_without_language"] = no_language.height
    return AlsResult(
        pl.concat(items) if items else empty_factors("item_id", params.factors),
        pl.concat(users) if users else empty_factors("client_id", params.factors),
        stats,
    )


def validate(item_factors: pl.DataFrame, stats: list[dict], max_norm: float) -> dict[str, tuple[bool, dict]]:
    """Checks of the item factors: finite, norms in (0, max_norm], every eligible item a vector, one language per item."""
    if item_factors.height:
        v = item_factors["vector"].to_numpy()
        finite = bool(np.isfinite(v).all())
        norms = np.linalg.norm(v, axis=1)
        norm_stats = {"min_norm": float(norms.min()), "max_norm": float(norms.max()), "bound": max_norm}
        norms_ok = finite and bool((norms > 0).all() and (norms <= max_norm).all())
    else:
        finite, norms_ok, norm_stats = True, True, {}
    expected = sum(s["items"] for s in stats if s["trained"])
    langs_per_item = item_factors.group_by("item_id").agg(n=pl.col("language").n_unique())
    multi = int((langs_per_item["n"] > 1).sum()) if langs_per_item.height else 0
    return {
        "factors_finite": (finite, {"rows": item_factors.height}),
        "norms_within_bounds": (norms_ok, norm_stats),
        "every_eligible_item_has_vector": (
            item_factors.height == expected and item_factors["item_id"].n_unique() == expected,
            {"eligible_items": expected, "vectors": item_factors.height},
        ),
        "one_language_per_item": (multi == 0, {"items_in_several_languages": multi}),
    }
