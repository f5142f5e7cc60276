"""Content embeddings per item: fetch -> decode (worker processes) -> image + audio encoders -> one table.

For each item of the day (``item_id``, ``download_url``):

* ``frame_embeddings`` -- ``n_frames`` per-frame image embeddings, each L2-normalised (float32[N, D]);
* ``blip_embedding`` -- their mean, L2-normalised (the seeds' "BLIP embedding");
* ``audio_embedding`` -- the Whisper encoder's output averaged over the tokens that cover real audio,
  L2-normalised; null when the video has no sound (``status = no_audio``);
* ``fused_embedding`` -- ``[blip, audio] / sqrt(2)`` (unit norm; audio part zero when there is none);
* ``status`` -- ``ok``, ``no_audio`` or ``failed``; ``reason``/``detail`` say why (a fetch or decode
  code from :mod:`.media_fetch` / :mod:`.media_decode`). Failed items keep their row, with null vectors.

The :class:`EmbeddingCache` holds finished rows by ``(item_id, model fingerprint)`` in the asset
storage, so a video is fetched, decoded and embedded once however many partitions include it or
however often one is re-materialised. Failed items are not cached (the next run retries them).

Throughput: a pool of worker processes fetches and decodes (the CPU-heavy part) while the main
process batches their output through the models; the number of items in flight is bounded so memory
stays flat when the models are slower than decoding.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing as mp
import os
import threading
import time
import typing
import uuid

import numpy as np
import polars as pl
import torch

from ..progress import Progress
from .content_models import ContentEncoders
from .media_decode import DecodedMedia, MediaJob, fetch_and_decode
from .media_fetch import FetchPolicy

STATUS = pl.Enum(["ok", "no_audio", "failed"])


POOLED_COLUMNS = ("item_id", "language", "status", "blip_embedding")
"""What the readers of pooled vectors (pairs, PCA, two-tower, indexes) load from a partition."""
ENCODER_COLUMNS = ("item_id", "language", "upload_date", "status", "frame_embeddings", "audio_embedding")
"""What the content encoder (training, and its inference in item_collab_embeddings) loads: the only reader of
the per-frame vectors, the bulk of a partition."""


VECTOR_COLUMNS = ("blip_embedding", "frame_embeddings", "audio_embedding", "fused_embedding")
VECTOR_DTYPES = {"float32": pl.Float32(), "float16": pl.Float16()}


def with_vector_dtype(table: pl.DataFrame, dtype: str) -> pl.DataFrame:
    """The embedding columns stored as ``dtype`` (``float32``, or ``float16``: half the bytes on disk and in
    every reader, ~3 significant digits -- cosine similarities move by < 1e-3)."""
    if dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector_dtype must be one of {sorted(VECTOR_DTYPES)}, not {dtype!r}")
    inner = VECTOR_DTYPES[dtype]
    return table.with_columns(
        pl.col(c).cast(pl.Array(inner, table.schema[c].shape)) for c in VECTOR_COLUMNS if c in table.columns
    )


def float32_vectors(table: pl.DataFrame) -> pl.DataFrame:
    """Readers' side of :func:`with_vector_dtype`: every embedding column present, as float32 (the models' and
    numpy's working precision), whatever the partition was stored as."""
    return with_vector_dtype(table, "float32")


def output_schema(n_frames: int, image_dim: int, audio_dim: int) -> dict[str, pl.DataType]:
    return {
        "item_id": pl.Int64(),
        "status": STATUS,
        "reason": pl.String(),
        "detail": pl.String(),
        "blip_embedding": pl.Array(pl.Float32, image_dim),
        "frame_embeddings": pl.Array(pl.Float32, (n_frames, image_dim)),
        "audio_embedding": pl.Array(pl.Float32, audio_dim),
        "fused_embedding": pl.Array(pl.Float32, image_dim + audio_dim),
        "distinct_frames": pl.Int32(),
        "keyframes_only": pl.Boolean(),
        "duration_s": pl.Float32(),
        "audio_seconds": pl.Float32(),
        "source_bytes": pl.Int64(),
    }


