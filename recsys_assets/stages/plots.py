"""Pictures for the Dagster UI: matplotlib (Agg) figures rendered to PNG bytes. No Dagster here."""

from __future__ import annotations

import io
import typing

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def _png(fig: typing.Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def training_curve(history: typing.Sequence[typing.Mapping[str, float]], title: str) -> bytes:
    """Losses (left axis) and holdout AUC (right axis) per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for key, style in (("train_loss", "-"), ("holdout_loss", "--")):
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], style, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    right = ax.twinx()
    right.plot(
        epochs, [h.get("holdout_auc", float("nan")) for h in history], "o-", color="tab:green", label="holdout_auc"
    )
    right.set_ylabel("holdout AUC")
    lines = ax.get_lines() + right.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="best", fontsize=8)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def metric_by_day(rows: typing.Sequence[typing.Mapping[str, typing.Any]], metric: str, title: str) -> bytes:
    """One line per method: ``metric`` against the validation day."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    methods = sorted({r["method"] for r in rows})
    for m in methods:
        pts = sorted((r["val_data"], r[metric]) for r in rows if r["method"] == m and r.get(metric) is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=m)
    ax.set_ylabel(metric)
    ax.set_xlabel("validation day")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=10)
    return _png(fig)
