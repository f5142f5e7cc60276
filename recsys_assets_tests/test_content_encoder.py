"""The content -> collaborative encoder: losses by hand, a planted problem it must learn, the split, artifacts."""

import math

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from recsys_assets.artifacts import ModelArtifact, from_bytes, to_bytes
from recsys_assets.defs.io_manager import SafetensorsIOManager
from recsys_assets.stages import content_encoder as ce
from recsys_assets.stages.item_collab_embeddings import assemble, validate


def test_clip_loss_by_hand():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    scale = torch.tensor(math.log(2.0))  # logits = 2 * cosine
    c = 1 / math.sqrt(2)
    # cosines: row 0 = [1, c], row 1 = [0, c]; the logits are twice that
    l00, l01, l10, l11 = 2.0, 2 * c, 0.0, 2 * c
    rows = -(l00 - math.log(math.exp(l00) + math.exp(l01))) - (l11 - math.log(math.exp(l10) + math.exp(l11)))
    cols = -(l00 - math.log(math.exp(l00) + math.exp(l10))) - (l11 - math.log(math.exp(l01) + math.exp(l11)))
    want = 0.5 * (rows / 2 + cols / 2)
    assert abs(float(ce.clip_loss(pred, target, scale)) - want) < 1e-6
    # the temperature is clamped at 1/100
    big = ce.clip_loss(pred, target, torch.tensor(10.0))
    assert abs(float(big) - float(ce.clip_loss(pred, target, torch.tensor(math.log(100.0))))) < 1e-6


def test_pair_and_regression_losses_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    positive = torch.tensor([True, False, False])
    weight = torch.tensor([1.0, 2.0, 1.0])
    # positive: 1 - cos = 1; negative cos = 0.7071 -> relu(0.7071 - 0.2); negative cos = -1 -> 0
    want = (1 * 1.0 + 2 * (1 / math.sqrt(2) - 0.2) + 1 * 0.0) / 4.0
    assert abs(float(ce.pair_loss(a, b, positive, weight, margin=0.2)) - want) < 1e-6
    pred, target = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert abs(float(ce.regression_loss(pred, target, scale=2.0)) - ((4 + 25) / 2) / 2.0) < 1e-6


