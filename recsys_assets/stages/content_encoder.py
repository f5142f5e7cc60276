"""Seed 000's core: a content encoder trained so that frames + audio land on the item's ALS vector (cold start).

Model (:class:`ContentToCollab`, one per language, as the ALS factors are):

* inputs: the per-frame image embeddings (N x Df) and the audio embedding (Da) of
  ``item_content_embeddings`` -- the backbones are frozen, their outputs are the features;
* each input standardised by the training set's per-dimension mean and std (kept in the weights);
* frames: a shared projection, then attention pooling over frames (a learned score per frame,
  softmax) or a plain mean; audio: a projection, zeroed when the video has no sound;
* the two concatenated, then an MLP to the ALS factor dimension.

Objectives (weights by config):

* ``clip``: symmetric InfoNCE between the batch's predicted and true ALS vectors (cosine logits times
  a learnable ``logit_scale`` = 1/temperature, clamped at 100), as CLIP;
* ``pair``: seed 000 "after inputs" -- for ``pair_blip_scores`` pairs of training items, positive
  pairs' predictions pulled together (``1 - cos``), negatives pushed below ``pair_margin``
  (``relu(cos - margin)``), each pair weighted by ``bucket_weights[bucket]`` of its BLIP-similarity
  bucket (empty = 1 for all);
* ``regression``: mean squared error between predicted and true vectors, divided by the mean squared
  norm of the true vectors. InfoNCE only fixes directions; retrieval scores are dot products with
  client vectors, where an item vector's norm matters, so this term learns the scale.

Items are split by a seeded hash of ``item_id``: a ``val_share`` of items never enters training (nor
any training pair). The split is stored with the weights (:func:`to_artifact`, :func:`split_of`), so what
reads the model knows which items it was fitted on without recomputing the rule. Training is seeded and
deterministic on CPU; it stops early when the validation loss has not improved for ``patience`` epochs and
keeps the best epoch's weights.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing

import numpy as np
import polars as pl
import torch
from torch import nn

from ..artifacts import ModelArtifact
from .ranking_metrics import retrieval_at_k
from .torch_device import resolve_device


@dataclasses.dataclass(frozen=True)
class EncoderParams:
    """The content -> collaborative encoder's architecture, losses and training schedule."""

    hidden: int = 64
    """Width of the frame/audio projections and of the head."""
    dropout: float = 0.5
    pooling: str = "attention"
    """``attention`` or ``mean`` over frames."""
    clip_weight: float = 1.0
    """Weight of the symmetric InfoNCE loss against the ALS vectors."""
    pair_weight: float = 0.5
    """Weight of the BLIP-bucketed pair loss (pair_blip_scores)."""
    regression_weight: float = 1.0
    """Weight of the MSE scale term (retrieval is a dot product, so the norm matters)."""
    pair_margin: float = 0.0
    """Negatives' cosine is pushed below this margin."""
    bucket_weights: tuple[float, ...] = (0.5, 0.611, 0.722, 0.833, 0.944, 1.056, 1.167, 1.278, 1.389, 1.5)
    """Weight of a pair by its BLIP-similarity bucket (index = bucket; the last weight for any higher bucket);
    empty = 1 for all. The default grows with similarity: a positive pair whose content agrees is a reliable
    pull, a negative that looks alike is a hard negative (ablation in benchmarks/README.md)."""
    init_temperature: float = 0.07
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 120
    patience: int = 10
    """Stop after this many epochs without a better validation loss; the best epoch is kept."""
    val_share: float = 0.2
    """Share of items (by seeded hash) held out for validation."""
    split_seed: int = 0
    seed: int = 0
    min_items: int = 64
    """A language with fewer items that have both content and an ALS vector is not trained."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda``."""


def is_validation(item_ids: pl.Series | pl.Expr, share: float, seed: int) -> pl.Series | pl.Expr:
    """The item-level split: an item is in validation iff its seeded hash falls in the first ``share``."""
    h = item_ids.hash(seed)
    return (h % 1_000_000) < int(round(share * 1_000_000))


