"""Declaring an asset's data-quality checks once and turning the pure validators' verdicts into results.

The pure stage modules return ``{check_name: (passed, metadata)}``; a :class:`CheckSet` owns the
specs (name, description, blocking) and maps those verdicts to ``AssetCheckResult``s: blocking
checks fail with ERROR severity (the step fails, downstream is skipped), the others WARN.

Checks of a partitioned asset carry its ``partitions_def`` so that each evaluation is recorded against
its partition (without it Dagster 1.13 records partition ``None`` and the UI cannot show a check's
status per day). Dagster marks check partitions as a preview feature; that warning is silenced here.
"""

import dataclasses
import typing
import warnings

import dagster as dg

from .metadata import to_metadata


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    description: str
    blocking: bool = True


_BLOCKING: dict[dg.AssetKey, tuple[str, ...]] = {}
"""The blocking checks of every asset that has a :class:`CheckSet`, by asset key."""


class CheckSet:
    def __init__(self, asset: str, *checks: Check):
        self.asset = dg.AssetKey(asset)
        self.checks = {c.name: c for c in checks}
        _BLOCKING[self.asset] = tuple(c.name for c in checks if c.blocking)

    def specs(self, partitions_def: typing.Optional[dg.PartitionsDefinition]) -> list[dg.AssetCheckSpec]:
        """The specs, recorded per partition of ``partitions_def`` (that of the asset they check)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return [
                dg.AssetCheckSpec(
                    c.name,
                    asset=self.asset,
                    description=c.description,
                    blocking=c.blocking,
                    partitions_def=partitions_def,
                )
                for c in self.checks.values()
            ]

    def results(self, verdicts: dict[str, tuple[bool, dict]]) -> list[dg.AssetCheckResult]:
        if set(verdicts) != set(self.checks):
            raise ValueError(
                f"checks of {self.asset.to_user_string()}: got {sorted(verdicts)}, declared {sorted(self.checks)}"
            )
        return [
            dg.AssetCheckResult(
                asset_key=self.asset,
                check_name=name,
                passed=bool(passed),
                severity=dg.AssetCheckSeverity.ERROR if self.checks[name].blocking else dg.AssetCheckSeverity.WARN,
                metadata=to_metadata(meta),
            )
            for name, (passed, meta) in verdicts.items()
        ]


def failed_blocking_checks(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str | None) -> list[str]:
    """The blocking checks of ``asset_key`` whose latest evaluation for ``partition`` failed.

    A failed blocking check stops its own run's downstream steps, but the partition stays on disk; a later
    run that reads it (a backfill of downstream assets only, a window that reaches back to it) asks here
    first. Uses the event log's check index (``get_latest_asset_check_execution_by_key``, not yet a public
    Dagster API; test_io_guard covers it)."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    names = _BLOCKING.get(asset_key, ())
    if not names:
        return []
    keys = [dg.AssetCheckKey(asset_key, n) for n in names]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=partition)
    )
    return sorted(k.name for k, rec in latest.items() if rec.status == AssetCheckExecutionRecordStatus.FAILED)
