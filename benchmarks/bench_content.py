"""Content-embedding throughput: fetch -> decode -> image + audio encoders -> write, and each stage alone.

    .venv/bin/python benchmarks/bench_content.py                                   # demo-sized models
    .venv/bin/python benchmarks/bench_content.py --image-model ViT-B-32 --audio-model base
    .venv/bin/python benchmarks/bench_content.py --videos 256 --workers 16         # on a GPU node

Clips are rendered once into ``benchmarks/_data/`` (H.264 + AAC mono, default 15 s, 720x1280, 24 fps,
a keyframe every 2 s -- the shape of the issue's reference clips). Stages, each timed on the same clips:

* ``fetch``       -- read every clip through the media fetcher (file://), one process;
* ``decode``      -- fetch + PyAV decode (keyframes at the model's size, the soundtrack at 16 kHz) in a pool
                     of ``--workers`` processes: the CPU decode wall;
* ``models``      -- the image and audio encoders alone, on the decoded clips held in memory, in batches;
* ``end_to_end``  -- ``embed_items`` as the asset runs it (pool feeding the models, bounded in flight),
                     plus writing the table as parquet; no cache.

Printed: videos/s for each, and end_to_end / decode and end_to_end / models. The weights are random (same
cost as real ones of that architecture).
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys_assets.simulator.media import render_audio, write_mp4  # noqa: E402
from recsys_assets.stages.content_models import ContentEncoders, ModelSpec  # noqa: E402
from recsys_assets.stages.item_content_embeddings import EmbedParams, embed_items  # noqa: E402
from recsys_assets.stages.media_decode import MediaJob, fetch_and_decode  # noqa: E402
from recsys_assets.stages.media_fetch import FetchPolicy, fetch  # noqa: E402

HERE = Path(__file__).resolve().parent


def _render(args: tuple) -> None:
    path, seed, seconds, width, height, fps, gop = args
    if Path(path).exists():
        return
    rng = np.random.default_rng(seed)
    base = (rng.random((height // 8, width // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    n = int(seconds * fps)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        frames[t] = np.roll(base, shift=4 * t, axis=1)
    write_mp4(path, frames, render_audio(rng.standard_normal(16), seconds=seconds), fps=fps, gop=gop)


def clips(a) -> list[str]:
    root = HERE / "_data" / f"content-{a.width}x{a.height}-{a.seconds:g}s-{a.fps}fps-g{a.gop}"
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(str(root / f"{i}.mp4"), i, a.seconds, a.width, a.height, a.fps, a.gop) for i in range(a.videos)]
    todo = [j for j in jobs if not Path(j[0]).exists()]
    if todo:
        t = time.perf_counter()
        with mp.get_context("spawn").Pool(a.workers) as pool:
            pool.map(_render, todo, chunksize=1)
        print(f"rendered {len(todo)} clips in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return [j[0] for j in jobs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=32, help="distinct clips rendered")
    ap.add_argument("--repeat", type=int, default=4, help="each clip is processed this many times (as distinct items)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--width", type=int, default=720)
    ap.add_argument("--height", type=int, default=1280)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--gop", type=int, default=48)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-frames", type=int, default=8)
    ap.add_argument("--image-model", default="recsys-ViT-tiny-16")
    ap.add_argument("--audio-model", default="random-small")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--torch-threads", type=int, default=0, help="intra-op threads of the models (0 = torch's default)")
    a = ap.parse_args()
    if a.torch_threads:
        import torch

        torch.set_num_threads(a.torch_threads)

    paths = clips(a) * a.repeat
    root = str(Path(paths[0]).parent)  # noqa
    policy = FetchPolicy(allowed_roots=(root,))
    enc = ContentEncoders(
        ModelSpec(image_model=a.image_model, audio_model=a.audio_model, n_frames=a.n_frames, device=a.device)
    )
    n = len(paths)
    res: dict[str, object] = {
        "videos": n,
        "clip": f"{a.seconds:g}s {a.width}x{a.height} {a.fps}fps gop {a.gop}",
        "workers": a.workers,
        "image_model": a.image_model,
        "audio_model": a.audio_model,
        "device": str(enc.device),
        "cores": os.cpu_count(),
        "mean_clip_mb": float(np.mean([os.path.getsize(p) for p in paths]) / 2**20),
    }

    t = time.perf_counter()
    for p in paths:
        fetch(p, policy)
    res["fetch_videos_per_s"] = n / (time.perf_counter() - t)

    jobs = [MediaJob(i, p, policy, enc.decode_params) for i, p in enumerate(paths)]
    with mp.get_context("spawn").Pool(a.workers) as pool:
        pool.map(fetch_and_decode, jobs[: a.workers], chunksize=1)  # warm the workers (imports)
        t = time.perf_counter()
        decoded = pool.map(fetch_and_decode, jobs, chunksize=1)
        res["decode_videos_per_s"] = n / (time.perf_counter() - t)
    assert all(d.ok for d in decoded), [d.error for d in decoded if not d.ok]
    res["keyframes_only"] = float(np.mean([d.keyframes_only for d in decoded]))

    enc.embed_frames(decoded[0].frames[None])  # warm-up (kernels, allocator)
    enc.embed_audio([decoded[0].audio])
    if enc.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    t = time.perf_counter()
    for s in range(0, n, a.batch_size):
        batch = decoded[s : s + a.batch_size]
        enc.embed_frames(np.stack([d.frames for d in batch]))
        enc.embed_audio([d.audio for d in batch])
    res["models_videos_per_s"] = n / (time.perf_counter() - t)

    items = pl.DataFrame({"item_id": list(range(n)), "download_url": paths})
    t = time.perf_counter()
    out = embed_items(
        items,
        enc,
        policy,
        EmbedParams(batch_size=a.batch_size, decode_workers=a.workers, model_threads=a.torch_threads),
    )
    with tempfile.TemporaryDirectory() as d:
        out.table.write_parquet(f"{d}/emb.parquet")
    res["end_to_end_videos_per_s"] = n / (time.perf_counter() - t)
    res["end_to_end_model_seconds"] = out.stats["model_seconds"]
    res["end_to_end_seconds"] = out.stats["seconds"]
    res["end_to_end_seconds_to_first_video"] = out.stats["seconds_to_first_video"]
    # after the pool has started (what a partition of many thousand videos sees)
    res["end_to_end_steady_videos_per_s"] = n / max(out.stats["seconds"] - out.stats["seconds_to_first_video"], 1e-9)
    assert out.stats["failed"] == 0
    res["end_to_end_over_decode"] = res["end_to_end_videos_per_s"] / res["decode_videos_per_s"]
    res["end_to_end_over_models"] = res["end_to_end_videos_per_s"] / res["models_videos_per_s"]
    res["steady_over_decode"] = res["end_to_end_steady_videos_per_s"] / res["decode_videos_per_s"]

    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
