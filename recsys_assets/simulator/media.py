"""Real mp4 files whose pictures and sound are rendered from an item's latent content vector.

Each video is H.264 (yuv420p) with an AAC mono soundtrack. The picture is a coloured field with
moving stripes and a moving disc; colour, stripe angle and frequency, speed and disc path are
functions of the content vector. The sound is a chord whose pitches and tremolo come from the
same vector. So two items with close content vectors look and sound alike, and a vision or audio
encoder has something to pick up -- the assumption the seeds' content models rest on.
"""

from __future__ import annotations

import colorsys
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 16_000


def _squash(x: np.ndarray | float) -> np.ndarray:
    """Map a real number to (0, 1)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def render_frames(content: np.ndarray, *, seconds: float, size: int, fps: int) -> np.ndarray:
    """RGB frames, shape (n_frames, size, size, 3), uint8."""
    c = np.resize(np.asarray(content, dtype=np.float64), 16)
    s = _squash(c)
    n = max(1, int(round(seconds * fps)))
    hue, sat = s[0], 0.35 + 0.6 * s[1]
    bg = np.array(colorsys.hsv_to_rgb(hue, sat, 0.35 + 0.5 * s[2]))
    fg = np.array(colorsys.hsv_to_rgb((hue + 0.5 * s[3]) % 1.0, 0.9, 0.95))
    angle = np.pi * s[4]
    freq = 1.0 + 5.0 * s[5]
    speed = (s[6] - 0.5) * 4.0
    yy, xx = np.mgrid[0:size, 0:size] / float(size)
    proj = np.cos(angle) * xx + np.sin(angle) * yy
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for t in range(n):
        phase = speed * t / fps
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (freq * proj + phase))
        cx = 0.5 + 0.3 * np.sin(2 * np.pi * (s[7] + 0.2 * t / fps))
        cy = 0.5 + 0.3 * np.cos(2 * np.pi * (s[8] + 0.15 * t / fps))
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < (0.05 + 0.1 * s[9]) ** 2
        img = bg[None, None, :] * (1 - 0.6 * stripes[..., None]) + fg[None, None, :] * 0.6 * stripes[..., None]
        img[disc] = 1.0 - fg
        frames[t] = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return frames


def render_audio(content: np.ndarray, *, seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """Mono float32 samples in [-1, 1], shape (n_samples,)."""
    c = np.resize(np.asarray(content, dtype=np.float64), 16)
    s = _squash(c)
    t = np.arange(int(round(seconds * rate))) / rate
    base = 110.0 * 2 ** (3 * s[10])
    ratios = (1.0, 1.25 + 0.5 * s[11], 1.5 + s[12])
    tremolo = 0.6 + 0.4 * np.sin(2 * np.pi * (1 + 6 * s[13]) * t)
    wave = sum(np.sin(2 * np.pi * base * r * t) for r in ratios) / len(ratios)
    noise_level = 0.05 * s[14]
    rng = np.random.default_rng(int(s[15] * 1e9))
    out = 0.5 * tremolo * wave + noise_level * rng.standard_normal(t.shape)
    return np.clip(out, -1, 1).astype(np.float32)


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    audio: np.ndarray | None,
    *,
    fps: int,
    audio_rate: int = AUDIO_RATE,
    gop: int | None = None,
) -> None:
    """Write an H.264 (+ AAC mono) mp4 atomically: a temp file in the same folder, then rename.
    ``gop``: frames between keyframes (default ``fps``: one keyframe a second)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.mp4", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            vs = container.add_stream("libx264", rate=fps)
            vs.width, vs.height = frames.shape[2], frames.shape[1]
            vs.pix_fmt = "yuv420p"
            vs.options = {"preset": "ultrafast", "g": str(gop or fps), "threads": "1"}
            astream = None
            if audio is not None:
                astream = container.add_stream("aac", rate=audio_rate)
                astream.layout = "mono"
            for img in frames:
                for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in vs.encode():
                container.mux(packet)
            if astream is not None:
                chunk = 1024
                for start in range(0, len(audio), chunk):
                    piece = audio[start : start + chunk][None, :]
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="flt", layout="mono")
                    frame.sample_rate = audio_rate
                    frame.pts = start
                    frame.time_base = Fraction(1, audio_rate)
                    for packet in astream.encode(frame):
                        container.mux(packet)
                for packet in astream.encode():
                    container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_item_video(
    path: str | os.PathLike, content: np.ndarray, *, seconds: float, size: int, fps: int, with_audio: bool = True
) -> None:
    frames = render_frames(content, seconds=seconds, size=size, fps=fps)
    audio = render_audio(content, seconds=seconds) if with_audio else None
    write_mp4(path, frames, audio, fps=fps)


def _render_job(args: tuple) -> None:
    path, content, seconds, size, fps = args
    if not Path(path).exists():
        render_item_video(path, content, seconds=seconds, size=size, fps=fps)


def render_many(jobs: list[tuple], processes: int | None = None) -> None:
    """Render ``(path, content, seconds, size, fps)`` jobs, skipping files that already exist."""
    todo = [j for j in jobs if not Path(j[0]).exists()]
    if not todo:
        return
    processes = processes or min(len(todo), os.cpu_count() or 1)
    if processes <= 1 or len(todo) < 16:
        for job in todo:
            _render_job(job)
        return
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(processes) as pool:
        for _ in pool.imap_unordered(_render_job, todo, chunksize=16):
            pass
