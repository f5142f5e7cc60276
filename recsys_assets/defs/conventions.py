"""What every asset of the location carries beside its computation, decided in one place.

:func:`apply` maps over the asset definitions once (``dg.map_asset_specs``) and gives each asset:

* **owners and tags** -- who answers for it (:data:`OWNERS` by group) and ``stage`` / ``tier`` tags to filter
  the UI by;
* **kinds** -- its engine (:data:`ENGINE`) and its storage format (:data:`STORAGE_KIND`);
* **a code version** -- a digest of the asset function's source and of every ``recsys_assets.stages`` module
  that it uses: a change of a rule, a default or a model marks the asset's partitions (and so everything
  downstream) as stale in the UI, while an edit elsewhere does not;
* a check that an asset whose inputs reach another day (a :class:`~recsys_assets.defs.partitions.DayWindow`
  other than the same day) declares the ordering dependency ``after_previous_day`` on itself;
* **an automation condition** (:func:`automation_for`), so the daemon keeps the recent days of the graph
  up to date when a day inside a window changes.
"""

import datetime as dt
import hashlib
import inspect
import sys
import types
import typing

import dagster as dg

from .partitions import WINDOW_DAYS, DayWindow

OWNERS: dict[str, list[str]] = {
    "data_prep": ["team:data-eng"],
    "collaborative": ["team:ml-recsys"],
    "content": ["team:ml-content"],
    "cold_start": ["team:ml-content", "team:ml-recsys"],
    "retrieval": ["team:ml-recsys"],
    "serving": ["team:ml-recsys"],
    "sources": ["team:data-platform"],
}
TIER: dict[str, str] = {
    "raw_interactions": "dataset",
    "raw_interactions_quarantine": "dataset",
    "video_catalog": "dataset",
    "filtered_interactions": "dataset",
    "item_meta": "dataset",
    "item_pairs": "dataset",
    "item_content_embeddings": "features",
    "pair_blip_scores": "features",
    "als_factors": "model",
    "als_user_factors": "model",
    "content_encoder": "model",
    "item_collab_embeddings": "features",
    "item_pca": "model",
    "two_tower_dataset": "dataset",
    "two_tower_user_history": "dataset",
    "two_tower_item_features": "features",
    "two_tower_model": "model",
    "als_evaluation": "evaluation",
    "content_encoder_evaluation": "evaluation",
    "two_tower_evaluation": "evaluation",
    "two_tower_ablations": "evaluation",
    "experiment_report": "report",
    "item_collab_index": "index",
    "two_tower_item_index": "index",
}
"""dataset / features / model / evaluation / report / index: the ``tier`` tag (UI filter ``tag:tier=model``)."""
ENGINE: dict[str, str] = {
    "raw_interactions": "polars",
    "raw_interactions_quarantine": "polars",
    "video_catalog": "delta",
    "filtered_interactions": "polars",
    "item_meta": "polars",
    "item_pairs": "polars",
    "item_content_embeddings": "torch",
    "pair_blip_scores": "polars",
    "als_factors": "implicit",
    "als_user_factors": "implicit",
    "als_evaluation": "numpy",
    "content_encoder": "torch",
    "item_collab_embeddings": "torch",
    "content_encoder_evaluation": "numpy",
    "item_pca": "scikit-learn",
    "two_tower_dataset": "polars",
    "two_tower_user_history": "polars",
    "two_tower_item_features": "scikit-learn",
    "two_tower_model": "torch",
    "two_tower_evaluation": "torch",
    "two_tower_ablations": "torch",
    "experiment_report": "polars",
    "item_collab_index": "faiss",
    "two_tower_item_index": "faiss",
}
"""The engine that computes each asset: its first ``kind`` in the UI."""
STORAGE_KIND = {
    "content_encoder": "safetensors",
    "item_pca": "safetensors",
    "two_tower_model": "safetensors",
    "item_collab_index": "safetensors",
    "two_tower_item_index": "safetensors",
}
"""Assets stored by the model IO manager; every other asset is parquet."""
AUTOMATED_BY_SENSOR = ("raw_interactions", "raw_interactions_quarantine", "video_catalog")
"""Roots: started by the lake sensor when a day lands (``defs/automation.py``), not by conditions."""


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _stage_module(value: typing.Any) -> typing.Optional[types.ModuleType]:
    """The ``recsys_assets.stages`` module ``value`` is, or was defined in; None for anything else."""
    module = value if isinstance(value, types.ModuleType) else sys.modules.get(getattr(value, "__module__", ""))
    return module if module is not None and module.__name__.startswith("recsys_assets.stages.") else None


