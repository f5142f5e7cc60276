"""PyAV decoding of real mp4 files made here: frames at the model's size, audio, and every kind of bad file."""

from fractions import Fraction

import av
import numpy as np
import pytest

from recsys_assets.simulator.media import render_audio, write_mp4
from recsys_assets.stages.media_decode import DecodeParams, MediaJob, decode_media, fetch_and_decode
from recsys_assets.stages.media_fetch import FetchPolicy


def indexed_frames(n: int, h: int = 32, w: int = 32) -> np.ndarray:
    """Frame k is a flat grey of level 12*k, so a decoded frame says which one it is."""
    return np.stack([np.full((h, w, 3), 12 * k, dtype=np.uint8) for k in range(n)])


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    files = {}
    files["av"] = root / "av.mp4"
    write_mp4(
        files["av"], indexed_frames(16), render_audio(np.ones(16), seconds=2.0), fps=8
    )  # 2 s, GOP 8 -> 2 keyframes
    files["silent"] = root / "silent.mp4"
    write_mp4(files["silent"], indexed_frames(16), None, fps=8)
    files["wide"] = root / "wide.mp4"
    wide = np.zeros((8, 32, 64, 3), dtype=np.uint8)
    wide[:, :, 16:48] = 200  # the centre square is bright, the sides dark
    write_mp4(files["wide"], wide, None, fps=8)
    files["long_gop_many_keys"] = root / "keys.mp4"
    write_mp4(files["long_gop_many_keys"], indexed_frames(20), None, fps=2)  # GOP = 2 frames -> 10 keyframes
    files["audio_only"] = root / "audio_only.mp4"
    with av.open(str(files["audio_only"]), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        audio = render_audio(np.zeros(16), seconds=1.0)
        for start in range(0, len(audio), 1024):
            f = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio[start : start + 1024][None, :]), format="flt", layout="mono"
            )
            f.sample_rate, f.pts, f.time_base = 16000, start, Fraction(1, 16000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = files["av"].read_bytes()
    files["truncated"] = root / "truncated.mp4"
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["empty"] = root / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["garbage"] = root / "garbage.mp4"
    files["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return files


def decode(path, **kw):
    return decode_media(1, path.read_bytes(), DecodeParams(**kw))


def test_frames_evenly_spread_and_audio_resampled(media):
    d = decode(media["av"], n_frames=4, size=32)
    assert d.ok and d.frames.shape == (4, 32, 32, 3) and d.frames.dtype == np.uint8
    # 16 frames over 2 s; targets at (k + 0.5) / 4 of the duration -> frames 2, 6, 10, 14
    levels = d.frames.reshape(4, -1).mean(1) / 12
    np.testing.assert_allclose(levels, [2, 6, 10, 14], atol=0.5)
    assert d.distinct_frames == 4 and not d.keyframes_only  # only 2 keyframes: all pictures decoded
    assert d.audio is not None and d.audio.dtype == np.float32
    assert abs(d.audio.shape[0] / 16000 - 2.0) < 0.1
    assert d.audio_error is None and abs(d.duration_s - 2.0) < 0.01


def test_keyframes_only_when_there_are_enough(media):
    d = decode(media["long_gop_many_keys"], n_frames=5, size=16)
    assert d.ok and d.keyframes_only and d.frames.shape == (5, 16, 16, 3)
    levels = d.frames.reshape(5, -1).mean(1) / 12
    # keyframes are frames 0, 2, ..., 18; five spread picks among ten (the middle of each fifth) ->
    # keyframes 1, 3, 5, 7, 9 -> frames 2, 6, 10, 14, 18
    np.testing.assert_allclose(levels, [2, 6, 10, 14, 18], atol=0.5)


def test_more_frames_than_the_video_has_repeats_the_nearest(media):
    d = decode(media["av"], n_frames=32, size=16)
    assert d.ok and d.frames.shape == (32, 16, 16, 3) and d.distinct_frames == 16


def test_short_side_scaled_then_centre_cropped(media):
    d = decode(media["wide"], n_frames=2, size=16)
    assert d.frames.shape == (2, 16, 16, 3)
    assert d.frames.mean() > 150  # the crop is the bright centre, not the squashed whole


def test_no_audio_stream_is_not_an_error(media):
    d = decode(media["silent"], n_frames=2, size=16)
    assert d.ok and d.audio is None and d.audio_error == "no_audio_stream"


@pytest.mark.parametrize(
    "name, error",
    [("truncated", "corrupt"), ("empty", "empty"), ("garbage", "corrupt"), ("audio_only", "no_video_stream")],
)
def test_bad_files_get_a_reason(media, name, error):
    d = decode(media[name], n_frames=2, size=16)
    assert not d.ok and d.error == error and d.frames is None


def test_fetch_and_decode_reports_fetch_failures(media, tmp_path):
    pol = FetchPolicy(allowed_roots=(str(media["av"].parent),))
    ok = fetch_and_decode(MediaJob(7, str(media["av"]), pol, DecodeParams(n_frames=2, size=16)))
    assert ok.ok and ok.item_id == 7
    assert fetch_and_decode(MediaJob(8, "/etc/passwd", pol, DecodeParams())).error == "disallowed_host"
    assert fetch_and_decode(MediaJob(9, str(media["av"].parent / "nope.mp4"), pol, DecodeParams())).error == "not_found"
