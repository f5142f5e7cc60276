"""Publish the simulated platform the way the real one is laid out, so the real readers are exercised.

* ``{root}/snapshots/dt=YYYY-MM-DD/part-00000.parquet`` -- the daily snapshot (``Daily-Snapshot``);
* ``{root}/catalog`` -- the video catalog as a Delta table (``josh-meta/video``);
* ``{root}/media/{item_id}.mp4`` -- each item's video, which the catalog's ``download_url`` names.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from filelock import FileLock

from ..storage import LocalStore, write_parquet
from .media import render_many
from .platform import Platform

SNAPSHOT_TEMPLATE = "snapshots/dt={date}/"


def snapshot_template(root: str | os.PathLike) -> str:
    return str(Path(root).resolve() / SNAPSHOT_TEMPLATE)


def catalog_uri(root: str | os.PathLike) -> str:
    return str(Path(root).resolve() / "catalog")


def publish_day(platform: Platform, root: str | os.PathLike, day: dt.date) -> str:
    """Write the day's snapshot unless it is there already (atomic: concurrent callers are safe)."""
    store = LocalStore(root)
    key = f"snapshots/dt={day.isoformat()}/part-00000.parquet"
    if not store.exists(key):
        write_parquet(store, key, platform.interactions(day))
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
