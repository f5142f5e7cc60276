"""The retrieval indexes: ANN against exact inner-product search, the stored round trip (local and moto S3),
and the checks refusing an index that lost vectors."""

import dagster as dg
import numpy as np
import polars as pl
import pytest

from recsys_assets.artifacts import from_bytes, to_bytes
from recsys_assets.defs.io_manager import SafetensorsIOManager
from recsys_assets.defs.s3 import S3Resource
from recsys_assets.serving import load_index
from recsys_assets.stages import retrieval_index as ri


def clustered(n: int, dim: int = 16, languages=("hindi", "tamil"), seed: int = 0) -> pl.DataFrame:
    """Vectors around 64 centres with varied norms, as ALS item factors are."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, dim))
    v = centres[rng.integers(0, 64, n)] + 0.5 * rng.standard_normal((n, dim))
    v *= rng.lognormal(0, 0.3, (n, 1))
    return pl.DataFrame(
        {
            "item_id": np.arange(n, dtype=np.int64) * 7 + 500_000_000,
            "language": np.asarray(languages)[rng.integers(0, len(languages), n)],
            "vector": pl.Series(v.astype(np.float32), dtype=pl.Array(pl.Float32, dim)),
        }
    )


def exact_top(table: pl.DataFrame, lang: str, q: np.ndarray, k: int) -> np.ndarray:
    part = table.filter(pl.col("language") == lang)
    scores = q @ part["vector"].to_numpy().T
    return part["item_id"].to_numpy()[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def test_ivf_index_finds_what_exact_search_finds():
    table = clustered(30_000)
    art, summary = ri.build(table, ri.IndexParams(kind="ivf"))
    assert set(summary["kind"]) == {"ivf"} and (summary["nprobe"] < summary["nlist"]).all()
    index = ri.ItemIndex(from_bytes(to_bytes(art)))
    q = np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32)  # unseen queries
    for lang in index.languages:
        got, scores = index.search(lang, q, 100)
        want = exact_top(table, lang, q, 100)
        recall = np.mean([len(np.intersect1d(g, w)) / 100 for g, w in zip(got, want)])
        assert recall >= 0.95, (lang, recall)
        assert (np.diff(scores, axis=1) <= 1e-5).all()  # best first
    checks = ri.validate(art, table)
    assert checks["holds_every_vector"][0] and checks["ann_recall_at_100"][0]


def test_flat_index_is_exact_and_small_languages_work():
    table = clustered(300, languages=("hindi", "tamil", "odia"))
    art, summary = ri.build(table)  # auto: flat below exact_below
    assert set(summary["kind"]) == {"flat"}
    index = ri.ItemIndex(art)
    q = np.random.default_rng(2).standard_normal((5, 16)).astype(np.float32)
    for lang in index.languages:
        got, _ = index.search(lang, q, 10)
        np.testing.assert_array_equal(got, exact_top(table, lang, q, 10))
    # more asked than held: -1 / -inf padding, never a wrong id
    n = index.size("odia")
    ids, scores = index.search("odia", q[:1], n + 3)
    assert (ids[0, n:] == -1).all() and np.isneginf(scores[0, n:]).all()
    with pytest.raises(KeyError, match="no index for language"):
        index.search("klingon", q, 1)


def test_build_is_deterministic():
    table = clustered(25_000)
    a, _ = ri.build(table, ri.IndexParams(kind="ivf"))
    b, _ = ri.build(table.sample(fraction=1.0, shuffle=True, seed=3), ri.IndexParams(kind="ivf"))
    assert to_bytes(a) == to_bytes(b)  # weights, ids and config: the stored object is the same every run


def test_checks_refuse_an_index_missing_vectors():
    table = clustered(400)
    art, _ = ri.build(table)
    bigger = pl.concat([table, clustered(1, seed=9).with_columns(item_id=pl.lit(1, pl.Int64))])
    holds, detail = ri.validate(art, bigger)["holds_every_vector"]
    assert not holds and detail["problems"]
    no_vector = table.with_columns(vector=pl.when(pl.col("item_id") == table["item_id"][0]).then(pl.col("vector")))
    assert not ri.validate(art, no_vector)["holds_every_vector"][0]


def test_round_trip_through_the_model_store_locally_and_on_s3(tmp_path, s3_env):
    endpoint, bucket, _ = s3_env
    table = clustered(2_000)
    art, _ = ri.build(table)
    q = np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)
    for base, s3 in (
        (str(tmp_path / "assets"), {}),
        (f"s3://{bucket}/recsys/assets", {"endpoint_url": endpoint}),
    ):
        io = SafetensorsIOManager(base_url=base, s3=S3Resource(**s3))
        io.store.write_bytes(io.key_for(dg.AssetKey("item_collab_index"), "2026-11-03"), to_bytes(art))
        loaded = load_index(base, "item_collab_index", "2026-11-03", s3=s3)
        assert loaded.languages == ["hindi", "tamil"]
        np.testing.assert_array_equal(loaded.search("hindi", q, 20)[0], exact_top(table, "hindi", q, 20))
        with pytest.raises(FileNotFoundError, match="item_collab_index 2026-11-04 has not been materialized"):
            load_index(base, "item_collab_index", "2026-11-04", s3=s3)
    with pytest.raises(ValueError, match="unknown index asset"):
        load_index(str(tmp_path), "als_factors", "2026-11-03")
