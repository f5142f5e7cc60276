"""Decoding a video's bytes into model inputs with PyAV: N frames at the model's size, and the soundtrack.

* Frames: one demux pass decodes only keyframes (``skip_frame = NONKEY``: the decoder skips every
  other picture, which is most of H.264 decoding's cost) and the audio. If the video has at least
  ``n_frames`` keyframes, ``n_frames`` evenly spread keyframes are kept; otherwise (short clips, long
  GOPs) a second pass decodes every picture and keeps the ones nearest ``n_frames`` evenly spread
  times. Each kept picture is converted by swscale straight to the target size (short side =
  ``size``, then a centre crop), never materialised at full resolution in RGB.
* Audio: the first audio stream, resampled by libswresample to ``audio_rate`` Hz mono float32, at
  most ``max_audio_s`` seconds (Whisper's window is 30 s).

Failures become a :class:`DecodedMedia` with an ``error`` code rather than an exception, so one bad
file never stops a batch:

=====================  ============================================================
``corrupt``            the container cannot be opened / demuxed (truncated, not a video)
``empty``              zero bytes
``no_video_stream``    a container without pictures
``no_frames``          a video stream that yields no decodable picture
``decode_error``       anything else PyAV raises while decoding
``timeout``            fetch + decode took longer than the job's ``max_seconds`` (see :func:`fetch_and_decode`)
=====================  ============================================================

A missing audio stream is not an error: ``audio`` is ``None`` and ``audio_error`` says
``no_audio_stream`` (or ``audio_decode_error``).

No Dagster, no torch: this module is what the worker processes import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import signal
import threading
import typing

import numpy as np

from .media_fetch import FetchError, FetchPolicy, fetch


@dataclasses.dataclass(frozen=True)
class DecodeParams:
    n_frames: int = 8
    size: int = 224
    audio_rate: int = 16_000
    max_audio_s: float = 30.0


@dataclasses.dataclass
class DecodedMedia:
    item_id: int
    frames: typing.Optional[np.ndarray] = None
    """(n_frames, size, size, 3) uint8 RGB."""
    distinct_frames: int = 0
    """Pictures actually decoded (fewer than n_frames when the video is shorter: the nearest are repeated)."""
    keyframes_only: bool = False
    audio: typing.Optional[np.ndarray] = None
    """(samples,) float32 mono at ``audio_rate``."""
    duration_s: float = float("nan")
    error: typing.Optional[str] = None
    audio_error: typing.Optional[str] = None
    detail: str = ""
    source_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def _scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    if width <= 0 or height <= 0:
        return size, size
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def _to_rgb(frame: typing.Any, size: int) -> np.ndarray:
    w, h = _scaled_size(frame.width, frame.height, size)
    img = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def _spread(n_available: int, n: int) -> np.ndarray:
    """Indices of ``n`` evenly spread picks among ``n_available`` (repeats when fewer)."""
    return np.minimum(((np.arange(n) + 0.5) * n_available / n).astype(np.int64), n_available - 1)


def _duration(container: typing.Any, stream: typing.Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000.0
    return float("nan")


def decode_media(item_id: int, data: bytes, params: DecodeParams) -> DecodedMedia:
    import av

    out = DecodedMedia(item_id=item_id, source_bytes=len(data))
    if not data:
        out.error, out.detail = "empty", "zero bytes"
        return out
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as e:  # PyAV raises InvalidDataError, OSError subclasses, ValueError ...
        out.error, out.detail = "corrupt", f"{type(e).__name__}: {e}"[:300]
        return out
    try:
        with container:
            if not container.streams.video:
                out.error, out.detail = "no_video_stream", "the container has no video stream"
                return out
            vs = container.streams.video[0]
            vs.codec_context.skip_frame = "NONKEY"
            streams = [vs]
            audio_stream = container.streams.audio[0] if container.streams.audio else None
            if audio_stream is not None:
                streams.append(audio_stream)
            out.duration_s = _duration(container, vs)
            keyframes: list[tuple[float, typing.Any]] = []
            audio_chunks: list[np.ndarray] = []
            max_samples = int(params.max_audio_s * params.audio_rate)
            n_samples = 0
            resampler = None
            if audio_stream is not None:
                resampler = av.AudioResampler(format="flt", layout="mono", rate=params.audio_rate)
            try:
                for packet in container.demux(*streams):
                    if packet.stream.type == "video":
                        for frame in packet.decode():
                            keyframes.append((float(frame.time or 0.0), _to_rgb(frame, params.size)))
                    elif resampler is not None and n_samples < max_samples and out.audio_error is None:
                        try:
                            for frame in packet.decode():
                                for rf in resampler.resample(frame):
                                    a = rf.to_ndarray().reshape(-1)
                                    audio_chunks.append(a)
                                    n_samples += a.size
                        except av.FFmpegError as e:
                            out.audio_error, out.detail = "audio_decode_error", str(e)[:300]
                if resampler is not None and out.audio_error is None and n_samples < max_samples:
                    for rf in resampler.resample(None):
                        a = rf.to_ndarray().reshape(-1)
                        audio_chunks.append(a)
                        n_samples += a.size
            except av.FFmpegError as e:
                if not keyframes:
                    out.error, out.detail = "corrupt", f"{type(e).__name__}: {e}"[:300]
                    return out
                out.detail = f"decoding stopped early: {e}"[:300]
            if audio_stream is None:
                out.audio_error = "no_audio_stream"
            elif out.audio_error is None:
                if n_samples == 0:
                    out.audio_error = "audio_decode_error"
                else:
                    out.audio = np.concatenate(audio_chunks)[:max_samples].astype(np.float32, copy=False)
            if len(keyframes) >= params.n_frames:
                picks = _spread(len(keyframes), params.n_frames)
                out.frames = np.stack([keyframes[i][1] for i in picks])
                out.distinct_frames = params.n_frames
                out.keyframes_only = True
                return out
            # Fewer keyframes than frames wanted: decode every picture, keep those nearest the target times.
            container.seek(0)
            vs.codec_context.skip_frame = "DEFAULT"
            duration = out.duration_s if out.duration_s == out.duration_s and out.duration_s > 0 else None
            targets = None if duration is None else (np.arange(params.n_frames) + 0.5) * duration / params.n_frames
            pictures: list[np.ndarray] = []
            served, distinct, last = 0, 0, None
            try:
                for frame in container.decode(vs):
                    t = float(frame.time or 0.0)
                    if targets is None:
                        pictures.append(_to_rgb(frame, params.size))
                        distinct += 1
                        continue
                    last = frame
                    if served < len(targets) and t >= targets[served]:
                        img = _to_rgb(frame, params.size)
                        distinct += 1
                        while served < len(targets) and t >= targets[served]:
                            pictures.append(img)
                            served += 1
                    if served == len(targets):
                        break
            except av.FFmpegError as e:
                out.detail = f"decoding stopped early: {e}"[:300]
            if targets is not None and served < len(targets) and last is not None:
                img = _to_rgb(last, params.size)
                distinct += 1
                pictures += [img] * (len(targets) - served)
            if not pictures:
                pictures = [p for _, p in keyframes]
                distinct = len(pictures)
            if not pictures:
                out.error, out.detail = "no_frames", out.detail or "the video stream yields no picture"
                return out
            picks = _spread(len(pictures), params.n_frames)
            out.frames = np.stack([pictures[i] for i in picks])
            out.distinct_frames = int(min(distinct, params.n_frames))
            return out
    except Exception as e:  # never let one file stop the pool
        out.error, out.detail = "decode_error", f"{type(e).__name__}: {e}"[:300]
        out.frames, out.audio = None, None
        return out


@dataclasses.dataclass(frozen=True)
class MediaJob:
    item_id: int
    url: typing.Optional[str]
    policy: FetchPolicy
    params: DecodeParams
    max_seconds: float = 0.0
    """Wall-clock limit of fetch + decode for this item (0 = none); past it the item fails with ``timeout``."""


class _ItemTimeout(BaseException):
    """Not an ``Exception``: no broad ``except Exception`` in the fetch or decode code may swallow it."""


@contextlib.contextmanager
def _wall_clock_limit(seconds: float) -> typing.Iterator[None]:
    """SIGALRM after ``seconds`` (main thread only: a worker process's, or the run's own when it decodes
    in process); elsewhere a no-op, the fetch deadline still holds."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: typing.Any) -> None:
        raise _ItemTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fetch_and_decode(job: MediaJob) -> DecodedMedia:
    """What a worker process runs for one item: fetch under the policy, then decode, within ``max_seconds``."""
    try:
        with _wall_clock_limit(job.max_seconds):
            try:
                data = fetch(job.url, job.policy)
            except FetchError as e:
                return DecodedMedia(item_id=job.item_id, error=e.reason, detail=e.detail[:300])
            except _ItemTimeout:
                raise
            except Exception as e:  # a fetcher bug must not kill the pool either
                detail = f"{type(e).__name__}: {e}"[:300]
                return DecodedMedia(item_id=job.item_id, error="io_error", detail=detail)
            return decode_media(job.item_id, data, job.params)
    except _ItemTimeout:
        return DecodedMedia(item_id=job.item_id, error="timeout", detail=f"fetch + decode over {job.max_seconds:g} s")
