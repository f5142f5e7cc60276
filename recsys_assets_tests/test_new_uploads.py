"""Seed 000 where it matters: never-played uploads are embedded, flagged and evaluated on the next day."""

import datetime as dt

import numpy as np
import polars as pl

from recsys_assets.simulator.platform import Platform
from recsys_assets.stages import content_encoder_evaluation as cee
from recsys_assets.stages.item_collab_embeddings import interaction_counts, new_upload_summary
from recsys_assets.stages.item_content_embeddings import items_to_embed

DAY = dt.date(2026, 11, 5)


def test_items_to_embed_are_the_watched_items_and_the_active_uploads():
    catalog = pl.DataFrame(
        {
            "item_id": [1, 2, 3, 4, 5],
            "language": ["hindi"] * 5,
            "download_url": [f"file:///m/{i}.mp4" for i in range(1, 6)],
            "upload_date": [DAY - dt.timedelta(days=d) for d in (0, 1, 6, 7, 300)],
        }
    )
    item_meta = catalog.filter(pl.col("item_id") == 5).with_columns(num_interactions=pl.lit(3))
    items = items_to_embed(item_meta, catalog, DAY, active_upload_days=7)
    assert items["item_id"].to_list() == [1, 2, 3, 5]  # 4 was uploaded 7 days ago: outside D-6 .. D
    assert dict(zip(items["item_id"], items["watched_on_day"])) == {1: False, 2: False, 3: False, 5: True}
    assert items_to_embed(item_meta, catalog, DAY, active_upload_days=0)["item_id"].to_list() == [5]


def test_interaction_counts_include_quarantined_rows_and_skip_null_ids():
    raw = pl.DataFrame({"item_id": [1, 1, 2]})
    quarantine = pl.DataFrame({"item_id": [3, None, 1]}, schema={"item_id": pl.Int64})
    counts = dict(interaction_counts(raw, quarantine).iter_rows())
    assert counts == {1: 3, 2: 1, 3: 1}


def test_the_simulator_leaves_some_uploads_unplayed_on_their_first_day():
    p = Platform("tiny", seed=3)
    day = p.profile.start_date + dt.timedelta(days=1)
    uploaded = set(p.catalog().filter(pl.col("upload_date") == day)["item_id"])
    played_today = set(p.interactions(day, dirty=False)["item_id"])
    played_next = set(p.interactions(day + dt.timedelta(days=1), dirty=False)["item_id"])
    assert uploaded - played_today and uploaded & played_next  # unplayed on day one, served from the next


def collab_table() -> pl.DataFrame:
    """200 warm items with ALS vectors; 4 new uploads (never played) with predicted vectors."""
    rng = np.random.default_rng(0)
    warm = rng.standard_normal((200, 4)).astype(np.float32)
    new = np.eye(4, dtype=np.float32) * 5  # each new item points along one axis
    ids = list(range(1000, 1200)) + list(range(200, 204))
    vec = pl.Array(pl.Float32, 4)
    return pl.DataFrame(
        {
            "item_id": ids,
            "language": ["hindi"] * 204,
            "vector": pl.Series(np.concatenate([warm, new]), dtype=vec),
            "als_vector": pl.Series([*warm.tolist(), *[None] * 4], dtype=vec),
            "predicted_vector": pl.Series([*[None] * 200, *new.tolist()], dtype=vec),
            "is_predicted": [False] * 200 + [True] * 4,
            "new_upload": [False] * 200 + [True] * 4,
            "interactions_on_day": [5] * 200 + [0] * 4,
        }
    )


def test_new_items_are_ranked_among_the_whole_catalog():
    collab = collab_table()
    users = pl.DataFrame(
        {
            "client_id": [1, 2],
            "language": ["hindi", "hindi"],
            "vector": pl.Series([[1, 0, 0, 0], [0, 0, 1, 0]], dtype=pl.Array(pl.Float32, 4)),
        }
    )
    # next day: client 1 likes new item 200 (axis 0), client 2 new item 202 (axis 2), and a warm item each
    next_day = pl.DataFrame({"client_id": [1, 2, 1, 2], "item_id": [200, 202, 1000, 1001], "is_positive": [True] * 4})
    history = next_day.clear()

    def truth(clients, items):
        return np.where(((clients == 1) & (items == 200)) | ((clients == 2) & (items == 202)), 10.0, 0.0)

    table = cee.evaluate_new(collab, users, history, next_day, truth=truth)
    by = {r["variant"]: r for r in table.iter_rows(named=True)}
    assert set(by) == {"new_predicted", "new_random", "new_oracle"}
    assert all(r["candidates"] == 204 and r["targets"] == 2 for r in by.values())  # whole catalog; new targets only
    # the predicted vectors put each client's new item first, as the oracle does; random vectors do not
    assert by["new_predicted"]["ndcg@10"] == 1.0 and by["new_oracle"]["ndcg@10"] == 1.0
    assert by["new_random"]["ndcg@10"] < 1.0
    summary = new_upload_summary(collab)
    assert summary.row(0, named=True) == {
        "language": "hindi",
        "new_uploads": 4,
        "never_interacted": 4,
        "never_interacted_with_vector": 4,
        "predicted": 4,
    }
    # nothing new: no rows, not an error
    assert cee.evaluate_new(collab.with_columns(new_upload=pl.lit(False)), users, history, next_day).height == 0
