"""Assets of seed 000's dataset preparation: the raw snapshot, the catalog, and phases 1-3.

A thin shell: each asset reads its config and resources, calls the pure stage in
:mod:`recsys_assets.stages`, and reports metadata and check results.
"""

import dataclasses
import datetime as dt
import typing

import dagster as dg
import polars as pl

from ..stages import filtered_interactions as phase1
from ..stages import item_meta as phase2
from ..stages import item_pairs as phase3
from ..stages.raw_interactions import DayRecord, SnapshotRules, content_hash, enforce_schema, validate_day
from .checks import Check, CheckSet
from .guards import IO_RETRY, only_transient_retries
from .metadata import frame_metadata, latest_partition_metadata, markdown_table, to_metadata
from .params import config_from, to_params
from .partitions import partition_date
from .resources import CatalogSource, SnapshotSource

GROUP = "data_prep"

RAW_CHECKS = CheckSet(
    "raw_interactions",
    Check("keys_not_null", "client_id, session_id and item_id are never null in the accepted rows."),
    Check(
        "row_count_within_band",
        "The day has rows, and (once earlier days are known) its row count is within the configured band of "
        "their median: an empty or truncated delivery never trains a model.",
    ),
    Check(
        "event_ts_within_day",
        "At most max_outside_day_share of the rows lie outside the partition's day (with a tolerance): the "
        "folder does not hold another day's data.",
    ),
    Check(
        "content_unique_in_window",
        "The day's rows differ from every other day's within window_days: a re-delivered file is not a new day.",
    ),
    Check(
        "quarantine_share_below_max",
        "The share of quarantined rows stays below the configured maximum; more means the producer broke.",
    ),
)
CATALOG_CHECKS = CheckSet(
    "video_catalog",
    Check("item_id_unique_not_null", "Every catalog row has an item_id and no item_id repeats."),
    Check("download_url_present", "Every item has a download_url (else its media cannot be fetched).", blocking=False),
)
PHASE1_CHECKS = CheckSet(
    "filtered_interactions",
    Check("no_neutral_rows", "No neutral interaction is left and every label matches the rules."),
    Check("no_client_above_ctr", "No client above the positive-CTR threshold is left."),
    Check("keys_not_null", "client_id, session_id and item_id are never null."),
)
PHASE2_CHECKS = CheckSet(
    "item_meta",
    Check("item_id_unique", "One row per item."),
    Check(
        "catalog_coverage", "Share of the day's items found in the catalog is at least min_coverage.", blocking=False
    ),
    Check("download_url_present", "Every item found in the catalog has a download_url.", blocking=False),
)
PHASE3_CHECKS = CheckSet(
    "item_pairs",
    Check("pairs_canonical", "item_id_1 < item_id_2 on every row: no self pairs, each unordered pair once."),
    Check("pairs_unique", "(item_id_1, item_id_2, pair_type) is unique and never null."),
    Check("num_clients_at_least_min", "num_clients is at least the configured minimum."),
)


RawInteractionsConfig = config_from(SnapshotRules, name="RawInteractionsConfig")


Phase1Config = config_from(phase1.Phase1Rules, name="Phase1Config")


class ItemMetaConfig(dg.Config):
    min_coverage: float = 0.99
    """Warn when fewer than this share of the day's items are found in the catalog."""


PairsConfig = config_from(phase3.PairRules, name="PairsConfig")


def _other_days(context: dg.AssetExecutionContext, day: dt.date, window_days: int) -> list[DayRecord]:
    """Row counts and content hashes of raw_interactions within ``window_days`` of ``day`` (the day itself
    left out), from their latest materializations in the instance."""
    days = [(day + dt.timedelta(days=d)).isoformat() for d in range(-window_days, window_days + 1) if d]
    known = latest_partition_metadata(context.instance, dg.AssetKey("raw_interactions"), days)
    return [
        DayRecord(p, int(md.get("dagster/row_count", 0)), md.get("content_hash")) for p, md in sorted(known.items())
    ]


SNAPSHOTS, CATALOG = "interaction_snapshots", "video_catalog_delta"


def source_specs(partitions: dg.PartitionsDefinition, snapshots_at: str, catalog_at: str) -> list[dg.AssetSpec]:
    """The two sources of the graph as external assets, so the lineage starts where the data does. The
    snapshot sensor records a materialization of ``interaction_snapshots`` for each delivered day."""
    return [
        dg.AssetSpec(
            SNAPSHOTS,
            partitions_def=partitions,
            group_name="sources",
            description=f"The platform's daily interaction snapshots (``Daily-Snapshot``), complete when the day's "
            f"``_SUCCESS`` marker is written: {snapshots_at}",
            kinds={"parquet", "s3"},
            owners=["team:data-platform"],
            tags={"stage": "sources", "tier": "source"},
        ),
        dg.AssetSpec(
            CATALOG,
            group_name="sources",
            description=f"The video catalog Delta table (``josh-meta/video``): {catalog_at}",
            kinds={"delta", "s3"},
            owners=["team:data-platform"],
            tags={"stage": "sources", "tier": "source"},
        ),
    ]


