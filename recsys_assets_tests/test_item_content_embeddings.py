"""embed_items over real mp4 files: failures listed with reasons, worker pool = in-process, the cache (local and S3)."""

import numpy as np
import polars as pl
import pytest

from recsys_assets.simulator.media import render_item_video
from recsys_assets.stages.content_models import ContentEncoders, ModelSpec
from recsys_assets.stages.item_content_embeddings import EmbeddingCache, EmbedParams, embed_items, validate
from recsys_assets.stages.media_fetch import FetchPolicy
from recsys_assets.storage import LocalStore, open_store


@pytest.fixture(scope="module")
def encoders():
    return ContentEncoders(ModelSpec(device="cpu", n_frames=4))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        path = root / f"{i}.mp4"
        render_item_video(path, rng.standard_normal(16), seconds=1.0, size=32, fps=8, with_audio=(i != 3))
        rows.append((i, str(path)))
    data = (root / "0.mp4").read_bytes()
    (root / "broken.mp4").write_bytes(data[: len(data) // 2])
    (root / "empty.mp4").write_bytes(b"")
    rows += [
        (20, str(root / "broken.mp4")),
        (21, str(root / "empty.mp4")),
        (22, str(root / "gone.mp4")),
        (23, "file:///etc/hostname"),
        (24, "https://evil.example/x.mp4"),
        (25, None),
    ]
    items = pl.DataFrame(rows, schema={"item_id": pl.Int64, "download_url": pl.String}, orient="row")
    return root, items, FetchPolicy(allowed_roots=(str(root),))


def test_every_item_listed_failures_with_reasons(library, encoders):
    root, items, policy = library
    res = embed_items(items, encoders, policy, EmbedParams(decode_workers=1, batch_size=4))
    t = res.table
    assert t["item_id"].to_list() == sorted(items["item_id"].to_list())
    status = dict(zip(t["item_id"].to_list(), t["status"].cast(pl.String).to_list()))
    reason = dict(zip(t["item_id"].to_list(), t["reason"].to_list()))
    assert status[3] == "no_audio" and reason[3] == "no_audio_stream"
    assert {i: reason[i] for i in range(20, 26)} == {
        20: "corrupt",
        21: "empty",
        22: "not_found",
        23: "disallowed_host",
        24: "disallowed_host",
        25: "bad_url",
    }
    ok = t.filter(pl.col("status") == "ok")
    assert ok.height == 9
    assert t.filter(pl.col("status") == "failed")["blip_embedding"].null_count() == 6
    assert t.filter(pl.col("item_id") == 3)["audio_embedding"].null_count() == 1
    assert ok["frame_embeddings"].dtype == pl.Array(pl.Float32, (4, encoders.image_dim))
    checks = validate(t, min_coverage=0.5)
    assert all(passed for passed, _ in checks.values())
    assert validate(t, min_coverage=0.9)["media_coverage"][0] is False  # 10 of 16 embedded
    # blip = the normalised mean of the per-frame vectors
    f = ok["frame_embeddings"].to_numpy()[0]
    want = f.mean(0) / np.linalg.norm(f.mean(0))
    np.testing.assert_allclose(ok["blip_embedding"].to_numpy()[0], want, atol=1e-6)


def test_worker_pool_gives_the_same_embeddings(library, encoders):
    _, items, policy = library
    one = embed_items(items, encoders, policy, EmbedParams(decode_workers=1, batch_size=4)).table
    two = embed_items(items, encoders, policy, EmbedParams(decode_workers=2, batch_size=3, max_in_flight=2)).table
    assert one.select("item_id", "status", "reason").equals(two.select("item_id", "status", "reason"))
    ok = pl.col("status") != "failed"
    np.testing.assert_allclose(
        one.filter(ok)["blip_embedding"].to_numpy(), two.filter(ok)["blip_embedding"].to_numpy(), atol=1e-5
    )


def test_cache_embeds_each_video_once(library, encoders, tmp_path):
    _, items, policy = library
    cache = EmbeddingCache(LocalStore(tmp_path / "cache"))
    day1, day2 = items.filter(pl.col("item_id") < 6), items.filter(pl.col("item_id") >= 4)
    first = embed_items(day1, encoders, policy, EmbedParams(decode_workers=1), cache=cache)
    assert first.stats["decoded"] == 6 and first.stats["cache_hits"] == 0
    again = embed_items(day1, encoders, policy, EmbedParams(decode_workers=1), cache=cache)  # re-materialised
    assert again.stats["decoded"] == 0 and again.stats["cache_hits"] == 6
    assert again.table.drop("detail").equals(first.table.drop("detail"))
    second = embed_items(day2, encoders, policy, EmbedParams(decode_workers=1), cache=cache)
    # items 4, 5 come from the cache; failures are retried, never cached
    assert second.stats["cache_hits"] == 2 and second.stats["decoded"] == day2.height - 2
    other_model = ContentEncoders(ModelSpec(device="cpu", n_frames=4, seed=1))
    assert embed_items(day1, other_model, policy, EmbedParams(decode_workers=1), cache=cache).stats["cache_hits"] == 0
    assert cache.compact(encoders.fingerprint, max_parts=0) == len(
        cache.store.list(f"{encoders.fingerprint}/")
    )  # every part folded, bucket by bucket
    assert (
        embed_items(items, encoders, policy, EmbedParams(decode_workers=1), cache=cache).stats["cache_hits"] == 10
    )  # no_audio is cached too


def test_cache_on_s3(library, encoders, s3_env):
    endpoint, bucket, _ = s3_env
    _, items, policy = library
    store = open_store(
        f"s3://{bucket}/cache",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    cache = EmbeddingCache(store)
    assert (
        embed_items(items, encoders, policy, EmbedParams(decode_workers=1), cache=cache).stats["decoded"]
        == items.height
    )
    assert embed_items(items, encoders, policy, EmbedParams(decode_workers=1), cache=cache).stats["cache_hits"] == 10


class RecordingStore(LocalStore):
    """A local store that records the objects opened for reading (what a lookup touched)."""

    def __init__(self, root):
        super().__init__(root)
        self.opened: list[str] = []

    def path(self, key):
        if key.endswith(".parquet"):
            self.opened.append(key)
        return super().path(key)


def _cache_rows(ids: np.ndarray) -> pl.DataFrame:
    rng = np.random.default_rng(int(ids[0]))
    return pl.DataFrame(
        {"item_id": ids.astype(np.int64), "blip_embedding": pl.Series(rng.random((len(ids), 64), dtype=np.float32))}
    )


def test_cache_lookup_of_k_items_touches_o_of_k_data(tmp_path):
    store = RecordingStore(tmp_path / "cache")
    cache = EmbeddingCache(store, buckets=32)
    for day in range(5):  # five days of 4 000 new items each, compacted as the asset does
        rows = _cache_rows(np.arange(day * 4000, (day + 1) * 4000))
        cache.store_rows(rows, "fp")
        cache.compact("fp", max_parts=3, buckets=(rows["item_id"] % 32).unique().to_list())
    total = sum(store.path(k).stat().st_size for k in store.list("fp/"))
    for k in (1, 4):
        store.opened.clear()
        wanted = [7, 4001, 12_345, 19_999][:k]
        got = cache.lookup(wanted, "fp")
        assert sorted(got["item_id"].to_list()) == sorted(wanted)
        touched = set(store.opened)
        assert {int(key.split("/")[2]) for key in touched} == {i % 32 for i in wanted}  # only their buckets
        assert len(touched) <= 4 * k  # at most max_parts + 1 parts per bucket
        touched_bytes = sum(store.path(key).stat().st_size for key in touched)
        assert touched_bytes <= total * k / 32 * 1.5, (touched_bytes, total)
    expected = _cache_rows(np.arange(12_000, 16_000)).filter(pl.col("item_id") == 12_345)
    assert cache.lookup([12_345], "fp").equals(expected)  # the row itself, bit for bit
    assert cache.lookup([10**9], "fp").height == 0
    assert len(store.list("fp/")) <= 32 * 4  # compaction keeps the part count bounded


def test_cache_compaction_keeps_the_newest_row(tmp_path):
    cache = EmbeddingCache(LocalStore(tmp_path / "cache"), buckets=2)
    old = _cache_rows(np.arange(10))
    cache.store_rows(old, "fp")
    ones = np.ones((10, 64), np.float32)
    new = pl.DataFrame({"item_id": old["item_id"], "blip_embedding": pl.Series(ones)})
    cache.store_rows(new.filter(pl.col("item_id") < 5), "fp")
    assert cache.compact("fp", max_parts=1) == 4
    got = cache.lookup(list(range(10)), "fp")
    assert got.height == 10
    firsts = got["blip_embedding"].to_numpy()[:, 0]
    assert (firsts[:5] == 1).all() and (firsts[5:] == old["blip_embedding"].to_numpy()[5:, 0]).all()


def test_generated_vectors_in_float16_feed_the_encoder_in_float32(tmp_path):
    """Profiles without media get content vectors generated from the true content; stored as float16 they
    validate, halve the partition, and the encoder still computes in float32."""
    import torch

    from recsys_assets.simulator.content_vectors import ContentVectorGenerator, VectorSpec
    from recsys_assets.simulator.platform import Platform
    from recsys_assets.stages import content_encoder as ce
    from recsys_assets.stages.item_content_embeddings import EmbedParams, embed_generated, validate
    from recsys_assets.storage import write_parquet

    platform = Platform("tiny", seed=3)
    gen = ContentVectorGenerator(platform, VectorSpec(n_frames=4, image_dim=64, audio_dim=32))
    items = pl.DataFrame({"item_id": platform.item_ids[:50], "language": ["en"] * 50})
    full = embed_generated(items, gen, EmbedParams(vector_dtype="float32"), chunk=7).table
    half = embed_generated(items, gen, EmbedParams(vector_dtype="float16"), chunk=50).table
    assert half.schema["frame_embeddings"] == pl.Array(pl.Float16, (4, 64))
    assert all(ok for ok, _ in validate(half, 0.95).values()) and all(ok for ok, _ in validate(full, 0.95).values())
    np.testing.assert_allclose(
        half["blip_embedding"].to_numpy().astype(np.float32), full["blip_embedding"].to_numpy(), atol=2e-3
    )
    # the same items in any chunking give the same vectors; the content signal is there
    again = embed_generated(items.reverse(), gen, EmbedParams(vector_dtype="float32"), chunk=13).table
    assert again.equals(full)
    # spilled chunk by chunk: a lazy scan of the same table (what the IO manager streams into the partition)
    spill = tmp_path / "spill"
    spill.mkdir()
    spilled = embed_generated(items, gen, EmbedParams(vector_dtype="float32"), chunk=7, spill_dir=str(spill)).table
    assert isinstance(spilled, pl.LazyFrame) and len(list(spill.glob("part-*.parquet"))) == 8
    assert spilled.collect().equals(full)
    truth = platform.true_item_content(items["item_id"].to_numpy())
    sim_true = truth @ truth.T
    sim_blip = full["blip_embedding"].to_numpy() @ full["blip_embedding"].to_numpy().T
    off = ~np.eye(50, dtype=bool)
    assert np.corrcoef(sim_true[off], sim_blip[off])[0, 1] > 0.5
    sizes = [write_parquet(LocalStore(tmp_path), f"{n}.parquet", t) for n, t in (("f32", full), ("f16", half))]
    assert sizes[1] < 0.6 * sizes[0]
    feats = ce.features(half)
    assert feats.frames.dtype == torch.float16 and feats.take(np.arange(5)).frames.dtype == torch.float32
