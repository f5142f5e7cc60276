"""Inputs read only the columns they declare: the IO manager projects, locally and on S3 (moto over HTTP), and
the unused columns are never loaded -- shown by the reader's peak memory beside a wide column that would
dominate it -- and no reader but the content encoder's declares the per-frame vectors."""

import json
import subprocess
import sys
import textwrap

import dagster as dg
import numpy as np
import polars as pl
import pytest

from recsys_assets.defs.io_manager import PolarsParquetIOManager
from recsys_assets.storage import LocalStore, open_store, read_parquet, write_parquet

WIDE_ROWS, WIDE_DIM = 200_000, 320  # the wide column: 200 000 x 320 float32 = 256 MB, incompressible


def _wide_frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "item_id": np.arange(WIDE_ROWS, dtype=np.int64),
            "status": rng.integers(0, 3, WIDE_ROWS).astype(np.int32),
            "frame_embeddings": pl.Series(rng.random((WIDE_ROWS, WIDE_DIM), dtype=np.float32)),
        }
    )


def _peak_rss_of_read(url: str, key: str, columns: list[str] | None, env: dict[str, str]) -> dict:
    """Read in a fresh process; its peak RSS above what it held just before the read."""
    script = textwrap.dedent(
        f"""
        import json, os
        from recsys_assets.storage import open_store, read_parquet
        opts = {{k: os.environ.get(v) for k, v in (("endpoint_url", "RECSYS_S3_ENDPOINT_URL"),
                ("aws_access_key_id", "AWS_ACCESS_KEY_ID"), ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                ("region_name", "AWS_REGION"))}} if {url!r}.startswith("s3://") else {{}}
        store = open_store({url!r}, **opts)
        def status(field):  # this image's memory, not ru_maxrss (which keeps the forking parent's peak)
            return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1])
        before = status("VmRSS")
        df = read_parquet(store, {key!r}, {columns!r})
        peak = status("VmHWM")
        print(json.dumps({{"columns": df.columns, "rows": df.height, "before_kb": before, "peak_kb": peak}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_projection(url: str, env: dict[str, str]) -> None:
    store = open_store(url, **_s3_options(env) if url.startswith("s3://") else {})
    size = write_parquet(store, "item_content_embeddings/2026-11-01.parquet", _wide_frame())
    assert size > 200 * 2**20
    key = "item_content_embeddings/2026-11-01.parquet"
    narrow = _peak_rss_of_read(url, key, ["item_id", "status"], env)
    assert narrow["columns"] == ["item_id", "status"] and narrow["rows"] == WIDE_ROWS
    grown_mb = (narrow["peak_kb"] - narrow["before_kb"]) / 1024
    assert grown_mb < 64, f"reading 2 narrow columns grew the reader by {grown_mb:.0f} MB: the wide one was loaded"
    full = _peak_rss_of_read(url, key, None, env)  # the control: the same read with every column
    full_mb = (full["peak_kb"] - full["before_kb"]) / 1024
    assert full_mb > 200, f"control read grew only {full_mb:.0f} MB: the measurement cannot see the wide column"


def _s3_options(env: dict[str, str]) -> dict[str, str]:
    return {
        "endpoint_url": env["RECSYS_S3_ENDPOINT_URL"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_REGION"],
    }


def test_two_columns_of_a_wide_partition_do_not_load_the_others_locally(tmp_path):
    import os

    _check_projection(str(tmp_path / "assets"), dict(os.environ))


def test_two_columns_of_a_wide_partition_do_not_load_the_others_on_s3(s3_env):
    import os

    _endpoint, bucket, _client = s3_env
    _check_projection(f"s3://{bucket}/assets", dict(os.environ))


def _io_context(columns, partition_keys, lazy=False, window=False):
    value = pl.LazyFrame if lazy else pl.DataFrame
    annotation = dict[str, value] if window else value
    partitions = dg.DailyPartitionsDefinition(start_date="2026-11-01")
    upstream = dg.build_output_context(asset_key=dg.AssetKey("wide"), partition_key=partition_keys[0])
    return dg.build_input_context(
        asset_key=dg.AssetKey("wide"),
        upstream_output=upstream,
        definition_metadata={"columns": columns, "allow_missing_partitions": True} if columns else None,
        dagster_type=dg.DagsterType(lambda _, v: True, "frames", typing_type=annotation),
        asset_partitions_def=partitions,
        asset_partition_key_range=dg.PartitionKeyRange(partition_keys[0], partition_keys[-1]),
    )


def test_io_manager_projects_columns_eagerly_lazily_and_over_windows(tmp_path):
    io = PolarsParquetIOManager(base_url=str(tmp_path))
    store = LocalStore(tmp_path)
    for day in ("2026-11-01", "2026-11-02"):
        df = pl.DataFrame({"item_id": [1, 2, 3], "a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"], "day": [day] * 3})
        write_parquet(store, f"wide/{day}.parquet", df)

    one = io.load_input(_io_context(["item_id", "a"], ["2026-11-01"]))
    assert one.columns == ["item_id", "a"]

    lazy = io.load_input(_io_context(["item_id", "day"], ["2026-11-02"], lazy=True))
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.filter(pl.col("item_id") > 1).collect().to_dicts() == [
        {"item_id": 2, "day": "2026-11-02"},
        {"item_id": 3, "day": "2026-11-02"},
    ]

    window = io.load_input(_io_context(["b"], ["2026-11-01", "2026-11-02"], window=True))
    assert sorted(window) == ["2026-11-01", "2026-11-02"] and all(df.columns == ["b"] for df in window.values())

    every = io.load_input(_io_context(None, ["2026-11-01"]))
    assert every.columns == ["item_id", "a", "b", "day"]

    with pytest.raises(KeyError, match=r"no column\(s\) \['nope'\]"):
        io.load_input(_io_context(["item_id", "nope"], ["2026-11-01"]))


def test_large_partitions_are_written_in_row_groups(tmp_path):
    import pyarrow.parquet as pq

    store = LocalStore(tmp_path)
    df = pl.DataFrame({"item_id": np.arange(100_000), "v": pl.Series(np.zeros((100_000, 64), np.float32))})
    write_parquet(store, "big.parquet", df, row_group_bytes=2 * 2**20)
    meta = pq.ParquetFile(store.path("big.parquet")).metadata
    assert meta.num_row_groups >= 10  # ~26 MB in groups of ~2 MB
    assert meta.row_group(0).column(0).statistics.has_min_max  # so a predicate can skip groups
    assert read_parquet(store, "big.parquet", ["item_id"])["item_id"].to_list() == list(range(100_000))


def test_only_the_content_encoder_reads_per_frame_vectors():
    """Every input of item_content_embeddings declares its columns; the per-frame vectors (the bulk of a
    partition) are read by the encoder's training and inference only."""
    from recsys_assets.definitions import build_definitions

    defs = build_definitions({"RECSYS_DATA_DIR": "/tmp/unused", "RECSYS_SIM_PROFILE": "tiny"})
    readers: dict[str, list[str]] = {}
    for asset in defs.resolve_asset_graph().assets_defs:
        for name, key in asset.keys_by_input_name.items():
            if key != dg.AssetKey("item_content_embeddings"):
                continue
            md = asset.node_def.input_def_named(name).metadata or {}
            for out in asset.keys:
                readers[out.to_user_string()] = list(md.get("columns") or ["*"])
    assert len(readers) >= 7, readers
    assert all("*" not in cols for cols in readers.values()), readers
    with_frames = sorted(name for name, cols in readers.items() if "frame_embeddings" in cols)
    assert with_frames == ["content_encoder", "item_collab_embeddings"], readers
