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


class CheckSet:
    def __init__(self, asset: str, *checks: Check):
        self.asset = dg.AssetKey(asset)
        self.checks = {c.name: c for c in checks}

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