class EmbeddingCache:
    """Finished embedding rows in an object store, indexed by (model fingerprint, item):
    ``{fingerprint}/buckets-{B}/{item_id % B:04d}/part-{time_ns}-{uuid}.parquet``.

    * A lookup of K items lists and reads only the buckets those items hash to (at most K of the B), and
      within a part only the row groups whose item_id range can hold them (parts are sorted by item_id and
      written in small row groups with statistics; the scan's ``is_in`` predicate skips the rest) -- never
      every part of the cache.
    * Each store appends one part per bucket it touches (unique names: concurrent partitions never collide;
      each part is written atomically). Failed items are never stored.
    * Compaction is per bucket and bounded: a bucket with more than ``max_parts`` parts is folded into one,
      reading only that bucket (~1/B of the cache). Compactions that overlap only leave duplicate rows,
      which lookups drop (the newest part wins).
    """

    ROW_GROUP_BYTES = 1024 * 1024
    """Row groups of ~1 MB (a few hundred rows of pooled and per-frame vectors): what a lookup of one item
    reads from a part at most."""

    def __init__(self, store: typing.Any, buckets: int = 256):
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, not {buckets}")
        self.store = store
        self.buckets = buckets

    def _bucket_prefix(self, fingerprint: str, bucket: int) -> str:
        return f"{fingerprint}/buckets-{self.buckets}/{bucket:04d}/"

    def _parts(self, fingerprint: str, bucket: int) -> list[str]:
        """The bucket's parts, oldest first (names start with their write time in ns)."""
        keys = [k for k in self.store.list(self._bucket_prefix(fingerprint, bucket)) if k.endswith(".parquet")]
        return sorted(keys, key=lambda k: k.rsplit("/", 1)[-1])

    def _by_bucket(self, item_ids: typing.Iterable[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i in sorted(set(int(i) for i in item_ids)):
            out.setdefault(i % self.buckets, []).append(i)
        return out

    def lookup(self, item_ids: typing.Sequence[int], fingerprint: str) -> pl.DataFrame:
        from ..storage import scan_parquet

        found = []
        for bucket, ids in self._by_bucket(item_ids).items():
            wanted = pl.Series("item_id", ids, dtype=pl.Int64).implode()
            for key in self._parts(fingerprint, bucket):
                part = scan_parquet(self.store, key).filter(pl.col("item_id").is_in(wanted)).collect()
                if part.height:
                    found.append(part)
        if not found:
            return pl.DataFrame()
        return (
            pl.concat(found, how="vertical_relaxed").unique("item_id", keep="last", maintain_order=True).sort("item_id")
        )

    def _write(self, rows: pl.DataFrame, fingerprint: str, bucket: int, tag: str) -> str:
        from ..storage import write_parquet

        name = f"part-{time.time_ns():020d}-{tag}{uuid.uuid4().hex[:12]}.parquet"  # names sort by write time
        key = self._bucket_prefix(fingerprint, bucket) + name
        write_parquet(self.store, key, rows.sort("item_id"), row_group_bytes=self.ROW_GROUP_BYTES)
        return key

    def store_rows(self, rows: pl.DataFrame, fingerprint: str) -> list[str]:
        """Append ``rows`` (one per item); returns the parts written, one per bucket touched."""
        if rows.height == 0:
            return []
        keyed = rows.with_columns(_bucket=pl.col("item_id") % self.buckets)
        return [
            self._write(part.drop("_bucket"), fingerprint, int(bucket), "")
            for (bucket,), part in keyed.partition_by("_bucket", as_dict=True, maintain_order=True).items()
        ]

    def compact(
        self, fingerprint: str, max_parts: int = 8, buckets: typing.Optional[typing.Iterable[int]] = None
    ) -> int:
        """Fold each bucket (of ``buckets``; default all) that has more than ``max_parts`` parts into one part;
        returns the parts removed. Reads one bucket at a time."""
        from ..storage import read_parquet

        removed = 0
        for bucket in sorted(set(buckets)) if buckets is not None else range(self.buckets):
            parts = self._parts(fingerprint, bucket)
            if len(parts) <= max_parts:
                continue
            merged = pl.concat([read_parquet(self.store, k) for k in parts], how="vertical_relaxed")
            self._write(merged.unique("item_id", keep="last", maintain_order=True), fingerprint, bucket, "compacted-")
            for k in parts:
                self.store.delete(k)
            removed += len(parts)
        return removed


@dataclasses.dataclass(frozen=True)
class EmbedParams:
    batch_size: int = 32
    """Videos per forward pass of the models."""
    decode_workers: int = 0
    """Fetch/decode worker processes; 0 = one per core, 1 = in this process."""
    max_in_flight: int = 0
    """Items fetched/decoded ahead of the models; 0 = 4 batches."""
    start_method: str = ""
    """How worker processes start: ``forkserver`` (default where available), ``spawn`` or ``fork``."""
    item_timeout_s: float = 600.0
    """Wall-clock limit of one item's fetch + decode in a worker; past it the item fails with ``timeout``
    (the fetch has its own ``deadline_s`` too)."""
    progress_every_s: float = 30.0
    """Seconds between progress lines (videos done, rate, ETA) while the day's videos are embedded."""
    vector_dtype: str = "float32"
    """How the embedding columns are stored: ``float32`` or ``float16`` (half the bytes on disk and in every
    reader; readers compute in float32 either way). The embedding cache keeps float32."""
    model_threads: int = 0
    """CPU threads of this process while the pool decodes; 0 = automatic: torch's default (all cores) on
    CPU, 2 on a GPU (the models run there; the cores go to the decoders). With small models on CPU,
    fewer threads leave room for the decoders (see benchmarks/README.md)."""


def items_to_embed(
    item_meta: pl.DataFrame, catalog: pl.DataFrame, day: "dt.date", active_upload_days: int
) -> pl.DataFrame:
    """The day's items to embed: every item watched that day (``item_meta``) and every *active* catalog
    item -- uploaded within the last ``active_upload_days`` days up to ``day`` (0: only ``item_meta``) --
    so a video uploaded today has a content embedding before anyone has played it. The cache keeps the
    daily cost to the items not yet embedded under the current model.

    Columns: ``item_id, language, download_url, upload_date, watched_on_day``; sorted by ``item_id``."""
    cols = ["item_id", "language", "download_url", "upload_date"]
    watched = item_meta.select(*cols).with_columns(pl.col("upload_date").cast(pl.Date), watched_on_day=pl.lit(True))
    if active_upload_days > 0:
        first = day - dt.timedelta(days=active_upload_days - 1)
        active = catalog.filter(pl.col("upload_date").is_between(first, day)).select(*cols)
    else:
        active = catalog.clear().select(*cols)
    fresh = active.with_columns(pl.col("upload_date").cast(pl.Date), watched_on_day=pl.lit(False)).join(
        watched.select("item_id"), on="item_id", how="anti"
    )
    return pl.concat([watched, fresh], how="vertical_relaxed").sort("item_id")


@dataclasses.dataclass
class EmbedResult:
    table: pl.DataFrame | pl.LazyFrame
    """The day's table; a ``LazyFrame`` (a scan of spilled chunks, streamed by the IO manager) when it was
    built in a spill directory."""
    stats: dict[str, typing.Any]


def _decoded_stream(jobs: list[MediaJob], params: EmbedParams) -> typing.Iterator[DecodedMedia]:
    workers = params.decode_workers or (os.cpu_count() or 1)
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fetch_and_decode, jobs)
        return
    in_flight = threading.BoundedSemaphore(params.max_in_flight or 4 * params.batch_size)

    def feed() -> typing.Iterator[MediaJob]:
        for job in jobs:
            in_flight.acquire()
            yield job

    method = params.start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    ctx = mp.get_context(method)
    if method == "forkserver":
        # workers fork from a small server that imported only the decoding code, so they start in
        # milliseconds and never import torch or whatever the run's main module pulls in
        ctx.set_forkserver_preload(["recsys_assets.stages.media_decode"])
    with ctx.Pool(min(workers, len(jobs))) as pool:
        for decoded in pool.imap(fetch_and_decode, feed(), chunksize=1):
            in_flight.release()
            yield decoded


def _rows_for_batch(batch: list[DecodedMedia], encoders: ContentEncoders) -> list[dict[str, typing.Any]]:
    ok = [d for d in batch if d.ok]
    rows = []
    frame_emb = encoders.embed_frames(np.stack([d.frames for d in ok])) if ok else None
    with_audio = [d for d in ok if d.audio is not None]
    audio_emb = encoders.embed_audio([d.audio for d in with_audio])
    audio_of = {id(d): audio_emb[k] for k, d in enumerate(with_audio)}
    zero_audio = np.zeros(encoders.audio_dim, dtype=np.float32)
    k = 0
    for d in batch:
        base = {
            "item_id": d.item_id,
            "detail": d.detail or None,
            "distinct_frames": d.distinct_frames,
            "keyframes_only": d.keyframes_only,
            "duration_s": d.duration_s,
            "audio_seconds": None if d.audio is None else d.audio.shape[0] / encoders.decode_params.audio_rate,
            "source_bytes": d.source_bytes,
        }
        if not d.ok:
            rows.append({**base, "status": "failed", "reason": d.error})
            continue
        frames = frame_emb[k]
        k += 1
        blip = frames.mean(0)
        blip = blip / max(float(np.linalg.norm(blip)), 1e-12)
        audio = audio_of.get(id(d))
        fused = np.concatenate([blip, zero_audio if audio is None else audio]) / np.sqrt(
            2.0 if audio is not None else 1.0
        )
        rows.append(
            {
                **base,
                "status": "ok" if audio is not None else "no_audio",
                "reason": None if audio is not None else d.audio_error,
                "blip_embedding": blip.astype(np.float32),
                "frame_embeddings": frames.astype(np.float32),
                "audio_embedding": audio,
                "fused_embedding": fused.astype(np.float32),
            }
        )
    return rows


def _to_frame(rows: list[dict[str, typing.Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=schema)
    cols: dict[str, pl.Series] = {}
    for name, dtype in schema.items():
        values = [r.get(name) for r in rows]
        if isinstance(dtype, pl.Array):
            shape = dtype.shape
            present = np.array([v is not None for v in values])
            dense = np.zeros((len(values), *shape), dtype=np.float32)
            for i, v in enumerate(values):
                if v is not None:
                    dense[i] = v
            s = pl.Series(name, dense).cast(dtype)
            cols[name] = pl.select(pl.when(pl.Series(present)).then(s)).to_series().alias(name)
        else:
            cols[name] = pl.Series(name, values, dtype=dtype)
    return pl.DataFrame(cols)


def embed_items(
    items: pl.DataFrame,
    encoders: ContentEncoders,
    policy: FetchPolicy,
    params: EmbedParams = EmbedParams(),
    cache: typing.Optional[EmbeddingCache] = None,
    log: typing.Callable[[str], None] = lambda msg: None,
) -> EmbedResult:
    """Embeddings for ``items`` (``item_id``, ``download_url``; other columns are kept in front)."""
    t0 = time.perf_counter()
    schema = output_schema(encoders.spec.n_frames, encoders.image_dim, encoders.audio_dim)
    ids = items["item_id"].to_list()
    cached = cache.lookup(ids, encoders.fingerprint) if cache is not None else pl.DataFrame()
    if cached.height:
        cached = cached.select(list(schema)).cast(schema)
    hit = set(cached["item_id"].to_list()) if cached.height else set()
    todo = items.filter(~pl.col("item_id").is_in(list(hit)))
    jobs = [
        MediaJob(int(i), u, policy, encoders.decode_params, max_seconds=params.item_timeout_s)
        for i, u in todo.select("item_id", "download_url").iter_rows()
    ]
    log(f"{len(ids)} items: {len(hit)} from the cache ({encoders.fingerprint}), {len(jobs)} to fetch, decode and embed")
    rows: list[dict[str, typing.Any]] = []
    batch: list[DecodedMedia] = []
    threads_before = torch.get_num_threads()
    if params.model_threads > 0:
        torch.set_num_threads(params.model_threads)
    elif encoders.device.type == "cuda":
        torch.set_num_threads(2)  # the GPU does the work: leave the cores to the decoders
    try:
        t_models = 0.0
        t_first = time.perf_counter()
        progress = Progress(log, "embedding", len(jobs), unit="videos", every_s=params.progress_every_s)
        first_result = None
        for decoded in _decoded_stream(jobs, params):
            if first_result is None:
                first_result = time.perf_counter() - t_first
            batch.append(decoded)
            if len(batch) == params.batch_size:
                t = time.perf_counter()
                rows += _rows_for_batch(batch, encoders)
                t_models += time.perf_counter() - t
                progress.update(len(batch))
                batch = []
        if batch:
            t = time.perf_counter()
            rows += _rows_for_batch(batch, encoders)
            t_models += time.perf_counter() - t
            progress.update(len(batch))
        if jobs:
            progress.finish()
    finally:
        torch.set_num_threads(threads_before)
    fresh = _to_frame(rows, schema)
    if cache is not None:
        stored = fresh.filter(pl.col("status") != "failed")  # the output schema's columns
        cache.store_rows(stored, encoders.fingerprint)
        # only the buckets just written can have grown: keeps every later lookup to a bounded number of reads
        cache.compact(encoders.fingerprint, buckets=(stored["item_id"] % cache.buckets).unique().to_list())
    extra = [c for c in items.columns if c not in schema]
    table = pl.concat([cached, fresh], how="vertical") if cached.height else fresh
    table = items.select(["item_id", *extra]).join(table, on="item_id", how="left").sort("item_id")
    table = with_vector_dtype(table, params.vector_dtype)
    elapsed = time.perf_counter() - t0
    reasons = fresh.filter(pl.col("status") != "ok").group_by("status", "reason").len().sort("len", descending=True)
    stats = {
        "items": len(ids),
        "cache_hits": len(hit),
        "decoded": len(jobs),
        "failed": int((table["status"] == "failed").sum()),
        "no_audio": int((table["status"] == "no_audio").sum()),
        "seconds": elapsed,
        "model_seconds": t_models,
        "videos_per_s": len(jobs) / max(time.perf_counter() - t_first, 1e-9) if jobs else 0.0,
        "seconds_to_first_video": first_result if jobs else 0.0,
        "fresh_reasons": {f"{s}:{r}": int(n) for s, r, n in reasons.iter_rows()},
    }
    return EmbedResult(table, stats)


class VectorSource(typing.Protocol):
    """Content vectors generated instead of decoded and encoded (``simulator.content_vectors``)."""

    spec: typing.Any  # n_frames, image_dim, audio_dim
    fingerprint: str

    def frames(self, item_ids: np.ndarray) -> np.ndarray: ...
    def audio(self, item_ids: np.ndarray) -> np.ndarray: ...


def embed_generated(
    items: pl.DataFrame,
    source: VectorSource,
    params: EmbedParams = EmbedParams(),
    chunk: int = 20_000,
    log: typing.Callable[[str], None] = lambda msg: None,
    spill_dir: typing.Optional[str] = None,
) -> EmbedResult:
    """The same table as :func:`embed_items` for ``items``, from a :class:`VectorSource` (no media, no models,
    no cache: generating is cheaper than a lookup), ``chunk`` items at a time, each stored as
    ``params.vector_dtype`` at once (the whole day never exists in float32). With ``spill_dir`` each chunk
    is written there as it is made and the table is a lazy scan of them (the day is never in memory: the
    IO manager streams it into the partition); the directory must outlive the scan."""
    t0 = time.perf_counter()
    spec = source.spec
    schema = output_schema(spec.n_frames, spec.image_dim, spec.audio_dim)
    extra = [c for c in items.columns if c not in schema]
    items = items.sort("item_id")
    ids = items["item_id"].to_numpy()
    parts = []
    for s in range(0, len(ids), chunk):
        part = ids[s : s + chunk]
        frames = source.frames(part)
        audio = source.audio(part)
        blip = frames.mean(1)
        blip /= np.maximum(np.linalg.norm(blip, axis=1, keepdims=True), 1e-12)
        fused = np.concatenate([blip, audio], axis=1) / np.sqrt(2.0)
        n = len(part)
        parts.append(
            pl.DataFrame(
                {
                    "status": pl.Series(["ok"] * n, dtype=STATUS),
                    "reason": pl.Series([None] * n, dtype=pl.String),
                    "detail": pl.Series([None] * n, dtype=pl.String),
                    "blip_embedding": pl.Series(blip.astype(np.float32)),
                    "frame_embeddings": pl.Series(frames),
                    "audio_embedding": pl.Series(audio),
                    "fused_embedding": pl.Series(fused.astype(np.float32)),
                    "distinct_frames": np.full(n, spec.n_frames, np.int32),
                    "keyframes_only": np.zeros(n, bool),
                    "duration_s": pl.Series([None] * n, dtype=pl.Float32),
                    "audio_seconds": pl.Series([None] * n, dtype=pl.Float32),
                    "source_bytes": pl.Series([None] * n, dtype=pl.Int64),
                }
            )
            .cast({k: v for k, v in schema.items() if k != "item_id"})
            .pipe(with_vector_dtype, params.vector_dtype)
            .pipe(
                lambda frame, s=s, n=n: pl.concat(
                    [items.slice(s, n).select("item_id", *extra), frame], how="horizontal"
                )
            )
        )
        del frames, audio, blip, fused
        if spill_dir is not None:
            path = f"{spill_dir}/part-{len(parts):05d}.parquet"
            parts[-1].write_parquet(path, compression="zstd", compression_level=1, statistics=True)
            parts[-1] = path
    log(f"{len(ids)} items: content vectors generated ({source.fingerprint})")
    if spill_dir is not None and parts:
        return EmbedResult(pl.scan_parquet(parts), _generated_stats(len(ids), time.perf_counter() - t0))
    # the chunks as they are (no join, no sort, no rechunk: items were sorted first): one copy of the day
    empty = (
        items.head(0)
        .select("item_id", *extra)
        .with_columns(pl.lit(None, dtype).alias(c) for c, dtype in schema.items() if c != "item_id")
    )
    table = pl.concat(parts, how="vertical", rechunk=False) if parts else with_vector_dtype(empty, params.vector_dtype)
    del parts
    return EmbedResult(table, _generated_stats(len(ids), time.perf_counter() - t0))


def _generated_stats(n: int, elapsed: float) -> dict[str, typing.Any]:
    return {
        "items": n,
        "cache_hits": 0,
        "decoded": 0,
        "generated": n,
        "failed": 0,
        "no_audio": 0,
        "seconds": elapsed,
        "model_seconds": 0.0,
        "videos_per_s": n / max(elapsed, 1e-9),
        "seconds_to_first_video": 0.0,
        "fresh_reasons": {},
    }


def validate(table: pl.DataFrame, min_coverage: float) -> dict[str, tuple[bool, dict]]:
    n = table.height
    status = table["status"]
    embedded = status != "failed"  # the vector columns of these rows only, a chunk at a time: never a copy
    n_embedded = int(embedded.sum())
    coverage = n_embedded / n if n else 1.0
    failed_reasons = dict(table.filter(pl.col("status") == "failed").group_by("reason").len().iter_rows())
    norms_ok, finite_ok = True, True
    atol = 4e-3 if table.schema["blip_embedding"].inner == pl.Float16 else 1e-3  # half precision: ~3 digits
    for s in range(0, n, 65_536):
        mask = embedded.slice(s, 65_536)
        blip = table["blip_embedding"].slice(s, 65_536).filter(mask).to_numpy().astype(np.float32)
        if len(blip):
            finite_ok = finite_ok and bool(np.isfinite(blip).all())
            norms_ok = norms_ok and bool(np.allclose(np.linalg.norm(blip, axis=1), 1.0, atol=atol))
        audio = table["audio_embedding"].slice(s, 65_536).filter(status.slice(s, 65_536) == "ok")
        if audio.len():
            finite_ok = finite_ok and bool(np.isfinite(audio.to_numpy().astype(np.float32)).all())
    unexplained = table.filter((pl.col("status") != "ok") & pl.col("reason").is_null()).height
    return {
        "media_coverage": (
            coverage >= min_coverage,
            {"coverage": coverage, "min_coverage": min_coverage, "failed_by_reason": failed_reasons},
        ),
        "embeddings_finite_unit_norm": (finite_ok and norms_ok, {"finite": finite_ok, "unit_norm": norms_ok}),
        "every_item_listed_with_reason": (
            unexplained == 0 and table["status"].null_count() == 0,
            {"rows_without_status": table["status"].null_count(), "non_ok_rows_without_reason": unexplained},
        ),
    }
