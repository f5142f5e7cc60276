"""What a serving process uses: load one day's retrieval index and query it.

    from recsys_assets.serving import load_index
    index = load_index("s3://bucket/recsys/assets", "item_collab_index", "2026-11-09")
    item_ids, scores = index.search("hindi", user_vectors, k=100)

The index is read where the pipeline's model IO manager wrote it (``{base_url}/{asset}/{day}.safetensors``:
the same key code, so the two cannot disagree), from a local folder or S3 (credentials from the usual AWS
environment variables, or ``s3=`` options). No Dagster instance is needed.
"""

from __future__ import annotations

import datetime as dt
import typing

import dagster as dg

from .artifacts import from_bytes
from .defs.io_manager import SafetensorsIOManager
from .defs.s3 import S3Resource
from .stages.retrieval_index import ItemIndex

INDEX_ASSETS = ("item_collab_index", "two_tower_item_index")


def load_index(
    base_url: str,
    asset: str,
    day: "str | dt.date",
    s3: typing.Optional[typing.Mapping[str, typing.Optional[str]]] = None,
) -> ItemIndex:
    """The index ``asset`` (one of :data:`INDEX_ASSETS`) of ``day``, stored under ``base_url`` (the pipeline's
    ``RECSYS_STORAGE_URL`` + ``/assets``)."""
    if asset not in INDEX_ASSETS:
        raise ValueError(f"unknown index asset {asset!r}; one of {INDEX_ASSETS}")
    day = dt.date.fromisoformat(day) if isinstance(day, str) else day
    io = SafetensorsIOManager(base_url=base_url, s3=S3Resource(**dict(s3 or {})) if s3 else None)
    key = io.key_for(dg.AssetKey(asset), day.isoformat())
    try:
        data = io.store.read_bytes(key)
    except FileNotFoundError:
        raise FileNotFoundError(f"{asset} {day} has not been materialized (looked for {io.store.url}/{key})") from None
    return ItemIndex(from_bytes(data))
