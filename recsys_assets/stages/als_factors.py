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
    """How an interaction becomes a confidence cell (see the module docstring)."""

    alpha: float = 2.0
    """Confidence scale of a positive cell."""
    like_bonus: float = 1.0
    """Added to a positive cell when the client liked the item."""
    loop_bonus: float = 0.5
    """Added to a positive cell that was looped (pcc > 1)."""
    negative_weight: float = 1.0
    """Confidence of a negative cell (observed as not preferred)."""


@dataclasses.dataclass(frozen=True)
class AlsParams:
    """ALS hyper-parameters, minimum counts and which languages get a model."""

    factors: int = 16
    regularization: float = 2.0
    iterations: int = 15
    seed: int = 0
    num_threads: int = 0
    """Solver threads (0 = all cores); set by the ALS engine resource, not per run."""
    min_item_clients: int = 3
    """Items with fewer distinct clients in the window get no vector."""
    min_client_items: int = 2
    """Clients with fewer distinct items in the window get no vector."""
    languages: tuple[str, ...] = ()
    """Languages to train; empty = every language with at least ``min_cells_per_language`` cells."""
    min_cells_per_language: int = 100
    """A language with fewer cells (after the minimum counts) is skipped, and says so."""


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
            model.fit(user_items.tocsr().astype(np.float32, copy=False), show_progress=False)
        return np.asarray(model.user_factors, dtype=np.float32), np.asarray(model.item_factors, dtype=np.float32)


def confidence_cells(
    interactions: pl.DataFrame | pl.LazyFrame,
    rules: ConfidenceRules = ConfidenceRules(),
    keys: tuple[str, ...] = ("client_id", "item_id"),
) -> pl.DataFrame:
    """``*keys, value`` per cell of the window (rows repeated across days add up), in no particular order."""
    weight = (
        pl.when(pl.col("is_positive"))
        .then(
            rules.alpha
            * (
                1.0
                + rules.like_bonus * pl.col("liked").cast(pl.Float32)
                + rules.loop_bonus * (pl.col("pcc") > 1.0).cast(pl.Float32)
            )
        )
        .otherwise(-rules.negative_weight)
        .cast(pl.Float32)
    )
    return interactions.lazy().group_by(*keys).agg(value=weight.sum()).collect()


@dataclasses.dataclass
class LanguageMatrix:
    language: str
    client_ids: np.ndarray
    item_ids: np.ndarray
    matrix: sp.csr_matrix
    stats: dict