class ContentToCollab(nn.Module):
    def __init__(self, frame_dim: int, audio_dim: int, out_dim: int, params: EncoderParams):
        super().__init__()
        hidden, dropout, pooling = params.hidden, params.dropout, params.pooling
        if pooling not in ("attention", "mean"):
            raise ValueError(f"pooling must be 'attention' or 'mean', not {pooling!r}")
        self.pooling = pooling
        self.register_buffer("frame_mean", torch.zeros(frame_dim))
        self.register_buffer("frame_std", torch.ones(frame_dim))
        self.register_buffer("audio_mean", torch.zeros(audio_dim))
        self.register_buffer("audio_std", torch.ones(audio_dim))
        self.frame_proj = nn.Sequential(nn.Linear(frame_dim, hidden), nn.GELU())
        self.frame_score = nn.Linear(hidden, 1)
        self.audio_proj = nn.Sequential(nn.Linear(audio_dim, hidden), nn.GELU())
        self.head = nn.Sequential(
            nn.LayerNorm(2 * hidden),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, out_dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / params.init_temperature)))

    def set_standardisation(
        self,
        frames: torch.Tensor,
        audio: torch.Tensor,
        has_audio: torch.Tensor,
        rows: typing.Optional[np.ndarray] = None,
    ) -> None:
        """Per-dimension mean and std of the frames and the audio of ``rows`` (default: all), the frames in
        float64 chunks of items (they may be float16 and many: never copied whole)."""
        rows = np.arange(frames.shape[0]) if rows is None else np.asarray(rows)
        dim = frames.shape[-1]
        total = torch.zeros(dim, dtype=torch.float64)
        squares = torch.zeros(dim, dtype=torch.float64)
        for s in range(0, len(rows), 8192):
            chunk = frames[torch.from_numpy(rows[s : s + 8192])].reshape(-1, dim).double()
            total += chunk.sum(0)
            squares += (chunk * chunk).sum(0)
        n = max(len(rows) * (frames.shape[-2] if frames.dim() == 3 else 1), 1)
        mean = total / n
        var = (squares - n * mean * mean) / max(n - 1, 1)
        self.frame_mean.copy_(mean.float())
        self.frame_std.copy_(var.clamp_min(0).sqrt().float().clamp_min(1e-6))
        audio, has_audio = audio[rows], has_audio[rows]
        a = audio[has_audio] if bool(has_audio.any()) else audio
        self.audio_mean.copy_(a.mean(0))
        self.audio_std.copy_(a.std(0).clamp_min(1e-6) if a.shape[0] > 1 else torch.ones_like(self.audio_std))

    def forward(self, frames: torch.Tensor, audio: torch.Tensor, has_audio: torch.Tensor) -> torch.Tensor:
        h = self.frame_proj((frames - self.frame_mean) / self.frame_std)  # (B, N, H)
        if self.pooling == "attention":
            w = torch.softmax(self.frame_score(h).squeeze(-1), dim=1)
            pooled = (w.unsqueeze(-1) * h).sum(1)
        else:
            pooled = h.mean(1)
        a = self.audio_proj((audio - self.audio_mean) / self.audio_std) * has_audio.float().unsqueeze(-1)
        return self.head(torch.cat([pooled, a], dim=-1))


