"""Assets of seed 000's dataset preparation: the raw snapshot, the catalog, and phases 1-3.

A thin shell: each asset reads its config and resources, hands the work to the ``prep_engine`` resource
(polars in this process, or Spark: see ``engine.py``), and reports the metadata and check verdicts it returns.
Inputs are :class:`~recsys_assets.storage.TableRef` s -- the stored files, which the engine reads itself.
"""

import dataclasses
import datetime as dt
import typing

import dagster as dg

from ..stages import filtered_interactions as phase1
from ..stages import item_pairs as phase3
from ..stages.raw_interactions import DayRecord, SnapshotRules, day_verdicts
from ..storage import TableRef
from .checks import Check, CheckSet
from .engine import DataPrepEngine
from .guards import IO_RETRY, only_transient_retries
from .metadata import latest_partition_metadata, markdown_table, to_metadata
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
        context: dg.AssetExecutionContext,
        config: RawInteractionsConfig,
        snapshots: SnapshotSource,
        prep_engine: DataPrepEngine,
    ) -> typing.Iterator:
        day = partition_date(context)
        rules = to_params(config, SnapshotRules)
        with only_transient_retries():  # a schema error or a corrupt file fails at once; a network one retries
            result = prep_engine.raw_interactions(snapshots, day, rules)
        summary = result.summary
        verdicts = day_verdicts(summary, day, _other_days(context, day, rules.window_days), rules)
        yield dg.Output(
            result.clean,
            output_name="raw_interactions",
            metadata={
                **prep_engine.table_metadata(result.clean),
                "source": snapshots.describe(day),
                "snapshot_marker": snapshots.marker(day) or "none",
                "engine": prep_engine.describe(),
                "rows_in_snapshot": result.rows_in,
                "rows_quarantined": summary.quarantined,
                "quarantine_reasons": dg.MetadataValue.json(summary.reason_counts),
                "content_hash": summary.content_hash,
            },
        )
        yield dg.Output(
            result.quarantine,
            output_name="raw_interactions_quarantine",
            metadata=prep_engine.table_metadata(result.quarantine),
        )
        prep_engine.release()
        yield from RAW_CHECKS.results(verdicts)

    @dg.asset(
        deps=[CATALOG],
        partitions_def=partitions,
        check_specs=CATALOG_CHECKS.specs(partitions),
        group_name=GROUP,
        retry_policy=IO_RETRY,
    )
    def video_catalog(
        context: dg.AssetExecutionContext, catalog: CatalogSource, prep_engine: DataPrepEngine
    ) -> typing.Iterator:
        """The video catalog (``josh-meta/video``) as of the partition's day: items uploaded on or before it."""
        with only_transient_retries():
            result = prep_engine.video_catalog(catalog, partition_date(context))
        yield dg.Output(
            result.table,
            metadata={
                **prep_engine.table_metadata(result.table),
                "source": catalog.describe(),
                "catalog_version": catalog.version(),
                "engine": prep_engine.describe(),
                "items_by_language": dg.MetadataValue.md(markdown_table(result.by_language)),
                "uploaded_on_this_day": result.uploaded_on_day,
            },
        )
        prep_engine.release()
        yield from CATALOG_CHECKS.results(result.verdicts)

    @dg.asset(
        partitions_def=partitions,
        check_specs=PHASE1_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def filtered_interactions(
        context: dg.AssetExecutionContext,
        config: Phase1Config,
        raw_interactions: TableRef,
        prep_engine: DataPrepEngine,
    ) -> typing.Iterator:
        """Phase 1: positive / negative interactions; neutrals and clients above the positive-CTR limit dropped."""
        rules = to_params(config, phase1.Phase1Rules)
        result = prep_engine.filtered_interactions(raw_interactions, rules)
        s = result.stats
        classes = [
            {"class": "positive", "rows": s["positive"]},
            {"class": "negative", "rows": s["negative"]},
            {"class": "neutral (dropped)", "rows": s["neutral"]},
            {"class": "rows of dropped clients", "rows": s["rows_dropped_with_clients"]},
        ]
        yield dg.Output(
            result.table,
            metadata={
                **prep_engine.table_metadata(result.table),
                **to_metadata(s),
                "engine": prep_engine.describe(),
                "classes": dg.MetadataValue.md(markdown_table(classes)),
                "rules": dg.MetadataValue.json(dataclasses.asdict(rules)),
            },
        )
        prep_engine.release()
        yield from PHASE1_CHECKS.results(result.verdicts)

    @dg.asset(
        partitions_def=partitions,
        check_specs=PHASE2_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def item_meta(
        context: dg.AssetExecutionContext,
        config: ItemMetaConfig,
        filtered_interactions: TableRef,
        video_catalog: TableRef,
        prep_engine: DataPrepEngine,
    ) -> typing.Iterator:
        """Phase 2: the day's unique items joined with the catalog (language, download_url, ...)."""
        result = prep_engine.item_meta(filtered_interactions, video_catalog, config.min_coverage)
        if result.missing_count:
            context.log.warning(f"{result.missing_count} items of the day are not in the catalog")
        yield dg.Output(
            result.table,
            metadata={
                **prep_engine.table_metadata(result.table),
                "engine": prep_engine.describe(),
                "items_missing_from_catalog": result.missing_count,
                "missing_item_ids_sample": dg.MetadataValue.json(result.missing_sample),
                "catalog_coverage": float(result.coverage),
                "items_by_language": dg.MetadataValue.md(markdown_table(result.by_language)),
            },
        )
        prep_engine.release()
        yield from PHASE2_CHECKS.results(result.verdicts)

    @dg.asset(
        partitions_def=partitions,
        check_specs=PHASE3_CHECKS.specs(partitions),
        group_name=GROUP,
    )
    def item_pairs(
        context: dg.AssetExecutionContext,
        config: PairsConfig,
        filtered_interactions: TableRef,
        item_meta: TableRef,
        prep_engine: DataPrepEngine,
    ) -> typing.Iterator:
        """Phase 3: positive pairs (same client) and negative pairs (same client and session), by distinct clients."""
        rules = to_params(config, phase3.PairRules)
        result = prep_engine.item_pairs(filtered_interactions, item_meta, rules)
        yield dg.Output(
            result.table,
            metadata={
                **prep_engine.table_metadata(result.table),
                **to_metadata(result.stats),
                "engine": prep_engine.describe(),
                "top_pairs": dg.MetadataValue.md(markdown_table(result.top)),
                "rules": dg.MetadataValue.json(dataclasses.asdict(rules)),
            },
        )
        prep_engine.release()
        yield from PHASE3_CHECKS.results(result.verdicts)

    return [raw_interactions, video_catalog, filtered_interactions, item_meta, item_pairs]
