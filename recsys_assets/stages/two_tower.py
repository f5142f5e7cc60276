"""Seed 001's two-tower retrieval model with BLIP user history: dataset, item PCA, towers, training, scoring.

Dataset of partition D (:func:`build_dataset`), from the phase-1 interactions of D-6 .. D:

* label = ``pcc > 0.9`` (the seed's "fraction_watch > 0.9");
* clients with ``min_client_interactions`` (4) ≤ rows ≤ ``max_client_interactions`` (2000) in the
  7 days, and at least one label-1 and one label-0 row; items with ≥ ``min_item_interactions`` (3)
  rows. Both counts are taken over the whole window before either filter is applied;
* positives and negatives balanced ~5:5 by sampling the larger class down (seeded);
* user features: ``pos_hist`` / ``neg_hist`` = the mean of the item features over the client's
  label-1 / label-0 items in the window, leaving out the row's own item (so a row's label never leaks
  into its features), plus the counts ``n_pos_hist`` / ``n_neg_hist`` (0 -> a zero vector);
* item features: the item's BLIP embedding reduced by the PCA of ``item_pca`` (128 components); no item
  id. The history means are taken in that same PCA space -- PCA is affine, so this is exactly the PCA
  projection of the raw-BLIP history mean;
* sample weight: none by default (``weight`` column of ones; config may weight by label).

Model (:class:`TwoTower`): a user MLP over ``[pos_hist, neg_hist, has_pos, has_neg]`` and an item MLP over
the PCA features, each to ``out_dim``; score = dot product + a global bias. Loss: pointwise BCE on the
labels (the seed), or in-batch softmax over the batch's positive rows with logQ correction (item
frequency in the dataset), as TFRS / Merlin retrieval users expect.
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
from .torch_device import resolve_device


@dataclasses.dataclass(frozen=True)
class DatasetRules:
    """Seed 001's dataset rules; the defaults are the seed's."""

    positive_pcc_above: float = 0.9
    """Label 1 when the fraction watched (pcc) is above this."""
    min_client_interactions: int = 4
    """A client needs at least this many interactions in the window ..."""
    max_client_interactions: int = 2000
    """... and at most this many (the seed's 99.9th percentile)."""
    min_client_positives: int = 1
    min_client_negatives: int = 1
    min_item_interactions: int = 3
    """An item needs at least this many interactions in the window."""
    balance: bool = True
    """Sample the larger class down to 5:5."""
    seed: int = 0
    """Seed of the balancing draw."""
    positive_weight: float = 1.0
    """Sample weight of a label-1 row (the seed: none, i.e. 1)."""
    negative_weight: float = 1.0
    """Sample weight of a label-0 row."""


def labelled(window: pl.DataFrame, rules: DatasetRules) -> pl.DataFrame:
    return window.select(
        "client_id", "item_id", "session_id", "event_ts", (pl.col("pcc") > rules.positive_pcc_above).alias("label")
    )


def eligible(window: pl.DataFrame, rules: DatasetRules) -> tuple[pl.DataFrame, dict[str, int]]:
    """Rows of the window that pass the client and item filters (counts over the whole window)."""
    rows = labelled(window, rules)
    clients = rows.group_by("client_id").agg(n=pl.len(), pos=pl.col("label").sum(), neg=(~pl.col("label")).sum())
    ok_clients = clients.filter(
        (pl.col("n") >= rules.min_client_interactions)
        & (pl.col("n") <= rules.max_client_interactions)
        & (pl.col("pos") >= rules.min_client_positives)
        & (pl.col("neg") >= rules.min_client_negatives)
    )
    items = rows.group_by("item_id").agg(n=pl.len())
    ok_items = items.filter(pl.col("n") >= rules.min_item_interactions)
    kept = rows.join(ok_clients.select("client_id"), on="client_id", how="semi").join(
        ok_items.select("item_id"), on="item_id", how="semi"
    )
    stats = {
        "window_rows": rows.height,
        "clients": clients.height,
        "clients_kept": ok_clients.height,
        "clients_below_min_interactions": clients.filter(pl.col("n") < rules.min_client_interactions).height,
        "clients_above_max_interactions": clients.filter(pl.col("n") > rules.max_client_interactions).height,
        "clients_without_positive": clients.filter(pl.col("pos") < rules.min_client_positives).height,
        "clients_without_negative": clients.filter(pl.col("neg") < rules.min_client_negatives).height,
        "items": items.height,
        "items_kept": ok_items.height,
        "rows_kept": kept.height,
    }
    return kept, stats


def validate_dataset(ds: pl.DataFrame, window: pl.DataFrame, rules: DatasetRules) -> dict[str, tuple[bool, dict]]:
    """Verdicts of two_tower_dataset's checks: the filters hold on the output, labels are balanced, features finite."""
    lab = labelled(window, rules)
    c = lab.group_by("client_id").agg(n=pl.len(), pos=pl.col("label").sum(), neg=(~pl.col("label")).sum())
    c = c.join(ds.select("client_id").unique(), on="client_id", how="semi")
    bad_clients = c.filter(
        (pl.col("n") < rules.min_client_interactions)
        | (pl.col("n") > rules.max_client_interactions)
        | (pl.col("pos") < rules.min_client_positives)
        | (pl.col("neg") < rules.min_client_negatives)
    ).height
    i = lab.group_by("item_id").len().join(ds.select("item_id").unique(), on="item_id", how="semi")
    bad_items = i.filter(pl.col("len") < rules.min_item_interactions).height
    pos = int(ds["label"].sum())
    share = pos / ds.height if ds.height else 0.5
    finite = (
        all(bool(np.isfinite(ds[col].to_numpy()).all()) for col in ("pos_hist", "neg_hist", "item_features"))
        if ds.height
        else True
    )
    return {
        "clients_within_bounds": (bad_clients == 0, {"clients_out_of_bounds": bad_clients}),
        "items_with_min_interactions": (bad_items == 0, {"items_below_min": bad_items}),
        "balanced_labels": ((not rules.balance) or abs(share - 0.5) <= 0.05, {"positive_share": share}),
        "features_finite": (finite, {}),
    }


def history_sums(history: pl.DataFrame, item_features: pl.DataFrame, dim: int) -> pl.DataFrame:
    """Per client: the sum and count of the features of its distinct label-1 and label-0 items."""
    distinct = history.select("client_id", "item_id", "label").unique()
    with_f = distinct.join(item_features, on="item_id", how="inner")
    parts = []
    for lab, name in ((True, "pos"), (False, "neg")):
        sub = with_f.filter(pl.col("label") == lab)
        if sub.height:
            sub = sub.sort("client_id")
            cid = sub["client_id"].to_numpy()
            starts = np.r_[0, np.flatnonzero(np.diff(cid) != 0) + 1]
            clients = cid[starts]
            sums = np.add.reduceat(np.asarray(sub["features"].to_numpy(), dtype=np.float64), starts, axis=0)
            counts = np.diff(np.r_[starts, len(cid)])
        else:
            clients, sums, counts = np.zeros(0, np.int64), np.zeros((0, dim)), np.zeros(0, np.int64)
        parts.append(
            pl.DataFrame(
                {
                    "client_id": clients,
                    f"{name}_sum": pl.Series(sums.astype(np.float32), dtype=pl.Array(pl.Float32, dim)),
                    f"{name}_count": counts.astype(np.int64),
                }
            )
        )
    return parts[0].join(parts[1], on="client_id", how="full", coalesce=True)


def user_features(rows: pl.DataFrame, sums: pl.DataFrame, item_features: pl.DataFrame, dim: int) -> pl.DataFrame:
    """``pos_hist``/``neg_hist`` for each row: the client's history means without the row's own item
    (its features are subtracted, and the count lowered, when the row flags it as in that history)."""
    base = rows.join(sums, on="client_id", how="left").join(item_features, on="item_id", how="left")
    n = base.height
    f = np.nan_to_num(np.array(base["features"].to_numpy(), dtype=np.float64)) if n else np.zeros((0, dim))
    out = {}
    for name in ("pos", "neg"):
        col = base[f"{name}_sum"]
        s = np.zeros((n, dim))
        present = col.is_not_null().to_numpy()
        if present.any():
            s[present] = base.filter(pl.Series(present))[f"{name}_sum"].to_numpy()
        cnt = base[f"{name}_count"].fill_null(0).to_numpy().astype(np.float64)
        # only items with features were summed, so only those are taken back out
        in_hist = (base[f"in_{name}_hist"].fill_null(False) & base["features"].is_not_null()).to_numpy()
        s = s - f * in_hist[:, None]
        cnt = cnt - in_hist
        mean = np.where(cnt[:, None] > 0, s / np.maximum(cnt, 1)[:, None], 0.0)
        out[f"{name}_hist"] = pl.Series(mean.astype(np.float32), dtype=pl.Array(pl.Float32, dim))
        out[f"n_{name}_hist"] = pl.Series(cnt.astype(np.int32))
    drop = [c for c in base.columns if c.endswith(("_sum", "_count")) or c.startswith("in_")]
    return base.drop(drop).with_columns(**out)


def _mark_history(rows: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """Flag whether each row's item is among the client's label-1 / label-0 history items."""
    distinct = history.select("client_id", "item_id", "label").unique()
    pos = distinct.filter(pl.col("label")).select("client_id", "item_id").with_columns(in_pos_hist=pl.lit(True))
    neg = distinct.filter(~pl.col("label")).select("client_id", "item_id").with_columns(in_neg_hist=pl.lit(True))
    return rows.join(pos, on=["client_id", "item_id"], how="left").join(neg, on=["client_id", "item_id"], how="left")


def with_user_features(
    rows: pl.DataFrame, history: pl.DataFrame, item_features: pl.DataFrame, dim: int
) -> pl.DataFrame:
    """Rows (client_id, item_id, ...) + pos_hist, neg_hist (leave-own-item-out means over ``history``)."""
    sums = history_sums(history, item_features, dim)
    return user_features(_mark_history(rows, history), sums, item_features, dim)


def balance(rows: pl.DataFrame, seed: int) -> pl.DataFrame:
    n_pos = int(rows["label"].sum())
    n_neg = rows.height - n_pos
    k = min(n_pos, n_neg)
    rank = pl.col("row_key").hash(seed).rank("ordinal").over("label")
    keyed = rows.with_row_index("row_key")
    return keyed.filter(rank <= k).drop("row_key").sort("client_id", "item_id", "event_ts")


def build_dataset(
    window: pl.DataFrame, item_features: pl.DataFrame, rules: DatasetRules, dim: int
) -> tuple[pl.DataFrame, dict[str, typing.Any]]:
    """The training rows of a 7-day window: filters, features (own item left out), balance."""
    kept, stats = eligible(window, rules)
    kept = kept.join(item_features.select("item_id"), on="item_id", how="inner")  # items with a BLIP embedding
    stats["rows_with_item_features"] = kept.height
    rows = kept.select("client_id", "item_id", "session_id", "event_ts", "label")
    if rules.balance:
        rows = balance(rows, rules.seed)
    full = with_user_features(rows, kept, item_features, dim).rename({"features": "item_features"})
    full = full.with_columns(
        weight=pl.when(pl.col("label")).then(rules.positive_weight).otherwise(rules.negative_weight).cast(pl.Float32)
    )
    stats.update(rows=full.height, positives=int(full["label"].sum()), negatives=int((~full["label"]).sum()))
    return full.sort("client_id", "event_ts", "item_id"), stats


# --- PCA, stored as arrays -------------------------------------------------------------------------


def fit_pca(embeddings: np.ndarray, n_components: int, seed: int = 0) -> ModelArtifact:
    from sklearn.decomposition import PCA

    k = int(min(n_components, embeddings.shape[0], embeddings.shape[1]))
    pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(embeddings.astype(np.float64))
    arrays = {
        "components": pca.components_.astype(np.float32),
        "mean": pca.mean_.astype(np.float32),
        "explained_variance": pca.explained_variance_.astype(np.float32),
        "explained_variance_ratio": pca.explained_variance_ratio_.astype(np.float32),
        "singular_values": pca.singular_values_.astype(np.float32),
    }
    config = {
        "n_components": k,
        "requested_components": n_components,
        "n_samples": int(embeddings.shape[0]),
        "n_features": int(embeddings.shape[1]),
        "whiten": False,
    }
    return ModelArtifact(arrays, config)


def pca_from_artifact(artifact: ModelArtifact) -> typing.Any:
    from sklearn.decomposition import PCA

    a, c = artifact.arrays, artifact.config
    pca = PCA(n_components=c["n_components"], whiten=False)
    pca.components_ = a["components"].astype(np.float64)
    pca.mean_ = a["mean"].astype(np.float64)
    pca.explained_variance_ = a["explained_variance"].astype(np.float64)
    pca.explained_variance_ratio_ = a["explained_variance_ratio"].astype(np.float64)
    pca.singular_values_ = a["singular_values"].astype(np.float64)
    pca.n_components_ = c["n_components"]
    pca.n_features_in_ = c["n_features"]
    pca.n_samples_ = c["n_samples"]
    pca.noise_variance_ = 0.0
    return pca


def project(embeddings: pl.DataFrame, pca: typing.Any) -> pl.DataFrame:
    """item_id, blip_embedding -> item_id, features (the PCA projection, float32)."""
    x = embeddings["blip_embedding"].to_numpy().astype(np.float64)
    z = pca.transform(x).astype(np.float32) if len(x) else np.zeros((0, pca.n_components_), np.float32)
    return pl.DataFrame(
        {"item_id": embeddings["item_id"], "features": pl.Series(z, dtype=pl.Array(pl.Float32, z.shape[1]))}
    )


# --- the model -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """The two towers and their training."""

    hidden: tuple[int, ...] = (128, 64)
    """Hidden layer widths of each tower's MLP."""
    out_dim: int = 32
    """Width of the user and item vectors (their dot product is the score)."""
    dropout: float = 0.1
    loss: str = "bce"
    """``bce`` (the seed: pointwise on labels) or ``inbatch_softmax`` (positives only, logQ-corrected)."""
    temperature: float = 0.1
    """In-batch softmax: logits = cosine(user, item) / temperature - log q(item)."""
    lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 1024
    epochs: int = 8
    patience: int = 3
    holdout_share: float = 0.1
    """Clients (by hash) held out of training to draw the curve and stop early."""
    seed: int = 0
    device: str = "auto"


def _mlp(sizes: typing.Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    def __init__(
        self, feature_dim: int, hidden: typing.Sequence[int] = (128, 64), out_dim: int = 32, dropout: float = 0.1
    ):
        super().__init__()
        self.user = _mlp([2 * feature_dim + 2, *hidden, out_dim], dropout)
        self.item = _mlp([feature_dim, *hidden, out_dim], dropout)
        self.bias = nn.Parameter(torch.zeros(()))

    def user_vec(self, pos: torch.Tensor, neg: torch.Tensor, n_pos: torch.Tensor, n_neg: torch.Tensor) -> torch.Tensor:
        flags = torch.stack([(n_pos > 0).float(), (n_neg > 0).float()], dim=-1)
        return self.user(torch.cat([pos, neg, flags], dim=-1))

    def item_vec(self, item: torch.Tensor) -> torch.Tensor:
        return self.item(item)

    def forward(self, pos, neg, n_pos, n_neg, item) -> torch.Tensor:
        return (self.user_vec(pos, neg, n_pos, n_neg) * self.item_vec(item)).sum(-1) + self.bias


@dataclasses.dataclass
class Tensors:
    pos: torch.Tensor
    neg: torch.Tensor
    n_pos: torch.Tensor
    n_neg: torch.Tensor
    item: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor
    item_id: np.ndarray

    def to(self, device: torch.device) -> "Tensors":
        return Tensors(
            *(
                t.to(device, non_blocking=True)
                for t in (self.pos, self.neg, self.n_pos, self.n_neg, self.item, self.label, self.weight)
            ),
            self.item_id,
        )

    def take(self, idx) -> "Tensors":
        np_idx = idx if isinstance(idx, slice) else np.asarray(idx)
        return Tensors(
            self.pos[idx],
            self.neg[idx],
            self.n_pos[idx],
            self.n_neg[idx],
            self.item[idx],
            self.label[idx],
            self.weight[idx],
            self.item_id[np_idx],
        )

    def __len__(self) -> int:
        return len(self.label)


def tensors(rows: pl.DataFrame) -> Tensors:
    def arr(c: str) -> torch.Tensor:
        return torch.from_numpy(np.array(rows[c].to_numpy(), dtype=np.float32))

    weight = rows["weight"] if "weight" in rows.columns else pl.Series(np.ones(rows.height, np.float32))
    return Tensors(
        arr("pos_hist"),
        arr("neg_hist"),
        torch.from_numpy(np.array(rows["n_pos_hist"].to_numpy(), dtype=np.float32)),
        torch.from_numpy(np.array(rows["n_neg_hist"].to_numpy(), dtype=np.float32)),
        arr("item_features"),
        torch.from_numpy(np.array(rows["label"].to_numpy(), dtype=np.float32)),
        torch.from_numpy(np.array(weight.to_numpy(), dtype=np.float32)),
        rows["item_id"].to_numpy(),
    )


def _loss(model: TwoTower, b: Tensors, params: ModelParams, log_q: typing.Optional[dict]) -> torch.Tensor:
    if params.loss == "bce":
        logits = model(b.pos, b.neg, b.n_pos, b.n_neg, b.item)
        return (
            nn.functional.binary_cross_entropy_with_logits(logits, b.label, reduction="none") * b.weight
        ).sum() / b.weight.sum()
    if params.loss == "inbatch_softmax":
        p = b.label > 0.5
        if int(p.sum()) < 2:
            return model.bias * 0.0
        u = nn.functional.normalize(model.user_vec(b.pos[p], b.neg[p], b.n_pos[p], b.n_neg[p]), dim=-1)
        v = nn.functional.normalize(model.item_vec(b.item[p]), dim=-1)
        logits = u @ v.T / params.temperature
        lq = torch.tensor(
            [log_q.get(int(i), 0.0) for i in b.item_id[p.cpu().numpy()]], dtype=torch.float32, device=logits.device
        )
        logits = logits - lq[None, :]  # logQ correction: popular items are over-represented as in-batch negatives
        return nn.functional.cross_entropy(logits, torch.arange(len(u), device=logits.device))
    raise ValueError(f"loss must be 'bce' or 'inbatch_softmax', not {params.loss!r}")


@dataclasses.dataclass
class TrainResult:
    model: TwoTower
    history: list[dict[str, float]]
    best_epoch: int
    train_rows: int
    holdout_rows: int
    seconds: float
    samples_per_s: float


def train(rows: pl.DataFrame, params: ModelParams, log: typing.Callable[[str], None] = lambda m: None) -> TrainResult:
    from .ranking_metrics import auc

    t0 = time.perf_counter()
    torch.manual_seed(params.seed)
    gen = torch.Generator().manual_seed(params.seed)
    held = ((rows["client_id"].hash(params.seed + 17) % 1000) < int(params.holdout_share * 1000)).to_numpy()
    data = tensors(rows)
    tr, ho = np.flatnonzero(~held), np.flatnonzero(held)
    dim = data.item.shape[1]
    device = resolve_device(params.device)
    model = TwoTower(dim, params.hidden, params.out_dim, params.dropout).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    log_q = None
    if params.loss == "inbatch_softmax":
        pos_items = rows.filter(pl.col("label"))["item_id"]
        counts = pos_items.value_counts()
        total = max(pos_items.len(), 1)
        log_q = {int(i): math.log(n / total) for i, n in counts.iter_rows()}
    history, best, best_state, best_epoch, stale = [], float("inf"), None, -1, 0
    train_time, seen = 0.0, 0
    for epoch in range(params.epochs):
        model.train()
        t = time.perf_counter()
        perm = torch.from_numpy(tr)[torch.randperm(len(tr), generator=gen)].numpy()
        total_loss, nb = 0.0, 0
        for s in range(0, len(perm), params.batch_size):
            b = data.take(perm[s : s + params.batch_size]).to(device)
            loss = _loss(model, b, params, log_q)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach())
            nb += 1
        train_time += time.perf_counter() - t
        seen += len(perm)
        model.eval()
        with torch.no_grad():
            h = data.take(ho).to(device)
            ho_loss = float(_loss(model, h, params, log_q)) if len(ho) else float("nan")
            ho_auc = (
                auc(model(h.pos, h.neg, h.n_pos, h.n_neg, h.item).cpu().numpy(), h.label.cpu().numpy() > 0.5)
                if len(ho)
                else float("nan")
            )
        history.append(
            {"epoch": epoch, "train_loss": total_loss / max(nb, 1), "holdout_loss": ho_loss, "holdout_auc": ho_auc}
        )
        score = ho_loss if len(ho) else total_loss
        if score < best - 1e-6:
            best, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= params.patience:
                log(f"early stop at epoch {epoch}; best holdout loss {best:.4f} at epoch {best_epoch}")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval().to("cpu")
    return TrainResult(
        model, history, best_epoch, len(tr), len(ho), time.perf_counter() - t0, seen / max(train_time, 1e-9)
    )


@torch.no_grad()
def score_rows(model: TwoTower, rows: pl.DataFrame, batch: int = 65536) -> np.ndarray:
    data = tensors(rows)
    out = [
        model(*(getattr(data.take(slice(s, s + batch)), k) for k in ("pos", "neg", "n_pos", "n_neg", "item"))).numpy()
        for s in range(0, len(data), batch)
    ]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@torch.no_grad()
def user_vectors(model: TwoTower, users: pl.DataFrame) -> np.ndarray:
    """users: pos_hist, neg_hist, n_pos_hist, n_neg_hist -> (n, out_dim)."""

    def arr(c):
        return torch.from_numpy(np.array(users[c].to_numpy(), dtype=np.float32))

    return model.user_vec(arr("pos_hist"), arr("neg_hist"), arr("n_pos_hist"), arr("n_neg_hist")).numpy()


@torch.no_grad()
def item_vectors(model: TwoTower, features: np.ndarray) -> np.ndarray:
    return model.item_vec(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()


def to_artifact(model: TwoTower, params: ModelParams, feature_dim: int, extra: dict) -> ModelArtifact:
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return ModelArtifact(arrays, {**dataclasses.asdict(params), "feature_dim": feature_dim, **extra})


def from_artifact(artifact: ModelArtifact) -> TwoTower:
    c = artifact.config
    model = TwoTower(c["feature_dim"], tuple(c["hidden"]), c["out_dim"], c["dropout"])
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in artifact.arrays.items()}, strict=True)
    return model.eval()