def clip_loss(pred: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``pred`` should pick row i of ``target`` and vice versa."""
    p = nn.functional.normalize(pred, dim=-1)
    t = nn.functional.normalize(target, dim=-1)
    logits = logit_scale.clamp(max=math.log(100.0)).exp() * p @ t.T
    labels = torch.arange(len(p), device=p.device)
    return 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels))


def pair_loss(
    a: torch.Tensor, b: torch.Tensor, positive: torch.Tensor, weight: torch.Tensor, margin: float
) -> torch.Tensor:
    """Weighted mean over pairs of ``1 - cos`` (positives) and ``relu(cos - margin)`` (negatives)."""
    cos = nn.functional.cosine_similarity(a, b, dim=-1)
    per_pair = torch.where(positive, 1.0 - cos, torch.relu(cos - margin))
    return (per_pair * weight).sum() / weight.sum().clamp_min(1e-12)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    return ((pred - target) ** 2).sum(-1).mean() / scale


@dataclasses.dataclass
class Features:
    item_ids: np.ndarray
    frames: torch.Tensor
    audio: torch.Tensor
    has_audio: torch.Tensor

    def take(self, idx: typing.Any) -> "Features":
        """The rows ``idx``, frames as float32 (they may be held as float16: half the memory of the window)."""
        return Features(self.item_ids[idx], self.frames[idx].float(), self.audio[idx], self.has_audio[idx])


CONTENT_COLUMNS = ("item_id", "frame_embeddings", "audio_embedding")

Part = pl.DataFrame | pl.LazyFrame


def row_count(part: Part) -> int:
    """Rows of a part; a lazy part is counted by a query that reads no vectors."""
    return part.height if isinstance(part, pl.DataFrame) else int(part.select(pl.len()).collect().item())


def features(rows: Part | list[Part], batch_rows: int = 8192, n_rows: typing.Optional[int] = None) -> Features:
    """Model inputs from ``item_content_embeddings`` rows (failed rows must be filtered out first), in row order.
    Frames stored as float16 stay float16 here (the bulk of the inputs) and become float32 per batch.

    ``rows`` may be a list of parts (a window's days), frames or lazy queries; the list is consumed (each part is
    dropped once copied). A lazy part is counted first, then streamed ``batch_rows`` rows at a time into the model
    inputs, so its rows are never held as a frame as well: the frames are in memory once, plus one batch.
    ``n_rows``: the parts' total, when the caller has counted them already (not counted again)."""
    parts = rows if isinstance(rows, list) else [rows]
    if not parts:
        raise ValueError("features() needs at least one frame of rows (its schema gives the dimensions)")
    first = parts[0]
    schema = first.schema if isinstance(first, pl.DataFrame) else first.collect_schema()
    frame_dtype, audio_dtype = schema["frame_embeddings"], schema["audio_embedding"]
    leaf = frame_dtype
    while isinstance(leaf, pl.Array):
        leaf = leaf.inner
    store = np.float16 if leaf == pl.Float16 else np.float32
    n = sum(row_count(p) for p in parts) if n_rows is None else n_rows
    item_ids = np.empty(n, dtype=np.int64)
    frames = np.empty((n, *frame_dtype.shape), dtype=store)
    audio = np.zeros((n, audio_dtype.size), dtype=np.float32)
    has_audio = np.zeros(n, dtype=bool)
    start = 0

    def copy(batch: pl.DataFrame) -> None:
        nonlocal start
        end = start + batch.height
        if end > n:
            raise ValueError(f"features(): the parts gave more rows than the {n} they were counted at")
        item_ids[start:end] = batch["item_id"].to_numpy()
        frames[start:end] = batch["frame_embeddings"].to_numpy()
        present = batch["audio_embedding"].is_not_null().to_numpy()
        has_audio[start:end] = present
        if present.any():  # the audio column alone is filtered (filtering the batch would copy its frames)
            audio[start:end][present] = batch["audio_embedding"].filter(pl.Series(present)).to_numpy()
        start = end

    while parts:
        part = parts.pop(0)
        if isinstance(part, pl.LazyFrame):
            for batch in part.select(CONTENT_COLUMNS).collect_batches(chunk_size=batch_rows, maintain_order=True):
                copy(batch)
        elif part.height:
            copy(part)
        del part
    if start != n:
        raise ValueError(f"features(): the parts gave {start} rows, counted at {n}")
    return Features(item_ids, torch.from_numpy(frames), torch.from_numpy(audio), torch.from_numpy(has_audio))


def pair_rows(
    item_ids: np.ndarray, usable: np.ndarray, pairs: pl.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``pairs`` (item_id_1, item_id_2, pair_type, bucket) as row indices into ``item_ids`` (unique ids, any order):
    ``(a, b, positive, bucket)`` of the pairs whose two items are rows with ``usable`` true, sorted by a, b, then
    positives first. Rows are found by a sorted search (no join: no copy of the pairs per key); row indices are
    int32 when they fit, so a day's tens of millions of pairs cost 10 bytes each."""
    order = np.argsort(item_ids, kind="stable")
    sorted_ids = item_ids[order]
    if len(sorted_ids) > 1 and not (sorted_ids[1:] > sorted_ids[:-1]).all():
        raise ValueError("pair_rows: item ids must be unique")
    index_dtype = np.int32 if len(item_ids) < 2**31 else np.int64
    if not len(sorted_ids):
        empty = np.zeros(0, dtype=index_dtype)
        return empty, empty.copy(), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    if pairs["item_id_1"].null_count() or pairs["item_id_2"].null_count():
        pairs = pairs.drop_nulls(["item_id_1", "item_id_2"])

    def rows_of(column: str) -> tuple[np.ndarray, np.ndarray]:
        ids = pairs[column].to_numpy()
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        rows = order[at].astype(index_dtype)
        return rows, (sorted_ids[at] == ids) & usable[rows]

    a, keep_a = rows_of("item_id_1")
    b, keep_b = rows_of("item_id_2")
    keep = keep_a & keep_b
    del keep_a, keep_b
    positive = (pairs["pair_type"].cast(pl.String) == "positive").to_numpy()
    buckets = pairs["bucket"].fill_null(0).to_numpy()
    a, b, positive, buckets = a[keep], b[keep], positive[keep], buckets[keep]
    by = np.lexsort((~positive, b, a))  # a, then b, then positives first
    return a[by], b[by], positive[by], buckets[by].astype(np.int64)


@dataclasses.dataclass
class TrainResult:
    model: ContentToCollab
    history: list[dict[str, float]]
    best_epoch: int
    train_ids: np.ndarray
    val_ids: np.ndarray
    train_pairs: int
    seconds: float


def train_encoder(
    feats: Features,
    targets: np.ndarray,
    is_val: np.ndarray,
    pairs: typing.Optional[pl.DataFrame],
    params: EncoderParams,
    log: typing.Callable[[str], None] = lambda m: None,
) -> TrainResult:
    """Fit one language's encoder. ``targets``: the ALS vectors aligned with ``feats``; ``pairs``:
    item_id_1, item_id_2, pair_type, bucket (pairs touching a validation item are dropped here)."""
    t0 = time.perf_counter()
    device = resolve_device(params.device)
    torch.manual_seed(params.seed)
    gen = torch.Generator().manual_seed(params.seed)
    y = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    model = ContentToCollab(feats.frames.shape[-1], feats.audio.shape[-1], y.shape[-1], params)
    model.set_standardisation(feats.frames, feats.audio, feats.has_audio, rows=tr)
    model.to(device)
    scale = float((y[tr] ** 2).sum(-1).mean().clamp_min(1e-12))

    # training pairs: both items in the training split, as row indices
    pair_a = pair_b = pair_pos = pair_w = None
    n_pairs = 0
    if pairs is not None and pairs.height and params.pair_weight > 0:
        a, b, positive, buckets = pair_rows(feats.item_ids, ~is_val, pairs)
        n_pairs = len(a)
        if n_pairs:
            pair_a, pair_b, pair_pos = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(positive)
            if params.bucket_weights:
                bw = np.asarray(params.bucket_weights, dtype=np.float32)
                pair_w = torch.from_numpy(bw[np.clip(buckets, 0, len(bw) - 1)])
            else:
                pair_w = torch.ones(n_pairs)
        del a, b, positive, buckets

    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)

    def batch_losses(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        f = feats.take(idx.numpy())
        pred = model(f.frames.to(device), f.audio.to(device), f.has_audio.to(device))
        tgt = y[idx].to(device)
        clip = clip_loss(pred, tgt, model.logit_scale) if len(idx) > 1 else pred.sum() * 0
        return {"clip": clip, "regression": regression_loss(pred, tgt, scale)}

    def total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        w = {"clip": params.clip_weight, "regression": params.regression_weight, "pair": params.pair_weight}
        return sum(w[k] * v for k, v in losses.items())

    history: list[dict[str, float]] = []
    best, best_state, best_epoch, stale = float("inf"), None, -1, 0
    tr_t = torch.from_numpy(tr)
    va_t = torch.from_numpy(va)
    for epoch in range(params.max_epochs):
        model.train()
        perm = tr_t[torch.randperm(len(tr_t), generator=gen)]
        pair_perm = torch.randperm(n_pairs, generator=gen) if n_pairs else None
        n_batches = max(1, math.ceil(len(perm) / params.batch_size))
        # at most one item batch's worth of pairs per step: an epoch sees a fresh random subset of the pairs
        pair_bs = min(math.ceil(n_pairs / n_batches), params.batch_size) if n_pairs else 0
        sums: dict[str, float] = {}
        for bi in range(n_batches):
            idx = perm[bi * params.batch_size : (bi + 1) * params.batch_size]
            losses = batch_losses(idx)
            if n_pairs:
                sel = pair_perm[bi * pair_bs : (bi + 1) * pair_bs]
                if len(sel):
                    a, b = pair_a[sel].numpy(), pair_b[sel].numpy()
                    fa, fb = feats.take(a), feats.take(b)
                    pa = model(fa.frames.to(device), fa.audio.to(device), fa.has_audio.to(device))
                    pb = model(fb.frames.to(device), fb.audio.to(device), fb.has_audio.to(device))
                    losses["pair"] = pair_loss(
                        pa, pb, pair_pos[sel].to(device), pair_w[sel].to(device), params.pair_margin
                    )
            loss = total(losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        row = {"epoch": epoch, **{f"train_{k}": v / n_batches for k, v in sums.items()}}
        model.eval()
        with torch.no_grad():
            vl: dict[str, float] = {}
            nb = max(1, math.ceil(len(va_t) / params.batch_size))
            for bi in range(nb):
                idx = va_t[bi * params.batch_size : (bi + 1) * params.batch_size]
                if len(idx) == 0:
                    continue
                for k, v in batch_losses(idx).items():
                    vl[k] = vl.get(k, 0.0) + float(v) / nb
            val_loss = params.clip_weight * vl.get("clip", 0.0) + params.regression_weight * vl.get("regression", 0.0)
        row.update(
            {f"val_{k}": v for k, v in vl.items()},
            val_loss=val_loss,
            temperature=float(1.0 / model.logit_scale.detach().exp()),
        )
        history.append(row)
        log(
            f"epoch {epoch}: train loss {sum(row[f'train_{k}'] for k in sums):.4f}, val loss {val_loss:.4f}, "
            f"temperature {row['temperature']:.3f}"
        )
        if val_loss < best - 1e-6:
            best, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= params.patience:
                log(f"early stop at epoch {epoch}: best val_loss {best:.4f} at epoch {best_epoch}")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval().to("cpu")
    return TrainResult(
        model, history, best_epoch, feats.item_ids[tr], feats.item_ids[va], n_pairs, time.perf_counter() - t0
    )


@torch.no_grad()
def predict(
    model: ContentToCollab, feats: Features, rows: typing.Optional[np.ndarray] = None, batch_size: int = 4096
) -> np.ndarray:
    """The model's vectors for ``rows`` of ``feats`` (default: all), a batch at a time (float32 frames of one
    batch in memory, never of all rows)."""
    model.eval()
    idx = np.arange(len(feats.item_ids)) if rows is None else np.asarray(rows)
    out = []
    for s in range(0, len(idx), batch_size):
        f = feats.take(idx[s : s + batch_size])
        out.append(model(f.frames, f.audio, f.has_audio).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.head[-1].out_features), dtype=np.float32)


def retrieval_metrics(
    pred: np.ndarray, true: np.ndarray, ks: typing.Sequence[int] = (1, 10, 50), cells: int = 1 << 24
) -> dict[str, float]:
    """Mean cosine(pred_i, true_i); recall@k of finding true_i among all rows of ``true`` by cosine with
    pred_i (ranked as every evaluation ranks: :func:`~recsys_assets.stages.ranking_metrics.retrieval_at_k`),
    scored in blocks of rows of at most ``cells`` scores (64 MiB of float32 by default) whatever the item count."""
    if len(pred) == 0:
        return {"mean_cosine": float("nan"), **{f"recall@{k}": float("nan") for k in ks}}
    block = max(1, cells // len(true))
    p = pred / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
    t = true / np.maximum(np.linalg.norm(true, axis=1, keepdims=True), 1e-12)
    own = np.einsum("nd,nd->n", p, t)
    hits: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for s in range(0, len(p), block):
        rows = np.arange(s, min(s + block, len(p)))
        target = np.zeros((len(rows), len(t)), dtype=bool)
        target[np.arange(len(rows)), rows] = True
        per_row = retrieval_at_k(p[rows] @ t.T, target, recall_ks=ks, ndcg_ks=())
        for k in ks:
            hits[k].append(per_row[f"recall@{k}"])
    return {"mean_cosine": float(own.mean()), **{f"recall@{k}": float(np.concatenate(hits[k]).mean()) for k in ks}}


@dataclasses.dataclass
class LanguageModels:
    models: dict[str, ContentToCollab]
    results: dict[str, TrainResult]
    stats: list[dict[str, typing.Any]]
    config: dict[str, typing.Any]


ContentSource = typing.Callable[[pl.Series], list[Part]]
"""Item ids (sorted) -> the usable content rows of those that have one, in parts (e.g. one per day of a window;
frames, or lazy queries that :func:`features` streams): item_id, frame_embeddings, audio_embedding, in a
deterministic order (failed items left out). Called once per language, so that one language's frames are in
memory at a time; :func:`features` consumes the parts one by one."""

PairSource = typing.Callable[[pl.Series], pl.DataFrame]
"""Item ids (sorted) -> the scored pairs among them: item_id_1, item_id_2, pair_type, bucket (pairs with an item
outside the ids may be included; they are dropped). Called once per language with its training items, so that
one language's pairs are in memory at a time, not the day's."""


def in_memory(embeddings: pl.DataFrame) -> ContentSource:
    """A :data:`ContentSource` over ``item_content_embeddings`` rows in memory (one row per item)."""
    usable = embeddings.filter(pl.col("status") != "failed").select(CONTENT_COLUMNS)
    return lambda ids: [usable.join(ids.to_frame("item_id"), on="item_id", how="semi").sort("item_id")]


def train_all(
    embeddings: pl.DataFrame | ContentSource,
    als_factors: pl.DataFrame,
    pairs: typing.Optional[pl.DataFrame | PairSource],
    params: EncoderParams,
    languages: typing.Optional[typing.Sequence[str]] = None,
    log: typing.Callable[[str], None] = lambda m: None,
) -> LanguageModels:
    """One encoder per ALS language, on the items with both content embeddings and an ALS vector.

    ``embeddings``: item_id, status, frame_embeddings, audio_embedding (one row per item), or a
    :data:`ContentSource` that loads one language's items at a time; ``als_factors``: item_id, language,
    vector; ``pairs``: item_id_1, item_id_2, pair_type, bucket, or a :data:`PairSource` that loads one language's.
    """
    content = in_memory(embeddings) if isinstance(embeddings, pl.DataFrame) else embeddings
    models, results, stats, lang_cfg = {}, {}, [], {}
    for lang in sorted(als_factors["language"].unique().to_list()):
        if languages and lang not in languages:
            continue
        parts = rows = feats = None  # the previous language's frames go before this one's are loaded
        als = als_factors.filter(pl.col("language") == lang).select("item_id", "vector").sort("item_id")
        parts = [p.select(CONTENT_COLUMNS) for p in content(als["item_id"])]  # als's items, in a fixed order
        n_rows = sum(row_count(p) for p in parts)
        st: dict[str, typing.Any] = {"language": lang, "als_items": als.height, "items_with_content": n_rows}
        if n_rows < max(params.min_items, 1):
            parts = None
            st.update(
                trained=False,
                skipped=f"{n_rows} items with content and ALS vectors < min_items {params.min_items}",
            )
            stats.append(st)
            log(f"content encoder for {lang!r} not trained: {st['skipped']}")
            continue
        # consumes the parts (counted above): the frames live on in feats, one copy of them, not two
        feats = features(parts, n_rows=n_rows)
        rows = pl.DataFrame({"item_id": feats.item_ids})
        vectors = rows.join(als, on="item_id", how="left", maintain_order="left")["vector"]
        targets = vectors.to_numpy().astype(np.float32)
        is_val = is_validation(rows["item_id"], params.val_share, params.split_seed).to_numpy()
        if is_val.all() or not is_val.any():
            st.update(
                trained=False,
                skipped=f"the split left {int((~is_val).sum())} training / {int(is_val.sum())} validation items",
            )
            stats.append(st)
            continue
        lang_pairs = pairs  # a frame, None, or a source asked for this language's training pairs only
        if callable(pairs):
            lang_pairs = (
                pairs(pl.Series("item_id", np.sort(feats.item_ids[~is_val]))) if params.pair_weight > 0 else None
            )
        res = train_encoder(feats, targets, is_val, lang_pairs, params, log=log)
        lang_pairs = None
        val_pred = predict(res.model, feats, rows=np.flatnonzero(is_val))
        metrics = retrieval_metrics(val_pred, targets[is_val])
        rng = np.random.default_rng(params.seed)
        floor = retrieval_metrics(rng.standard_normal(val_pred.shape).astype(np.float32), targets[is_val])
        st.update(
            trained=True,
            train_items=len(res.train_ids),
            val_items=len(res.val_ids),
            train_pairs=res.train_pairs,
            epochs=len(res.history),
            best_epoch=res.best_epoch,
            best_val_loss=float(res.history[res.best_epoch]["val_loss"]),
            seconds=res.seconds,
            **{f"val_{k}": v for k, v in metrics.items()},
            **{f"random_{k}": v for k, v in floor.items()},
        )
        stats.append(st)
        models[lang], results[lang] = res.model, res
        lang_cfg[lang] = {
            "frame_dim": int(feats.frames.shape[-1]),
            "audio_dim": int(feats.audio.shape[-1]),
            "out_dim": int(targets.shape[-1]),
            "n_frames": int(feats.frames.shape[1]),
        }
    config = {**dataclasses.asdict(params), "languages": lang_cfg}
    return LanguageModels(models, results, stats, config)


def validate(result: LanguageModels) -> dict[str, tuple[bool, dict]]:
    leaks = {
        lang: int(np.isin(r.train_ids, r.val_ids).sum())
        + int(
            (
                ~is_validation(pl.Series(r.val_ids), result.config["val_share"], result.config["split_seed"]).to_numpy()
            ).sum()
        )
        for lang, r in result.results.items()
    }
    finite = all(
        bool(torch.isfinite(p).all())
        for m in result.models.values()
        for p in m.state_dict().values()
        if p.is_floating_point()
    )
    trained = [s for s in result.stats if s.get("trained")]
    beats = all(s["val_recall@10"] > s["random_recall@10"] for s in trained)
    return {
        "item_split_never_leaks": (sum(leaks.values()) == 0, {"train_items_in_validation": leaks}),
        "weights_finite": (finite, {"languages_trained": len(result.models)}),
        "beats_random_on_validation": (
            beats and bool(trained),
            {
                s["language"]: {"val_recall@10": s["val_recall@10"], "random_recall@10": s["random_recall@10"]}
                for s in trained
            },
        ),
    }


# --- artifacts: every language's weights + the config, one safetensors file -------------------------


SPLIT_PREFIX = "split"
"""Artifact arrays ``split.{language}.train_ids`` / ``split.{language}.validation_ids``: the items each
language's encoder was fitted and validated on, stored with its weights (readers never recompute them)."""


def to_artifact(
    models: dict[str, ContentToCollab],
    config: dict[str, typing.Any],
    splits: typing.Optional[dict[str, TrainResult]] = None,
) -> ModelArtifact:
    arrays = {f"{lang}.{k}": v.detach().cpu().numpy() for lang, m in models.items() for k, v in m.state_dict().items()}
    for lang, r in (splits or {}).items():
        arrays[f"{SPLIT_PREFIX}.{lang}.train_ids"] = np.asarray(r.train_ids, dtype=np.int64)
        arrays[f"{SPLIT_PREFIX}.{lang}.validation_ids"] = np.asarray(r.val_ids, dtype=np.int64)
    return ModelArtifact(arrays, config)


def split_of(artifact: ModelArtifact) -> pl.DataFrame:
    """``item_id, language, encoder_split`` (``train`` / ``validation``) as stored with the encoder."""
    parts = []
    for lang in sorted(artifact.config.get("languages", {})):
        for split, name in (("train", "train_ids"), ("validation", "validation_ids")):
            ids = artifact.arrays.get(f"{SPLIT_PREFIX}.{lang}.{name}")
            if ids is None:
                raise ValueError(f"content encoder artifact has no stored {split} split for {lang!r}")
            parts.append(
                pl.DataFrame({"item_id": ids.astype(np.int64)}).with_columns(
                    language=pl.lit(lang), encoder_split=pl.lit(split)
                )
            )
    if not parts:
        return pl.DataFrame(schema={"item_id": pl.Int64, "language": pl.String, "encoder_split": pl.String})
    return pl.concat(parts)


def from_artifact(artifact: ModelArtifact) -> dict[str, ContentToCollab]:
    cfg = artifact.config
    params = EncoderParams(**{f.name: cfg[f.name] for f in dataclasses.fields(EncoderParams) if f.name in cfg})
    models = {}
    for lang, dims in cfg.get("languages", {}).items():
        m = ContentToCollab(dims["frame_dim"], dims["audio_dim"], dims["out_dim"], params)
        m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in artifact.subset(lang).items()}, strict=True)
        models[lang] = m.eval()
    return models
