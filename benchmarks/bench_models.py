"""Training throughput of the two trained models on bench-sized synthetic inputs, and two-tower evaluation time.

    .venv/bin/python benchmarks/bench_models.py                        # both, CPU (or CUDA when present)
    .venv/bin/python benchmarks/bench_models.py --only encoder --items 500000
    .venv/bin/python benchmarks/bench_models.py --only two_tower --rows 2000000 --catalog 500000

* ``encoder`` -- the content -> collaborative encoder (``stages/content_encoder.py``) on ``--items`` items
  with ``--frames`` per-frame embeddings of ``--frame-dim`` and an audio embedding, whose ALS targets are a
  planted noisy function of the content; reports items/s per epoch and the time to convergence (early
  stopping on the validation loss, ``--max-epochs`` at most), and the validation mean cosine reached.
* ``two_tower`` -- the two-tower model (``stages/two_tower.py``) on ``--rows`` training rows by id (one
  history per ~10 rows, ``--catalog`` items, 128-d PCA features, gathered per batch); reports training
  samples/s, then the evaluation time of scoring ``--clients`` clients against a ``--catalog``-item catalog
  (item tower over the catalog + dot products + top-100).

Inputs are synthetic (random with planted structure): what is measured is the models' arithmetic and the
code around it, which do not depend on where the features came from.
"""

import argparse
import json
import time

import numpy as np
import polars as pl
import torch


