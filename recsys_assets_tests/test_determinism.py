"""The same inputs and seed give identical outputs, every asset: the whole graph on the tiny platform,
materialized twice from scratch into the same place, compared file by file."""

import shutil

import dagster as dg
import polars as pl
import pytest

from recsys_assets.defs import cold_start, collaborative, content, data_prep, retrieval, serving

from .conftest import tiny_assets, tiny_resources

DAYS = ("2026-11-01", "2026-11-02")
CONFIG = {
    "ops": {
        "als_factors": {"config": {"min_cells_per_language": 50}},
        "item_content_embeddings": {"config": {"decode_workers": 2}},
        "content_encoder": {"config": {"min_items": 16, "max_epochs": 5}},
        "two_tower_model": {"config": {"epochs": 2}},
        "two_tower_ablations": {"config": {"variants": ["inbatch_softmax", "true_content"]}},
    }
}


def materialize_all(root) -> dg.DagsterInstance:
    resources = tiny_resources(root)
    assets = tiny_assets(data_prep, collaborative, content, cold_start, retrieval, serving)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        assert dg.materialize(
            assets, partition_key=day, resources=resources, instance=instance, run_config=CONFIG
        ).success
    everything = [*assets, *retrieval.REPORT_ASSETS]
    assert dg.materialize(everything, resources=resources, instance=instance, selection=["experiment_report"]).success
    return instance


def undescribed_columns(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    """Columns of every materialized asset whose schema in the UI would have no description."""
    out = {}
    seen = 0
    for key in instance.get_asset_keys():
        records = instance.fetch_materializations(key, limit=50).records
        for record in records:
            schema = record.asset_materialization.metadata.get("dagster/column_schema")
            seen += bool(schema)
            missing = [c.name for c in schema.value.columns if not c.description] if schema else []
            if missing:
                out[key.to_user_string()] = sorted(set(out.get(key.to_user_string(), [])) | set(missing))
    assert seen >= 25, f"only {seen} materializations with a column schema"
    return out


@pytest.mark.slow
def test_two_clean_runs_give_identical_outputs(tmp_path):
    root = tmp_path / "run"
    instance = materialize_all(root)
    assert undescribed_columns(instance) == {}  # every column the UI shows is described (defs/columns.py)
    first = tmp_path / "first"
    shutil.move(root / "assets", first)
    shutil.rmtree(root)  # the simulator's files and the embedding cache too: a clean second run
    materialize_all(root)
    second = root / "assets"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file() and "_cache" not in p.parts)
    assert len(files) > 30 and files == sorted(
        p.relative_to(second) for p in second.rglob("*") if p.is_file() and "_cache" not in p.parts
    )
    differ = []
    for rel in files:
        a, b = first / rel, second / rel
        same = (
            pl.read_parquet(a).equals(pl.read_parquet(b))
            if rel.suffix == ".parquet"
            else a.read_bytes() == b.read_bytes()
        )
        if not same:
            differ.append(str(rel))
    assert differ == []