def build_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """This stage's daily assets, partitioned by ``partitions`` (see ``defs/partitions.py``)."""

    @dg.multi_asset(
        outs={
            "raw_interactions": dg.AssetOut(
                description="The day's interaction snapshot, schema-enforced: one row per served item.",
                is_required=True,
            ),
            "raw_interactions_quarantine": dg.AssetOut(
                description="Snapshot rows that could not be used, with a quarantine_reason each.",
                is_required=True,
            ),
        },
        deps=[SNAPSHOTS],
        partitions_def=partitions,
        check_specs=RAW_CHECKS.specs(partitions),
        group_name=GROUP,
        retry_policy=IO_RETRY,
    )
    def raw_interactions(
        context: dg.AssetExecutionContext, config: RawInteractionsConfig, snapshots: SnapshotSource
    ) -> typing.Iterator:
        day = partition_date(context)
        rules = to_params(config, SnapshotRules)
        with only_transient_retries():
            raw = snapshots.load(day)
        enforced = enforce_schema(raw, rules)
        clean, quarantine = enforced.clean, enforced.quarantine
        reasons = enforced.reason_counts()
        digest = content_hash(clean)
        verdicts = validate_day(enforced, day, _other_days(context, day, rules.window_days), rules, digest)
        yield dg.Output(
            clean,
            output_name="raw_interactions",
            metadata={
                **frame_metadata(clean),
                "source": snapshots.describe(day),
                "snapshot_marker": snapshots.marker(day) or "none",
                "rows_in_snapshot": raw.height,
                "rows_quarantined": quarantine.height,
                "quarantine_reasons": dg.MetadataValue.json(reasons),
                "content_hash": digest,
            },
        )
        yield dg.Output(quarantine, output_name="raw_interactions_quarantine", metadata=frame_metadata(quarantine))
        yield from RAW_CHECKS.results(verdicts)

    @dg.asset(
        deps=[CATALOG],
        partitions_def=partitions,
        check_specs=CATALOG_CHECKS.specs(partitions),
        group_name=GROUP,
        retry_policy=IO_RETRY,
    )
    def video_catalog(context: dg.AssetExecutionContext, catalog: CatalogSource) -> typing.Iterator:
        """The video catalog (``josh-meta/video``) as of the partition's day: items uploaded on or before it."""
        with only_transient_retries():
            cat = phase2.prepare_catalog(catalog.load(), as_of=partition_date(context))
        by_language = cat["language"].value_counts(sort=True)
        yield dg.Output(
            cat,
            metadata={
                **frame_metadata(cat),
                "source": catalog.describe(),
                "catalog_version": catalog.version(),
                "items_by_language": dg.MetadataValue.md(markdown_table(by_language)),
                "uploaded_on_this_day": int((cat["upload_date"] == partition_date(context)).sum()),
            },
        )
        yield from CATALOG_CHECKS.results(phase2.validate_catalog(cat))

    @dg.asset(
        partitions_def=partitions,
        check_specs=PHASE1_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def filtered_interactions(
        context: dg.AssetExecutionContext, config: Phase1Config, raw_interactions: pl.DataFrame
    ) -> typing.Iterator:
        """Phase 1: positive / negative interactions; neutrals and clients above the positive-CTR limit dropped."""
        rules = to_params(config, phase1.Phase1Rules)
        result = phase1.filter_interactions(raw_interactions, rules)
        s = result.stats
        classes = [
            {"class": "positive", "rows": s["positive"]},
            {"class": "negative", "rows": s["negative"]},
            {"class": "neutral (dropped)", "rows": s["neutral"]},
            {"class": "rows of dropped clients", "rows": s["rows_dropped_with_clients"]},
        ]
        yield dg.Output(
            result.interactions,
            metadata={
                **frame_metadata(result.interactions),
                **to_metadata(s),
                "classes": dg.MetadataValue.md(markdown_table(classes)),
                "rules": dg.MetadataValue.json(dataclasses.asdict(rules)),
            },
        )
        yield from PHASE1_CHECKS.results(phase1.validate(result.interactions, rules))

    @dg.asset(
        partitions_def=partitions,
        check_specs=PHASE2_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def item_meta(
        context: dg.AssetExecutionContext,
        config: ItemMetaConfig,
        filtered_interactions: pl.DataFrame,
        video_catalog: pl.DataFrame,
    ) -> typing.Iterator:
        """Phase 2: the day's unique items joined with the catalog (language, download_url, ...)."""
        result = phase2.build_item_meta(filtered_interactions, video_catalog)
        if result.missing.height:
            context.log.warning(f"{result.missing.height} items of the day are not in the catalog")
        yield dg.Output(
            result.items,
            metadata={
                **frame_metadata(result.items),
                "items_missing_from_catalog": result.missing.height,
                "missing_item_ids_sample": dg.MetadataValue.json(result.missing["item_id"].head(20).to_list()),
                "catalog_coverage": float(result.coverage),
                "items_by_language": dg.MetadataValue.md(
                    markdown_table(result.items["language"].value_counts(sort=True))
                ),
            },
        )
        yield from PHASE2_CHECKS.results(phase2.validate_item_meta(result.items, result.coverage, config.min_coverage))

    @dg.asset(
        partitions_def=partitions,
        check_specs=PHASE3_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def item_pairs(
        context: dg.AssetExecutionContext,
        config: PairsConfig,
        filtered_interactions: pl.DataFrame,
        item_meta: pl.DataFrame,
    ) -> typing.Iterator:
        """Phase 3: positive pairs (same client) and negative pairs (same client and session), by distinct clients."""
        rules = to_params(config, phase3.PairRules)
        result = phase3.build_pairs(filtered_interactions, item_meta, rules)
        top = (
            result.pairs.sort("num_clients", descending=True)
            .head(10)
            .select("item_id_1", "item_id_2", pl.col("pair_type").cast(pl.String), "num_clients")
        )
        yield dg.Output(
            result.pairs,
            metadata={
                **frame_metadata(result.pairs),
                **to_metadata(result.stats),
                "top_pairs": dg.MetadataValue.md(markdown_table(top)),
                "rules": dg.MetadataValue.json(dataclasses.asdict(rules)),
            },
        )
        yield from PHASE3_CHECKS.results(phase3.validate(result.pairs, rules.min_num_clients))

    return [raw_interactions, video_catalog, filtered_interactions, item_meta, item_pairs]