def bench_encoder(a) -> dict:
    from recsys_assets.stages import content_encoder as ce

    rng = np.random.default_rng(0)
    n, k, d, da, out = a.items, a.frames, a.frame_dim, 64, 16
    y = rng.standard_normal((n, out)).astype(np.float32)
    W = (rng.standard_normal((out, d)) / np.sqrt(out)).astype(np.float32)
    frames = np.empty((n, k, d), dtype=np.float32)
    for s in range(0, n, 50_000):  # chunked so the planted map never needs n x k x d float64
        base = y[s : s + 50_000] @ W
        frames[s : s + 50_000] = base[:, None, :] + 0.5 * rng.standard_normal((len(base), k, d)).astype(np.float32)
    audio = (y @ (rng.standard_normal((out, da)) / np.sqrt(out)).astype(np.float32)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    feats = ce.Features(ids, torch.from_numpy(frames), torch.from_numpy(audio), torch.ones(n, dtype=torch.bool))
    is_val = ce.is_validation(pl.Series(ids), 0.2, 0).to_numpy()
    params = ce.EncoderParams(max_epochs=a.max_epochs, batch_size=a.batch_size, patience=3, device=a.device)
    t = time.perf_counter()
    res = ce.train_encoder(feats, y, is_val, None, params)
    seconds = time.perf_counter() - t
    val = ce.retrieval_metrics(
        ce.predict(res.model, feats.take(np.flatnonzero(is_val)[:20_000])), y[np.flatnonzero(is_val)[:20_000]]
    )
    epochs = len(res.history)
    return {
        "model": "content_encoder",
        "items": n,
        "frames": k,
        "frame_dim": d,
        "device": a.device,
        "epochs_run": epochs,
        "best_epoch": res.best_epoch,
        "seconds_to_stop": seconds,
        "items_per_s": len(res.train_ids) * epochs / seconds,
        "val_mean_cosine": val["mean_cosine"],
        "feature_gib": frames.nbytes / 2**30,
    }


def bench_two_tower(a) -> dict:
    from recsys_assets.stages import two_tower as tt
    from recsys_assets.stages.ranking_metrics import catalog_recall

    rng = np.random.default_rng(0)
    n, p = a.rows, 128
    n_hist, n_items = max(n // 10, 1), a.catalog  # ~10 rows per (client, day), as in the simulator
    items = rng.standard_normal((n_items, p)).astype(np.float32)
    pos = rng.standard_normal((n_hist, p)).astype(np.float32)
    neg = rng.standard_normal((n_hist, p)).astype(np.float32)
    history_row = rng.integers(0, n_hist, n).astype(np.int32)
    item_row = rng.integers(0, n_items, n).astype(np.int32)
    score = np.empty(n, np.float32)
    for s in range(0, n, 1_000_000):  # the planted label, without materialising rows x dim
        h, i = history_row[s : s + 1_000_000], item_row[s : s + 1_000_000]
        score[s : s + 1_000_000] = np.einsum("np,np->n", pos[h] - neg[h], items[i]) / np.sqrt(p)
    label = (score + 0.5 * rng.standard_normal(n)) > 0
    A = pl.Array(pl.Float32, p)
    rows = pl.DataFrame(
        {
            "client_id": history_row.astype(np.int64) // 7,
            "item_id": item_row.astype(np.int64),
            "label": label,
            "weight": np.ones(n, np.float32),
            "history_row": history_row,
            "item_row": item_row,
        }
    )
    histories = pl.DataFrame(
        {
            "history_row": np.arange(n_hist, dtype=np.int32),
            "pos_hist": pl.Series(pos, dtype=A),
            "neg_hist": pl.Series(neg, dtype=A),
            "n_pos_hist": np.full(n_hist, 5, np.int32),
            "n_neg_hist": np.full(n_hist, 5, np.int32),
        }
    )
    features = pl.DataFrame(
        {
            "item_row": np.arange(n_items, dtype=np.int32),
            "item_id": np.arange(n_items),
            "features": pl.Series(items, dtype=A),
        }
    )
    rows = tt.Dataset(rows, histories, features)
    del items, pos, neg
    sweep = {}
    for bs in [int(x) for x in a.tt_batch_sizes.split(",")]:
        params = tt.ModelParams(epochs=a.epochs, patience=a.epochs, device=a.device, batch_size=bs)
        t = time.perf_counter()
        res = tt.train(rows, params)
        train_s = time.perf_counter() - t
        sweep[bs] = {
            "samples_per_s": round(res.samples_per_s),
            "holdout_auc": round(res.history[res.best_epoch]["holdout_auc"], 4),
            "train_seconds": round(train_s, 1),
        }
    catalog = rng.standard_normal((a.catalog, p)).astype(np.float32)
    users = pl.DataFrame(
        {
            "pos_hist": pl.Series(rng.standard_normal((a.clients, p)).astype(np.float32), dtype=A),
            "neg_hist": pl.Series(rng.standard_normal((a.clients, p)).astype(np.float32), dtype=A),
            "n_pos_hist": np.full(a.clients, 5, np.int32),
            "n_neg_hist": np.full(a.clients, 5, np.int32),
        }
    )
    t = time.perf_counter()
    V = tt.item_vectors(res.model, catalog)
    item_s = time.perf_counter() - t
    U = tt.user_vectors(res.model, users)
    targets = [rng.integers(0, a.catalog, 3) for _ in range(a.clients)]
    exclude = [rng.integers(0, a.catalog, 20) for _ in range(a.clients)]
    for s in range(0, a.clients, 256):
        catalog_recall(U[s : s + 256] @ V.T, targets[s : s + 256], exclude[s : s + 256])
    eval_s = time.perf_counter() - t
    return {
        "model": "two_tower",
        "rows": n,
        "epochs": len(res.history),
        "device": a.device,
        "batch_size_sweep": json.dumps(sweep),
        "catalog_items": a.catalog,
        "clients": a.clients,
        "item_tower_seconds": item_s,
        "catalog_eval_seconds": eval_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["encoder", "two_tower"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--items", type=int, default=500_000)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--frame-dim", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--catalog", type=int, default=500_000)
    ap.add_argument("--clients", type=int, default=2_000)
    ap.add_argument("--tt-batch-sizes", default="1024,8192", help="two-tower batch sizes to train with (comma list)")
    a = ap.parse_args()
    results = []
    if a.only in (None, "encoder"):
        results.append(bench_encoder(a))
    if a.only in (None, "two_tower"):
        results.append(bench_two_tower(a))
    for r in results:
        print()
        for k, v in r.items():
            print(f"{k:<20} {v:.3f}" if isinstance(v, float) else f"{k:<20} {v}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
