"""Publish the simulated platform the way the real one is laid out, so the real readers are exercised.

* ``{root}/snapshots/dt=YYYY-MM-DD/part-00000.parquet`` -- the daily snapshot (``Daily-Snapshot``), then
  ``_SUCCESS`` beside it when the day is complete (what the lake sensor waits for);
* ``{root}/catalog`` -- the video catalog as a Delta table (``josh-meta/video``);
* ``{root}/media/{item_id}.mp4`` -- each item's video, which the catalog's ``download_url`` names.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

from filelock import FileLock

from ..sources.lake import SUCCESS_MARKER
from ..storage import LocalStore, write_parquet
from .media import render_many
from .platform import Platform

SNAPSHOT_TEMPLATE = "snapshots/dt={date}/"


def snapshot_template(root: str | os.PathLike) -> str:
    return str(Path(root).resolve() / SNAPSHOT_TEMPLATE)


def catalog_uri(root: str | os.PathLike) -> str:
    return str(Path(root).resolve() / "catalog")


def publish_day(platform: Platform, root: str | os.PathLike, day: dt.date, redeliver: bool = False) -> str:
    """Write the day's snapshot, then its ``_SUCCESS`` marker, unless they are there already (atomic:
    concurrent callers are safe). ``redeliver`` writes both again, as a platform re-delivering a day does."""
    store = LocalStore(root)
    folder = f"snapshots/dt={day.isoformat()}"
    key = f"{folder}/part-00000.parquet"
    if redeliver or not store.exists(key):
        frame = platform.interactions(day)
        write_parquet(store, key, frame)
        delivery = {"day": day.isoformat(), "rows": frame.height, "redelivery": bool(redeliver), "at": time.time_ns()}
        store.write_bytes(f"{folder}/{SUCCESS_MARKER}", json.dumps(delivery).encode())
    elif not store.exists(f"{folder}/{SUCCESS_MARKER}"):  # a snapshot written before markers existed
        store.write_bytes(f"{folder}/{SUCCESS_MARKER}", b"{}")
    return str(store.path(key))


def publish_catalog(platform: Platform, root: str | os.PathLike, processes: int | None = None) -> str:
    """Render every item's mp4 (if the profile has media) and write the catalog Delta table, once.

    A file lock makes concurrent runs (a backfill's parallel partitions) publish it once; media
    files are written atomically and skipped when present, so a killed publish resumes.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = catalog_uri(root)
    if (Path(uri) / "_delta_log").exists():
        return uri
    with FileLock(str(root / ".publish.lock")):
        if (Path(uri) / "_delta_log").exists():
            return uri
        media_root = root / "media"
        if platform.profile.media:
            render_many(platform.media_jobs(media_root), processes=processes)
        platform.catalog(media_root if platform.profile.media else None).write_delta(uri, mode="overwrite")
    return uri