def _stage_modules(fn: typing.Callable) -> list[types.ModuleType]:
    """The ``recsys_assets.stages`` modules that the asset function refers to, directly (``phase1.x``) or
    through a name imported from one (``in_unit_interval``), and the stage modules those import."""
    scope = {**vars(sys.modules[fn.__module__]), **dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))}
    todo = [scope.get(name) for name in _names(fn.__code__)]
    found: dict[str, types.ModuleType] = {}
    while todo:
        module = _stage_module(todo.pop())
        if module is not None and module.__name__ not in found:
            found[module.__name__] = module
            todo.extend(vars(module).values())  # and the stage modules it imports
    return [found[k] for k in sorted(found)]


def code_version_of(assets_def: dg.AssetsDefinition) -> str:
    """A digest of the asset function's source and of the stage modules it uses (see module docstring)."""
    fn = assets_def.op.compute_fn.decorated_fn  # type: ignore[union-attr]
    digest = hashlib.sha256(inspect.getsource(fn).encode())
    for module in _stage_modules(fn):
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:12]


def reaches_other_days(spec: dg.AssetSpec) -> bool:
    return any(
        isinstance(dep.partition_mapping, DayWindow)
        and (dep.partition_mapping.start_offset, dep.partition_mapping.end_offset) != (0, 0)
        for dep in spec.deps
    )


def automation_for(key: dg.AssetKey, ordered: bool) -> dg.AutomationCondition:
    """Eager over the last ``WINDOW_DAYS + 1`` days: a partition is requested when it is missing or one of
    its dependencies was updated (for a windowed asset its own previous day counts, so a changed day X
    re-runs X, X+1, ... through the latest day), once no dependency is missing or in progress and every
    dependency's blocking checks passed. Older days are changed by backfills, on purpose."""
    deps_missing = dg.AutomationCondition.any_deps_missing()
    if ordered:
        # the ordering dependency on the previous day must not hold back the first automated day
        deps_missing = deps_missing.ignore(dg.AssetSelection.assets(key))
    return (
        dg.AutomationCondition.in_latest_time_window(lookback_delta=dt.timedelta(days=WINDOW_DAYS + 1))
        & (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
        & ~deps_missing
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label(f"eager over the last {WINDOW_DAYS + 1} days, blocking checks passed")


ORDERED_BY_INPUTS = frozenset({"two_tower_dataset", "two_tower_user_history", "two_tower_item_features"})
"""Windowed keys of a multi-asset that cannot carry after_previous_day (a previous-day dependency between two of
its keys gives them different backfill days, which Dagster refuses); it never reads its own past, and its
DayWindow inputs make a backfill wait for the upstream days it reads."""


def apply(assets: typing.Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    out = []
    for assets_def in assets:
        version = code_version_of(assets_def)
        # a multi-asset is ordered by one of its outputs' dependency on its own previous day
        self_ordered = any(dep.asset_key == spec.key for spec in assets_def.specs for dep in spec.deps)

        def update(spec: dg.AssetSpec, version: str = version, self_ordered: bool = self_ordered) -> dg.AssetSpec:
            name = spec.key.to_user_string()
            group = spec.group_name or "default"
            ordered = reaches_other_days(spec) and spec.partitions_def is not None
            if ordered and not self_ordered and name not in ORDERED_BY_INPUTS:
                raise dg.DagsterInvalidDefinitionError(
                    f"{name} reads other days (a DayWindow input) but has no after_previous_day({name!r}) "
                    "dependency: a backfill could run its day D before D-1's inputs exist"
                )
            automated = spec.partitions_def is not None and name not in AUTOMATED_BY_SENSOR
            return spec.replace_attributes(
                code_version=version,
                owners=OWNERS.get(group, []),
                automation_condition=automation_for(spec.key, ordered) if automated else spec.automation_condition,
            ).merge_attributes(
                kinds={ENGINE[name], STORAGE_KIND.get(name, "parquet")},
                tags={"stage": group, "tier": TIER.get(name, "dataset")},
            )

        out.append(assets_def.map_asset_specs(update))
    return out
