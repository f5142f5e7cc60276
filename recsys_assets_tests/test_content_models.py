"""The encoders: deterministic, fingerprinted by weights, loaded from checkpoints the test saves (never unpickled)."""

import math

import numpy as np
import pytest
import torch

from recsys_assets.stages.content_models import (
    RANDOM_AUDIO_MODEL,
    TINY_IMAGE_MODEL,
    WHISPER_DIMS,
    CheckpointError,
    ContentEncoders,
    ModelSpec,
    _register_configs,
    weights_digest,
)


@pytest.fixture(scope="module")
def encoders():
    return ContentEncoders(ModelSpec(device="cpu"))


def frames(seed=0, b=3, n=8, size=64):
    return np.random.default_rng(seed).integers(0, 256, (b, n, size, size, 3), dtype=np.uint8)


def clips(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (16000, 4000, 40000)]


def test_same_weights_same_embeddings_and_fingerprint(encoders):
    other = ContentEncoders(ModelSpec(device="cpu"))
    assert other.fingerprint == encoders.fingerprint
    np.testing.assert_array_equal(other.embed_frames(frames()), encoders.embed_frames(frames()))
    np.testing.assert_array_equal(other.embed_audio(clips()), encoders.embed_audio(clips()))
    assert encoders.random_weights == {"image": True, "audio": True}


def test_embeddings_are_unit_vectors_and_batch_independent(encoders):
    f = encoders.embed_frames(frames())
    assert f.shape == (3, 8, encoders.image_dim)
    np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoders.embed_frames(frames()[1:2])[0], f[1], atol=1e-5)
    a = encoders.embed_audio(clips())
    assert a.shape == (3, encoders.audio_dim)
    np.testing.assert_allclose(encoders.embed_audio(clips()[1:2])[0], a[1], atol=1e-5)


def test_audio_is_pooled_over_the_real_tokens_only(encoders):
    from whisper.audio import log_mel_spectrogram, pad_or_trim

    clip = clips()[1]  # 0.25 s -> ceil(4000 / 320) = 13 real tokens of 1500
    with torch.no_grad():
        h = encoders.audio(log_mel_spectrogram(pad_or_trim(torch.from_numpy(clip)), n_mels=80)[None])[0]
    want = torch.nn.functional.normalize(h[: math.ceil(4000 / 320)].mean(0), dim=0).numpy()
    np.testing.assert_allclose(encoders.embed_audio([clip])[0], want, atol=1e-5)
    everything = torch.nn.functional.normalize(h.mean(0), dim=0).numpy()
    assert np.abs(encoders.embed_audio([clip])[0] - everything).max() > 1e-3  # the padding is not averaged in


def test_other_seed_other_weights_other_fingerprint(encoders):
    assert ContentEncoders(ModelSpec(device="cpu", seed=1)).fingerprint != encoders.fingerprint
    assert ContentEncoders(ModelSpec(device="cpu", n_frames=4)).fingerprint != encoders.fingerprint


def _saved_clip_model(seed):
    import open_clip

    _register_configs()
    torch.manual_seed(seed)
    return open_clip.create_model(TINY_IMAGE_MODEL, pretrained=None).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_open_clip_checkpoint_round_trip(tmp_path, suffix):
    model = _saved_clip_model(seed=11)
    path = tmp_path / f"clip{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)
    enc = ContentEncoders(ModelSpec(device="cpu", image_pretrained=str(path)))
    assert enc.random_weights["image"] is False
    x = frames(b=1, n=2)
    with torch.no_grad():
        t = torch.from_numpy(x[0]).permute(0, 3, 1, 2).float() / 255.0
        t = (t - enc._mean) / enc._std
        want = torch.nn.functional.normalize(model.visual(t), dim=-1).numpy()
    np.testing.assert_allclose(enc.embed_frames(x)[0], want, atol=1e-5)
    # the fingerprint hashes the weights, not where they came from: random weights drawn with the same seed
    # are the same image tower
    assert weights_digest(enc.visual) == weights_digest(ContentEncoders(ModelSpec(device="cpu", seed=11)).visual)
    assert enc.fingerprint != ContentEncoders(ModelSpec(device="cpu")).fingerprint


def test_whisper_checkpoint_in_openai_layout(tmp_path):
    from whisper.model import ModelDimensions, Whisper

    dims = WHISPER_DIMS[RANDOM_AUDIO_MODEL]
    torch.manual_seed(5)
    whisper = Whisper(ModelDimensions(**dims)).eval()
    path = tmp_path / "whisper-small-random.pt"
    torch.save({"dims": dims, "model_state_dict": whisper.state_dict()}, path)
    enc = ContentEncoders(ModelSpec(device="cpu", audio_checkpoint=str(path)))
    assert enc.random_weights["audio"] is False
    for name, t in whisper.encoder.state_dict().items():
        torch.testing.assert_close(enc.audio.state_dict()[name], t)
    # a checkpoint whose dims are not the declared size is refused
    with pytest.raises(ValueError, match="not Whisper 'base'"):
        ContentEncoders(ModelSpec(device="cpu", audio_model="base", audio_checkpoint=str(path)))
    with pytest.raises(FileNotFoundError):
        ContentEncoders(ModelSpec(device="cpu", audio_checkpoint=str(tmp_path / "missing.pt")))


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/recsys_assets_pwned",))


def test_checkpoints_are_never_unpickled(tmp_path):
    import os
    import pickle

    path = tmp_path / "evil.pt"
    torch.save({"dims": WHISPER_DIMS[RANDOM_AUDIO_MODEL], "model_state_dict": {"encoder.x": Exploit()}}, path)
    if os.path.exists("/tmp/recsys_assets_pwned"):
        os.remove("/tmp/recsys_assets_pwned")
    # refused, naming the checkpoint and saying why (it used to be torch's generic unpickling message)
    with pytest.raises(CheckpointError, match=r"checkpoint .*evil\.pt cannot be loaded: refused: .*pickled") as e:
        ContentEncoders(ModelSpec(device="cpu", audio_checkpoint=str(path)))
    assert isinstance(e.value.__cause__, pickle.UnpicklingError)
    with pytest.raises(CheckpointError, match=r"checkpoint .*evil\.pt cannot be loaded"):
        ContentEncoders(ModelSpec(device="cpu", image_pretrained=str(path)))
    assert not os.path.exists("/tmp/recsys_assets_pwned")


def test_checkpoint_from_s3(s3_env, tmp_path):
    from safetensors.torch import save_file

    endpoint, bucket, client = s3_env
    model = _saved_clip_model(seed=12)
    local = tmp_path / "clip.safetensors"
    save_file(model.state_dict(), str(local))
    client.upload_file(str(local), bucket, "weights/clip.safetensors")
    s3 = {
        "endpoint_url": endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }
    spec = ModelSpec(
        device="cpu", image_pretrained=f"s3://{bucket}/weights/clip.safetensors", cache_dir=str(tmp_path / "cache")
    )
    enc = ContentEncoders(spec, s3)
    from_file = ContentEncoders(ModelSpec(device="cpu", image_pretrained=str(local)))
    assert enc.fingerprint == from_file.fingerprint
    assert list((tmp_path / "cache").rglob("clip.safetensors"))  # downloaded once into the cache
