"""Approximate-nearest-neighbour indexes over item vectors, for serving (faiss, inner product).

One index per language (as the collaborative models are), built from ``item_id, language, vector`` rows:

* ``kind="flat"``: exact inner-product search (``IndexFlatIP``);
* ``kind="ivf"``: an inverted file (``IndexIVFFlat``, ``nlist`` = ``nlist_per_sqrt_n * sqrt(n)`` coarse
  cells trained by k-means on the vectors, inner-product metric). ``nprobe`` -- cells visited per query --
  is tuned at build time: it doubles from ``min_nprobe`` until recall@k against exact search on a
  sample of the vectors reaches ``target_recall``, so every index is built to the same quality;
* ``kind="auto"`` (default): flat below ``exact_below`` items, else ivf.

An index is stored as a :class:`~recsys_assets.artifacts.ModelArtifact`: ``{language}.index`` (faiss's
own serialisation, bytes), ``{language}.ids`` (the item id of each row) and a config with each
language's kind, size, nlist/nprobe and measured recall; plus anything the caller adds (the source
partitions). :class:`ItemIndex` loads one back and searches it. Deterministic: faiss's k-means is
seeded, and the build is single-threaded on the rows in ``item_id`` order.

Recall is measured on queries the builder can make without client vectors (:func:`sample_queries`):
half the items' own vectors, half Gaussian draws matching their per-dimension mean and spread.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing

import numpy as np
import polars as pl

from ..artifacts import ModelArtifact


@dataclasses.dataclass(frozen=True)
class IndexParams:
    kind: str = "auto"
    """``auto`` (flat below exact_below items, else ivf), ``flat`` (exact) or ``ivf``."""
    exact_below: int = 20_000
    nlist_per_sqrt_n: float = 4.0
    """IVF cells: this times sqrt(items)."""
    min_nprobe: int = 8
    target_recall: float = 0.98
    """nprobe is doubled until recall@recall_k on the tuning sample reaches this."""
    recall_k: int = 100
    tuning_queries: int = 500
    seed: int = 0


def _faiss():
    import faiss

    return faiss


def _exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    faiss = _faiss()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat.search(queries, min(k, len(vectors)))[1]


def recall_at_k(index: typing.Any, vectors: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean share of the exact inner-product top-k that ``index`` returns in its top-k."""
    if len(queries) == 0 or len(vectors) == 0:
        return 1.0
    k = min(k, len(vectors))
    exact = _exact_top(vectors, queries, k)
    approx = index.search(queries, k)[1]
    hits = [len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact)]
    return float(np.mean(hits) / k)