def planted(n=1200, d=8, seed=0):
    """Content is a known linear function of the target: frames = W_k y + noise, audio = A y."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, d)).astype(np.float32)
    W = rng.standard_normal((4, d, 24)).astype(np.float32)
    A = rng.standard_normal((d, 12)).astype(np.float32)
    frames = np.einsum("nd,kde->nke", y, W) + 0.1 * rng.standard_normal((n, 4, 24)).astype(np.float32)
    has_audio = rng.random(n) > 0.1
    audio = (y @ A) * has_audio[:, None]
    ids = np.arange(n, dtype=np.int64) * 7 + 100
    feats = ce.Features(
        ids,
        torch.from_numpy(frames.astype(np.float32)),
        torch.from_numpy(audio.astype(np.float32)),
        torch.from_numpy(has_audio),
    )
    return feats, y


def test_features_of_parts_equal_features_of_the_whole_and_consume_the_parts(tmp_path):
    """A window's days as parts (some empty, audio missing in places, float16 frames) give the inputs of the
    concatenated rows, frames kept float16; the list is emptied as the parts are copied."""
    rng = np.random.default_rng(1)
    n = 23
    whole = pl.DataFrame(
        {
            "item_id": np.arange(n, dtype=np.int64) * 5,
            "frame_embeddings": pl.Series(rng.standard_normal((n, 3, 4)).astype(np.float16)).cast(
                pl.Array(pl.Float16, (3, 4))
            ),
            "audio_embedding": pl.Series(rng.standard_normal((n, 6)).astype(np.float16)).cast(pl.Array(pl.Float16, 6)),
        }
    ).with_columns(audio_embedding=pl.when(pl.col("item_id") % 3 == 0).then(None).otherwise(pl.col("audio_embedding")))
    parts = [whole.slice(0, 9), whole.head(0), whole.slice(9, 1), whole.slice(10, 13)]
    got, want = ce.features(parts), ce.features(whole)
    assert parts == []
    assert got.frames.dtype == torch.float16 and got.frames.shape == (n, 3, 4)
    np.testing.assert_array_equal(got.item_ids, whole["item_id"].to_numpy())
    for field in ("frames", "audio", "has_audio"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field
    assert not bool(got.has_audio[0]) and bool(got.has_audio[1]) and float(got.audio[0].abs().sum()) == 0.0
    np.testing.assert_array_equal(got.audio[1].numpy(), whole["audio_embedding"][1].to_numpy().astype(np.float32))

    # lazy parts (a day's query over a parquet file) are counted, then streamed in batches smaller than a part
    path = tmp_path / "day.parquet"
    whole.with_columns(status=pl.lit("ok")).write_parquet(path, row_group_size=4)
    scan = pl.scan_parquet(path)
    lazy = [
        scan.filter(pl.col("item_id") < 45),
        scan.filter(pl.col("item_id") > 1_000),
        scan.filter(pl.col("item_id") >= 45),
    ]
    streamed = ce.features(lazy, batch_rows=3)
    assert lazy == []
    np.testing.assert_array_equal(streamed.item_ids, whole["item_id"].to_numpy())
    for field in ("frames", "audio", "has_audio"):
        assert torch.equal(getattr(streamed, field), getattr(want, field)), field


def test_learns_a_planted_linear_map_and_is_deterministic():
    feats, y = planted()
    is_val = ce.is_validation(pl.Series(feats.item_ids), 0.2, 0).to_numpy()
    params = ce.EncoderParams(max_epochs=40, hidden=64, dropout=0.0, device="cpu")
    res = ce.train_encoder(feats, y, is_val, None, params)
    pred = ce.predict(res.model, feats.take(np.flatnonzero(is_val)))
    metrics = ce.retrieval_metrics(pred, y[is_val])
    assert metrics["mean_cosine"] > 0.9 and metrics["recall@10"] > 0.9
    again = ce.train_encoder(feats, y, is_val, None, params)
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v, rtol=0, atol=0)
    assert len(res.history) == 40 and set(res.history[0]) >= {"train_clip", "val_loss", "temperature"}


def test_early_stopping_keeps_the_best_epoch():
    feats, _ = planted(n=300)
    noise = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)  # nothing to learn
    is_val = ce.is_validation(pl.Series(feats.item_ids), 0.3, 0).to_numpy()
    res = ce.train_encoder(
        feats, noise, is_val, None, ce.EncoderParams(max_epochs=200, patience=3, hidden=64, device="cpu")
    )
    assert len(res.history) < 200 and len(res.history) == res.best_epoch + 4
    best = min(h["val_loss"] for h in res.history)
    assert res.history[res.best_epoch]["val_loss"] == best


def test_the_item_split_never_leaks_even_through_pairs():
    ids = pl.Series(np.arange(10_000, dtype=np.int64))
    v = ce.is_validation(ids, 0.25, 3).to_numpy()
    assert abs(v.mean() - 0.25) < 0.02
    np.testing.assert_array_equal(v, ce.is_validation(ids, 0.25, 3).to_numpy())  # a function of the id only
    assert not np.array_equal(v, ce.is_validation(ids, 0.25, 4).to_numpy())
    feats, y = planted(n=200)
    is_val = ce.is_validation(pl.Series(feats.item_ids), 0.25, 0).to_numpy()
    val_ids, train_ids = feats.item_ids[is_val], feats.item_ids[~is_val]
    pairs = pl.DataFrame(
        {
            "item_id_1": [train_ids[0], train_ids[1], val_ids[0], train_ids[2]],
            "item_id_2": [train_ids[3], val_ids[1], train_ids[4], train_ids[5]],
            "pair_type": ["positive", "positive", "negative", "negative"],
            "bucket": [0, 1, 2, 3],
        }
    )
    res = ce.train_encoder(feats, y, is_val, pairs, ce.EncoderParams(max_epochs=2, device="cpu"))
    assert res.train_pairs == 2  # the two pairs touching a validation item are dropped
    assert not set(res.train_ids) & set(res.val_ids)


def test_pair_rows_equal_the_join_of_pairs_to_rows():
    rng = np.random.default_rng(5)
    item_ids = rng.permutation(np.arange(1_000, 3_000, 2, dtype=np.int64))  # unique, not sorted
    usable = rng.random(len(item_ids)) > 0.3
    n = 20_000
    pairs = pl.DataFrame(
        {
            "item_id_1": rng.integers(990, 3_010, n),  # some ids are no row at all
            "item_id_2": rng.integers(990, 3_010, n),
            "pair_type": pl.Series(rng.choice(["positive", "negative"], n)).cast(pl.Enum(["positive", "negative"])),
            "bucket": pl.Series(rng.integers(0, 10, n)).scatter([0, 1], None),
        }
    ).with_columns(item_id_1=pl.Series(rng.integers(990, 3_010, n)).scatter([2], None))  # a null id is dropped
    # one row per (pair, type), as in pair_blip_scores
    pairs = pairs.unique(["item_id_1", "item_id_2", "pair_type"], keep="first", maintain_order=True)
    a, b, positive, buckets = ce.pair_rows(item_ids, usable, pairs)
    row_of = pl.DataFrame({"item_id": item_ids, "row": np.arange(len(item_ids))}).filter(pl.Series(usable))
    want = (
        pairs.join(row_of.rename({"item_id": "item_id_1", "row": "a"}), on="item_id_1")
        .join(row_of.rename({"item_id": "item_id_2", "row": "b"}), on="item_id_2")
        .sort("a", "b", "pair_type")  # the Enum: positives first
    )
    assert 0 < len(a) == want.height < n
    np.testing.assert_array_equal(a, want["a"].to_numpy())
    np.testing.assert_array_equal(b, want["b"].to_numpy())
    np.testing.assert_array_equal(positive, (want["pair_type"] == "positive").to_numpy())
    np.testing.assert_array_equal(buckets, want["bucket"].fill_null(0).to_numpy())
    assert a.dtype == np.int32 and usable[a].all() and usable[b].all()
    with pytest.raises(ValueError, match="unique"):
        ce.pair_rows(np.array([1, 2, 1]), np.ones(3, dtype=bool), pairs)
    assert all(len(x) == 0 for x in ce.pair_rows(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), pairs))


def test_train_all_reads_each_language_s_training_pairs_from_a_pair_source():
    feats, y = planted(n=400)
    langs = ["hindi"] * 300 + ["tamil"] * 100
    emb, als = frame_table(feats, y, langs)
    rng = np.random.default_rng(2)
    pairs = pl.DataFrame(
        {
            "item_id_1": rng.choice(feats.item_ids, 3_000),
            "item_id_2": rng.choice(feats.item_ids, 3_000),
            "pair_type": rng.choice(["positive", "negative"], 3_000),
            "bucket": rng.integers(0, 10, 3_000),
        }
    )
    asked = []

    def source(ids: pl.Series) -> pl.DataFrame:
        asked.append(ids)
        return pairs.filter(pl.col("item_id_1").is_in(ids.implode()) & pl.col("item_id_2").is_in(ids.implode()))

    params = ce.EncoderParams(max_epochs=3, min_items=50, device="cpu")
    whole = ce.train_all(emb, als, pairs, params)
    by_language = ce.train_all(emb, als, source, params)
    # asked once per language, for its training items only (sorted), and the same models come out
    assert [len(ids) for ids in asked] == [len(whole.results[lang].train_ids) for lang in ("hindi", "tamil")]
    for ids, lang in zip(asked, ("hindi", "tamil")):
        assert ids.is_sorted() and set(ids) == set(whole.results[lang].train_ids)
    for lang in ("hindi", "tamil"):
        assert by_language.results[lang].train_pairs == whole.results[lang].train_pairs > 0
        for k, v in whole.models[lang].state_dict().items():
            torch.testing.assert_close(by_language.models[lang].state_dict()[k], v, rtol=0, atol=0)


def frame_table(feats, y, languages):
    n, k, d = feats.frames.shape
    emb = pl.DataFrame(
        {
            "item_id": feats.item_ids,
            "status": ["ok"] * n,
            "frame_embeddings": pl.Series(feats.frames.numpy(), dtype=pl.Array(pl.Float32, (k, d))),
            "audio_embedding": pl.Series(feats.audio.numpy(), dtype=pl.Array(pl.Float32, feats.audio.shape[1])),
        }
    ).with_columns(pl.when(pl.Series(feats.has_audio.numpy())).then(pl.col("audio_embedding")).alias("audio_embedding"))
    als = pl.DataFrame(
        {
            "item_id": feats.item_ids,
            "language": languages,
            "vector": pl.Series(y, dtype=pl.Array(pl.Float32, y.shape[1])),
        }
    )
    return emb, als


def test_train_all_per_language_artifact_round_trip_and_cold_items():
    feats, y = planted(n=400)
    langs = ["hindi"] * 300 + ["tamil"] * 80 + ["odia"] * 20
    emb, als = frame_table(feats, y, langs)
    res = ce.train_all(emb, als, None, ce.EncoderParams(max_epochs=5, min_items=50, device="cpu"))
    assert set(res.models) == {"hindi", "tamil"}
    assert [s["language"] for s in res.stats if not s["trained"]] == ["odia"]
    checks = ce.validate(res)
    assert checks["item_split_never_leaks"][0] and checks["weights_finite"][0]
    art = from_bytes(to_bytes(ce.to_artifact(res.models, res.config, res.results)))
    back = ce.from_artifact(art)
    split = ce.split_of(art)
    assert split.height == sum(len(r.train_ids) + len(r.val_ids) for r in res.results.values())
    stored = dict(split.select("item_id", "encoder_split").iter_rows())
    assert {stored[i] for i in res.results["hindi"].val_ids} == {"validation"}
    sub = feats.take(np.arange(10))
    np.testing.assert_array_equal(ce.predict(back["hindi"], sub), ce.predict(res.models["hindi"], sub))
    # item_collab_embeddings: items without ALS vectors get predicted ones, flagged; failed media get none
    cold = als.filter(pl.col("item_id") % 2 == 0)
    items = als.select("item_id", "language")
    emb_with_failure = emb.with_columns(
        status=pl.when(pl.col("item_id") == feats.item_ids[1]).then(pl.lit("failed")).otherwise(pl.col("status"))
    )
    odia_item = [i for i, lang in zip(feats.item_ids, langs) if lang == "odia"][0]
    table = assemble(items, emb_with_failure, cold, back, split)
    row = {r["item_id"]: r for r in table.iter_rows(named=True)}
    hindi_odd = [i for i, lang in zip(feats.item_ids, langs) if i % 2 and lang == "hindi" and i != feats.item_ids[1]][0]
    assert (
        row[hindi_odd]["source"] == "predicted"
        and row[hindi_odd]["is_predicted"]
        and row[hindi_odd]["encoder_split"] == stored[hindi_odd]  # the split stored with the encoder
    )
    assert row[odia_item]["encoder_split"] == "unseen"  # odia had no encoder: never seen
    assert row[feats.item_ids[0]]["source"] == "als" and not row[feats.item_ids[0]]["is_predicted"]
    assert row[feats.item_ids[1]]["source"] == "none" and row[feats.item_ids[1]]["reason"] == "no_content_embedding"
    odia_odd = [i for i, lang in zip(feats.item_ids, langs) if i % 2 and lang == "odia"][0]
    assert row[odia_odd]["reason"] == "no_encoder_for_language"
    raw = ce.predict(back["hindi"], feats.take(np.flatnonzero(feats.item_ids == hindi_odd)))[0]
    # the served prediction is the encoder's, rescaled to the mean ALS norm of the encoder's training items
    hindi_train = [i for i, lang in zip(feats.item_ids, langs) if lang == "hindi" and stored.get(i) == "train"]
    cold_ids = set(cold["item_id"])
    in_cold = [k for k, i in enumerate(feats.item_ids) if i in hindi_train and i in cold_ids]
    true_norm = np.linalg.norm(y[in_cold], axis=1).mean()
    pred_norm = np.linalg.norm(ce.predict(back["hindi"], feats.take(np.asarray(in_cold))), axis=1).mean()
    scale = row[hindi_odd]["predicted_scale"]
    assert scale == pytest.approx(true_norm / pred_norm, rel=1e-4)
    np.testing.assert_allclose(row[hindi_odd]["vector"], raw * scale, rtol=1e-5, atol=1e-6)
    plain = assemble(items, emb_with_failure, cold, back, split, calibrate_norm=False)
    np.testing.assert_allclose(plain.filter(pl.col("item_id") == hindi_odd)["vector"][0].to_numpy(), raw, atol=1e-6)
    assert all(passed for passed, _ in validate(table, items).values())


@pytest.mark.parametrize("where", ["local", "s3"])
def test_weights_round_trip_through_the_io_manager(where, tmp_path, request):
    feats, y = planted(n=200)
    model = ce.ContentToCollab(24, 12, 8, ce.EncoderParams(hidden=16))
    art = ce.to_artifact(
        {"hindi": model},
        {
            "hidden": 16,
            "dropout": 0.5,
            "pooling": "attention",
            "init_temperature": 0.07,
            "languages": {"hindi": {"frame_dim": 24, "audio_dim": 12, "out_dim": 8}},
        },
    )
    if where == "local":
        io = SafetensorsIOManager(base_url=str(tmp_path))
    else:
        endpoint, bucket, _ = request.getfixturevalue("s3_env")
        from recsys_assets.defs.s3 import S3Resource

        io = SafetensorsIOManager(
            base_url=f"s3://{bucket}/models",
            s3=S3Resource(
                endpoint_url=endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name="us-east-1",
            ),
        )
    key = dg.AssetKey("content_encoder")
    with dg.build_output_context(asset_key=key, partition_key="2026-11-02") as ctx:
        io.handle_output(ctx, art)
    assert io.store.exists("content_encoder/2026-11-02.safetensors")
    loaded = io.load_input(
        dg.build_input_context(
            asset_key=key,
            partition_key="2026-11-02",
            dagster_type=dg.DagsterType(lambda _, v: True, "Artifact", typing_type=ModelArtifact),
        )
    )
    assert isinstance(loaded, ModelArtifact) and loaded.config["languages"]["hindi"]["out_dim"] == 8
    back = ce.from_artifact(loaded)["hindi"]
    np.testing.assert_array_equal(
        ce.predict(back, feats.take(np.arange(5))), ce.predict(model, feats.take(np.arange(5)))
    )
    with pytest.raises(TypeError, match="ModelArtifact"):
        with dg.build_output_context(asset_key=key, partition_key="2026-11-03") as ctx:
            io.handle_output(ctx, {"weights": 1})