def language_matrix(cells: pl.DataFrame, language: str, params: AlsParams) -> LanguageMatrix:
    """Apply the minimum counts (items first, then clients) and index the cells of one language.

    Rows are clients and columns items, both in ascending id order; the CSR is canonical (columns
    ascending within a row) whatever order the cells came in, so the solver sums in the same order
    on every run.
    """
    nonzero = cells.lazy().filter(pl.col("value") != 0)
    item_clients = nonzero.group_by("item_id").agg(n=pl.len()).collect()
    items = item_clients.filter(pl.col("n") >= params.min_item_clients).select("item_id").sort("item_id")
    items = items.with_row_index("col")
    kept = nonzero.join(items.lazy(), on="item_id", how="inner").select("client_id", "col", "value").collect()
    client_items = kept.group_by("client_id").agg(n=pl.len())
    clients = client_items.filter(pl.col("n") >= params.min_client_items).select("client_id").sort("client_id")
    clients = clients.with_row_index("row")
    n_rows, n_cols = clients.height, items.height
    coo = (
        kept.lazy()
        .join(clients.lazy(), on="client_id", how="inner")
        .select(key=pl.col("row").cast(pl.Int64) * max(n_cols, 1) + pl.col("col").cast(pl.Int64), value="value")
        .sort("key")
        .collect()
    )
    key = coo["key"].to_numpy()
    rows = key // max(n_cols, 1)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))]).astype(np.int64)
    m = sp.csr_matrix(
        (coo["value"].to_numpy().astype(np.float32, copy=False), (key % max(n_cols, 1)).astype(np.int32), indptr),
        shape=(n_rows, n_cols),
    )
    stats = {
        "language": language,
        "cells": cells.height,
        "cells_cancelled": cells.height - int(item_clients["n"].sum()),
        "items_in_window": item_clients.height,
        "items_below_min_clients": item_clients.height - n_cols,
        "clients_in_window": int(nonzero.select(pl.col("client_id").n_unique()).collect().item()),
        "clients_below_min_items": client_items.height - n_rows,
        "clients": n_rows,
        "items": n_cols,
        "nnz": int(m.nnz),
        "negative_cells": int((m.data < 0).sum()),
    }
    return LanguageMatrix(language, clients["client_id"].to_numpy(), items["item_id"].to_numpy(), m, stats)


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
) -> AlsResult:
    """Train one ALS model per language. ``item_language``: ``item_id, language`` (the catalog).

    Empty ``params.languages`` trains every language with at least ``min_cells_per_language`` cells after the
    minimum counts; languages skipped for too little data appear in the stats with ``trained=False``.
    (client, item) cells whose item has no language in the catalog are counted, not guessed.
    """
    engine = engine or ImplicitAls()
    lf = interactions.lazy().select("client_id", "item_id", "is_positive", "liked", "pcc")
    # cells on the two integer keys first; an item's language is then joined once per cell
    cells = confidence_cells(lf, rules).join(item_language.select("item_id", "language"), on="item_id", how="left")
    no_language = int(cells["language"].null_count())
    by_language = {
        k[0]: v
        for k, v in cells.filter(pl.col("language").is_not_null())
        .partition_by("language", as_dict=True, include_key=False)
        .items()
    }
    del cells
    wanted = list(params.languages) or sorted(by_language)
    items, users, stats = [], [], []
    for lang in wanted:
        lang_cells = by_language.pop(lang, None)
        if lang_cells is None:
            lang_cells = pl.DataFrame(schema={"client_id": pl.Int64, "item_id": pl.Int64, "value": pl.Float32})
        lm = language_matrix(lang_cells, lang, params)
        del lang_cells
        st = {**lm.stats, "engine": engine.name, "trained": False, "seconds": 0.0}
        if lm.matrix.nnz < params.min_cells_per_language or lm.matrix.shape[1] < 2:
            st["skipped"] = f"{lm.matrix.nnz} cells < {params.min_cells_per_language}"
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
        stats[0]["cells_without_language"] = no_language
    return AlsResult(
        pl.concat(items) if items else empty_factors("item_id", params.factors),
        pl.concat(users) if users else empty_factors("client_id", params.factors),
        stats,
    )


def validate(item_factors: pl.DataFrame, stats: list[dict], max_norm: float) -> dict[str, tuple[bool, dict]]:
    """Checks of the item factors: finite, norms in (0, max_norm], every eligible item a vector, one language
    per item."""
    if item_factors.height:
        v = item_factors["vector"].to_numpy()
        finite = bool(np.isfinite(v).all())
        norms = np.linalg.norm(v, axis=1)
        norm_stats = {"min_norm": float(norms.min()), "max_norm": float(norms.max()), "bound": max_norm}
        norms_ok = finite and bool((norms > 0).all() and (norms <= max_norm).all())
    else:
        finite, norms_ok, norm_stats = True, True, {}
    langs_per_item = item_factors.group_by("item_id").agg(n=pl.col("language").n_unique())
    multi = int((langs_per_item["n"] > 1).sum()) if langs_per_item.height else 0
    return verdicts(item_factors.height, finite, norms_ok, norm_stats, stats, item_factors["item_id"].n_unique(), multi)


def verdicts(
    rows: int, finite: bool, norms_ok: bool, norm_stats: dict, stats: list[dict], distinct_items: int, multi: int
) -> dict[str, tuple[bool, dict]]:
    """The item factors' check verdicts from their counts (any engine computes the counts)."""
    expected = sum(s["items"] for s in stats if s["trained"])
    return {
        "factors_finite": (finite, {"rows": rows}),
        "norms_within_bounds": (norms_ok, norm_stats),
        "every_eligible_item_has_vector": (
            rows == expected and distinct_items == expected,
            {"eligible_items": expected, "vectors": rows},
        ),
        "one_language_per_item": (multi == 0, {"items_in_several_languages": multi}),
    }
