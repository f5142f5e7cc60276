"""Phase 2 of seed 000: the day's unique items with their catalog metadata (``josh-meta/video``).

Also the catalog's own normalisation: :func:`prepare_catalog` types the Delta table's columns and
keeps an as-of view (items uploaded on or before the partition's day).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl

CATALOG_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.Int64(),
    "language": pl.String(),
    "duration_s": pl.Float64(),
    "upload_date": pl.Date(),
    "creator_id": pl.Int64(),
    "download_url": pl.String(),
}
META_COLUMNS = ("item_id", "language", "duration_s", "upload_date", "creator_id", "download_url")


class CatalogSchemaError(ValueError):
    pass


def prepare_catalog(catalog: pl.DataFrame | pl.LazyFrame, as_of: dt.date | None = None) -> pl.DataFrame:
    """Type the catalog, keep rows uploaded by ``as_of``; extra columns are kept after the known ones."""
    lf = catalog.lazy()
    schema = lf.collect_schema()
    missing = [c for c in ("item_id", "download_url", "language") if c not in schema]
    if missing:
        raise CatalogSchemaError(f"video catalog is missing column(s) {missing}; it has {list(schema)}")
    casts = [pl.col(c).cast(t) if c in schema else pl.lit(None, t).alias(c) for c, t in CATALOG_SCHEMA.items()]
    extra = [c for c in schema if c not in CATALOG_SCHEMA]
    lf = lf.select(casts + extra)
    if as_of is not None:
        lf = lf.filter(pl.col("upload_date").is_null() | (pl.col("upload_date") <= as_of))
    return lf.collect()


def validate_catalog(cat: pl.DataFrame) -> dict[str, tuple[bool, dict]]:
    null_ids = cat["item_id"].null_count()
    dup_ids = cat.height - cat["item_id"].n_unique()
    null_urls = cat["download_url"].null_count()
    return catalog_verdicts(null_ids, dup_ids, null_urls)


def catalog_verdicts(null_ids: int, dup_ids: int, null_urls: int) -> dict[str, tuple[bool, dict]]:
    """video_catalog's check verdicts from their counts (any engine computes the counts)."""
    return {
        "item_id_unique_not_null": (null_ids == 0 and dup_ids == 0, {"null_ids": null_ids, "duplicate_ids": dup_ids}),
        "download_url_present": (null_urls == 0, {"items_without_url": null_urls}),
    }


@dataclasses.dataclass(frozen=True)
class ItemMetaResult:
    items: pl.DataFrame
    missing: pl.DataFrame
    """Item ids seen in the interactions but absent from the catalog, with their interaction counts."""

    @property
    def coverage(self) -> float:
        total = self.items.height + self.missing.height
        return 1.0 if total == 0 else self.items.height / total


def build_item_meta(interactions: pl.DataFrame | pl.LazyFrame, catalog: pl.DataFrame) -> ItemMetaResult:
    counts = (
        interactions.lazy()
        .group_by("item_id")
        .agg(
            num_interactions=pl.len(),
            num_positive=pl.col("is_positive").sum().cast(pl.Int64),
            num_clients=pl.col("client_id").n_unique().cast(pl.Int64),
        )
    )
    cat = catalog.lazy()
    items_lf = (
        counts.join(cat, on="item_id", how="inner")
        .select(list(META_COLUMNS) + ["num_interactions", "num_positive", "num_clients"])
        .sort("item_id")
    )
    missing_lf = counts.join(cat, on="item_id", how="anti").select("item_id", "num_interactions").sort("item_id")
    items, missing = pl.collect_all([items_lf, missing_lf])
    return ItemMetaResult(items, missing)


def validate_item_meta(items: pl.DataFrame, coverage: float, min_coverage: float) -> dict[str, tuple[bool, dict]]:
    dup = items.height - items["item_id"].n_unique()
    return item_meta_verdicts(
        dup, items["item_id"].null_count(), items["download_url"].null_count(), coverage, min_coverage
    )


def item_meta_verdicts(
    dup_ids: int, null_ids: int, null_urls: int, coverage: float, min_coverage: float
) -> dict[str, tuple[bool, dict]]:
    """item_meta's check verdicts from their counts (any engine computes the counts)."""
    return {
        "item_id_unique": (dup_ids == 0 and null_ids == 0, {"duplicate_ids": dup_ids}),
        "catalog_coverage": (coverage >= min_coverage, {"coverage": coverage, "min_coverage": min_coverage}),
        "download_url_present": (null_urls == 0, {"items_without_url": null_urls}),
    }