def sample_queries(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` queries: half a sample of the indexed vectors (item-to-item), half Gaussian draws with the
    vectors' per-dimension mean and spread (stand-ins for client vectors, which lie between the items)."""
    if len(vectors) == 0:
        return np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), np.float32)
    rng = np.random.default_rng(seed)
    k = min((n + 1) // 2, len(vectors))
    take = np.sort(rng.choice(len(vectors), size=k, replace=False))
    synthetic = rng.standard_normal((n - k, vectors.shape[1])) * vectors.std(0) + vectors.mean(0)
    return np.ascontiguousarray(np.concatenate([vectors[take], synthetic]), dtype=np.float32)


def build_one(vectors: np.ndarray, params: IndexParams) -> tuple[typing.Any, dict[str, typing.Any]]:
    """One faiss index over ``vectors`` (float32, rows = items) and what describes it."""
    faiss = _faiss()
    t0 = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    kind = params.kind if params.kind != "auto" else ("flat" if n < params.exact_below else "ivf")
    if kind not in ("flat", "ivf"):
        raise ValueError(f"index kind must be auto, flat or ivf, not {params.kind!r}")
    info: dict[str, typing.Any] = {"kind": kind, "items": n, "dim": d}
    if kind == "flat" or n < 2:
        index = faiss.IndexFlatIP(d)
        index.add(vectors)
        info["kind"] = "flat"
    else:
        nlist = max(1, min(int(params.nlist_per_sqrt_n * math.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = params.seed
        index.train(vectors)
        index.add(vectors)
        queries = sample_queries(vectors, params.tuning_queries, params.seed)
        nprobe = min(params.min_nprobe, nlist)
        while True:
            index.nprobe = nprobe
            recall = recall_at_k(index, vectors, queries, params.recall_k)
            if recall >= params.target_recall or nprobe >= nlist:
                break
            nprobe = min(2 * nprobe, nlist)
        info.update(nlist=nlist, nprobe=nprobe, tuning_recall=recall)
    info["build_seconds"] = time.perf_counter() - t0
    return index, info


def build(table: pl.DataFrame, params: IndexParams = IndexParams()) -> tuple[ModelArtifact, pl.DataFrame]:
    """Per language, an index over ``table``'s rows with a vector (``item_id, language, vector``).

    Returns the artifact (the same bytes for the same rows and params) and a per-language summary (items,
    kind, nlist, nprobe, build seconds)."""
    faiss = _faiss()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # k-means and adds in one fixed order: the same index every run
    try:
        arrays: dict[str, np.ndarray] = {}
        languages: dict[str, dict[str, typing.Any]] = {}
        seconds: dict[str, float] = {}
        rows = table.filter(pl.col("vector").is_not_null()).sort("item_id")
        for lang in sorted(rows["language"].unique().to_list()):
            part = rows.filter(pl.col("language") == lang)
            vectors = np.ascontiguousarray(part["vector"].to_numpy(), dtype=np.float32)
            index, info = build_one(vectors, params)
            arrays[f"{lang}.index"] = faiss.serialize_index(index)
            arrays[f"{lang}.ids"] = part["item_id"].to_numpy().astype(np.int64)
            seconds[lang] = info.pop("build_seconds")  # reported, not stored: the artifact is the same every run
            languages[lang] = info
    finally:
        faiss.omp_set_num_threads(threads)
    config = {"params": dataclasses.asdict(params), "languages": languages, "metric": "inner_product"}
    summary = pl.DataFrame(
        [
            {"language": k, **{c: v.get(c) for c in ("kind", "items", "dim", "nlist", "nprobe")}, "seconds": seconds[k]}
            for k, v in languages.items()
        ],
        schema={
            "language": pl.String,
            "kind": pl.String,
            "items": pl.Int64,
            "dim": pl.Int64,
            "nlist": pl.Int64,
            "nprobe": pl.Int64,
            "seconds": pl.Float64,
        },
    )
    return ModelArtifact(arrays, config), summary


class ItemIndex:
    """A stored index, loaded for search: ``search(language, queries, k) -> (item_ids, scores)``."""

    def __init__(self, artifact: ModelArtifact):
        faiss = _faiss()
        self.config = artifact.config
        self._ids: dict[str, np.ndarray] = {}
        self._index: dict[str, typing.Any] = {}
        for lang, info in artifact.config.get("languages", {}).items():
            index = faiss.deserialize_index(np.ascontiguousarray(artifact.arrays[f"{lang}.index"], dtype=np.uint8))
            if info.get("nprobe"):
                index.nprobe = int(info["nprobe"])
            ids = np.asarray(artifact.arrays[f"{lang}.ids"], dtype=np.int64)
            if index.ntotal != len(ids):
                raise ValueError(f"index for {lang!r} holds {index.ntotal} vectors but {len(ids)} ids")
            self._index[lang], self._ids[lang] = index, ids

    @property
    def languages(self) -> list[str]:
        return sorted(self._index)

    def size(self, language: str) -> int:
        return int(self._index[language].ntotal)

    def vectors(self, language: str) -> np.ndarray:
        """Every stored vector, in row order (``reconstruct_n``; ivf needs its direct map, made here)."""
        index = self._index[language]
        if hasattr(index, "make_direct_map"):
            index.make_direct_map()
        return index.reconstruct_n(0, index.ntotal)

    def ids(self, language: str) -> np.ndarray:
        return self._ids[language]

    def search(self, language: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top-``k`` items by inner product with each query: ``(item_ids, scores)``, both (n, k); -1 / -inf
        where the language has fewer than ``k`` items."""
        if language not in self._index:
            raise KeyError(f"no index for language {language!r}; this one has {self.languages}")
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        scores, rows = self._index[language].search(q, k)
        ids = np.where(rows >= 0, self._ids[language][np.maximum(rows, 0)], -1)
        return ids, np.where(rows >= 0, scores, -np.inf)


def validate(
    artifact: ModelArtifact, source: pl.DataFrame, min_recall: float = 0.95, queries: int = 200, k: int = 100
) -> dict[str, tuple[bool, dict]]:
    """``holds_every_vector``: each language's index has exactly the source's items with a vector, and
    stores their vectors; ``ann_recall_at_100``: recall@k against exact search on a fresh sample of queries."""
    loaded = ItemIndex(artifact)
    rows = source.filter(pl.col("vector").is_not_null())
    want = {lang: df.sort("item_id") for (lang,), df in rows.partition_by("language", as_dict=True).items()}
    problems: dict[str, typing.Any] = {}
    recalls: dict[str, float] = {}
    seed = int(artifact.config.get("params", {}).get("seed", 0)) + 1  # not the tuning sample
    for lang in sorted(set(want) | set(loaded.languages)):
        if lang not in want or lang not in loaded.languages:
            problems[lang] = "language missing from the index" if lang in want else "language not in the source"
            continue
        ids = loaded.ids(lang)
        src = want[lang]
        if not np.array_equal(np.sort(ids), src["item_id"].to_numpy()):
            problems[lang] = {"index_items": len(ids), "source_items": src.height}
            continue
        order = np.argsort(ids)
        stored = loaded.vectors(lang)[order]
        if not np.allclose(stored, src["vector"].to_numpy().astype(np.float32), atol=1e-5):
            problems[lang] = "stored vectors differ from the source's"
            continue
        q = sample_queries(stored, queries, seed)
        exact = _exact_top(np.ascontiguousarray(stored), q, k) if len(q) else np.zeros((0, 0), np.int64)
        got, _ = loaded.search(lang, q, min(k, len(ids)))
        truth = ids[order][exact] if len(q) else exact
        recalls[lang] = (
            float(np.mean([len(np.intersect1d(g, t)) / max(len(t), 1) for g, t in zip(got, truth)])) if len(q) else 1.0
        )
    worst = min(recalls.values()) if recalls else 1.0
    return {
        "holds_every_vector": (not problems, {"languages": len(want), "problems": problems}),
        "ann_recall_at_100": (
            worst >= min_recall and not problems,
            {"min_recall": min_recall, "worst_recall": worst, "recall_by_language": recalls},
        ),
    }
