import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import dagster as dg
import polars as pl
import pytest

from recsys_assets.defs.io_manager import PolarsParquetIOManager
from recsys_assets.defs.s3 import S3Resource
from recsys_assets.storage import (
    PARTS_SUFFIX,
    LocalStore,
    commit_parts,
    new_parts_version,
    open_store,
    parts_prefix,
    read_parquet,
    write_parquet,
)


def frame(n: int, v: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"a": range(n), "v": [v] * n})


def test_local_write_is_atomic_when_the_writer_fails(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    write_parquet(store, "x/2026-11-01.parquet", frame(3, v=1))

    def boom(self, path, **kw):
        with open(path, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        write_parquet(store, "x/2026-11-01.parquet", frame(3, v=2))
    monkeypatch.undo()
    assert read_parquet(store, "x/2026-11-01.parquet")["v"].to_list() == [1, 1, 1]
    assert sorted(os.listdir(tmp_path / "x")) == ["2026-11-01.parquet"]  # no temp file left


def test_a_killed_writer_leaves_the_previous_version_intact(tmp_path):
    store = LocalStore(tmp_path)
    write_parquet(store, "big/p.parquet", frame(10, v=1))
    script = textwrap.dedent(
        f"""
        import numpy as np, polars as pl, sys
        from recsys_assets.storage import LocalStore, write_parquet
        df = pl.DataFrame({{"a": np.random.default_rng(0).random(30_000_000), "v": np.full(30_000_000, 2)}})
        print("writing", flush=True)
        while True:
            write_parquet(LocalStore({str(tmp_path)!r}), "big/p.parquet", df)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)  # mid-way through the first (multi-second) write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    got = read_parquet(store, "big/p.parquet")
    assert got["v"].unique().to_list() in ([1], [2])  # the old version, or a complete new one
    assert got.height in (10, 30_000_000)


def test_concurrent_writers_of_different_partitions(tmp_path):
    store = LocalStore(tmp_path)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                write_parquet(store, f"asset/2026-11-{i:02d}.parquet", frame(1000, v=i))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 9)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    for i in range(1, 9):
        assert read_parquet(store, f"asset/2026-11-{i:02d}.parquet")["v"].unique().to_list() == [i]


def test_keys_cannot_escape_the_root(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        LocalStore(tmp_path / "root").path("../outside.parquet")


def test_unsupported_url_scheme():
    with pytest.raises(ValueError, match="unsupported storage URL"):
        open_store("ftp://host/x")


daily = dg.DailyPartitionsDefinition(start_date="2026-11-01")


@dg.asset(partitions_def=daily)
def numbers(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return frame(5, v=int(context.partition_key[-2:]))


@dg.asset(
    partitions_def=daily,
    ins={
        "numbers": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2, end_offset=0),
            metadata={"allow_missing_partitions": True},
        )
    },
)
def window(numbers: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return pl.DataFrame({"partition": sorted(numbers), "rows": [numbers[k].height for k in sorted(numbers)]})


@dg.asset(partitions_def=daily)
def same_day(numbers: pl.DataFrame) -> pl.DataFrame:
    return numbers.with_columns(v=pl.col("v") * 10)


@dg.asset(partitions_def=daily)
def streamed(context: dg.AssetExecutionContext) -> pl.LazyFrame:
    """Returns a LazyFrame (a scan of parts it spilled): the IO manager streams it into the partition."""
    import tempfile

    spill = tempfile.mkdtemp(prefix="streamed-")
    for k in range(3):
        pl.DataFrame({"k": [k] * 4, "v": list(range(4)), "wide": ["x" * 50] * 4}).write_parquet(f"{spill}/p{k}.parquet")
    return pl.scan_parquet(f"{spill}/p*.parquet")


@dg.asset(
    partitions_def=daily,
    ins={
        "streamed": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=0),
            metadata={"allow_missing_partitions": True, "columns": ["k", "v"]},
        )
    },
)
def narrow_lazy(streamed: dict[str, pl.LazyFrame]) -> pl.DataFrame:
    """Reads two columns of a window lazily and filters in the scan."""
    assert all(isinstance(lf, pl.LazyFrame) for lf in streamed.values())
    return pl.concat([lf.filter(pl.col("v") >= 2) for _, lf in sorted(streamed.items())]).collect()


def _moto_io_manager(base_url: str) -> PolarsParquetIOManager:
    """The parquet IO manager on the moto server of ``s3_env`` (credentials as EnvVars, as deployed)."""
    return PolarsParquetIOManager(
        base_url=base_url,
        s3=S3Resource(
            endpoint_url=dg.EnvVar("RECSYS_S3_ENDPOINT_URL"),
            aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
            region_name="us-east-1",
        ),
    )


def run_lazy_roundtrip(io_manager: PolarsParquetIOManager) -> pl.DataFrame:
    instance = dg.DagsterInstance.ephemeral()
    for day in ("2026-11-01", "2026-11-02"):
        assert dg.materialize(
            [streamed], partition_key=day, resources={"io_manager": io_manager}, instance=instance
        ).success
    r = dg.materialize(
        [streamed, narrow_lazy],
        selection=[narrow_lazy],
        partition_key="2026-11-02",
        resources={"io_manager": io_manager},
        instance=instance,
    )
    assert r.success
    out = r.output_for_node("narrow_lazy")
    assert out.columns == ["k", "v"] and out.height == 2 * 3 * 2  # two days, three parts, v in {2, 3}
    return out


@pytest.fixture
def spill_in_tmp(tmp_path, monkeypatch):
    """``streamed``'s spill (tempfile.mkdtemp) goes under the test's tmp_path, not /tmp."""
    import tempfile

    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))


def test_io_manager_streams_lazy_outputs_and_projects_lazy_inputs_locally(tmp_path, spill_in_tmp):
    run_lazy_roundtrip(PolarsParquetIOManager(base_url=str(tmp_path / "store")))
    stored = read_parquet(LocalStore(tmp_path / "store"), "streamed/2026-11-01.parquet")
    assert stored.height == 12 and stored.columns == ["k", "v", "wide"]


def test_io_manager_streams_lazy_outputs_and_projects_lazy_inputs_on_s3(s3_env, spill_in_tmp):
    endpoint, bucket, client = s3_env
    io = _moto_io_manager(f"s3://{bucket}/lazy")
    run_lazy_roundtrip(io)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert "lazy/streamed/2026-11-02.parquet" in keys


def run_io_roundtrip(io_manager: PolarsParquetIOManager):
    instance = dg.DagsterInstance.ephemeral()
    for day in ("2026-11-01", "2026-11-03"):
        r = dg.materialize(
            [numbers, same_day], partition_key=day, resources={"io_manager": io_manager}, instance=instance
        )
        assert r.success
    r = dg.materialize(
        [numbers, window],
        selection=[window],
        partition_key="2026-11-03",
        resources={"io_manager": io_manager},
        instance=instance,
    )
    assert r.success
    assert r.output_for_node("window")["partition"].to_list() == ["2026-11-01", "2026-11-03"]  # 11-02 missing, allowed
    return r


def test_io_manager_local_partitions_and_windows(tmp_path):
    run_io_roundtrip(PolarsParquetIOManager(base_url=str(tmp_path)))
    assert read_parquet(LocalStore(tmp_path), "same_day/2026-11-03.parquet")["v"].to_list() == [30] * 5


def test_io_manager_missing_partition_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="numbers partition 2026-11-05 has not been materialized"):
        dg.materialize(
            [numbers, same_day],
            selection=[same_day],
            partition_key="2026-11-05",
            resources={"io_manager": PolarsParquetIOManager(base_url=str(tmp_path))},
        )


def test_io_manager_on_s3_through_moto(s3_env):
    endpoint, bucket, client = s3_env
    io = _moto_io_manager(f"s3://{bucket}/assets")
    run_io_roundtrip(io)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert "assets/numbers/2026-11-01.parquet" in keys and "assets/window/2026-11-03.parquet" in keys
    store = open_store(f"s3://{bucket}/assets", endpoint_url=endpoint)
    assert read_parquet(store, "same_day/2026-11-01.parquet")["v"].to_list() == [10] * 5
    with pytest.raises(FileNotFoundError):
        read_parquet(store, "nope.parquet")


def test_every_s3_client_comes_from_the_deployments_s3_resource(s3_env, tmp_path, monkeypatch):
    """The location registers one dagster-aws S3Resource as ``s3``; the IO managers, the cache and the reports
    use its client, and polars/deltalake/media fetch get its settings. A setting they could not follow is
    refused instead of being silently dropped."""
    from recsys_assets.definitions import build_resources
    from recsys_assets.defs.s3 import s3_client, s3_options

    endpoint, bucket, _ = s3_env
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")  # read at run time, as deployed (dg.EnvVar)
    env = {
        "RECSYS_DATA_DIR": str(tmp_path),
        "RECSYS_STORAGE_URL": f"s3://{bucket}/assets",
        "RECSYS_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "session-token",
        "AWS_REGION": "us-east-1",
    }
    resources = build_resources(env)
    s3 = resources["s3"]
    assert isinstance(s3, S3Resource)
    for name in ("io_manager", "model_io_manager", "reports", "embedding_cache", "media_fetch", "content_models"):
        assert resources[name].s3 is s3, name
    with dg.build_resources({"io_manager": resources["io_manager"]}) as built:
        store = built.io_manager.store
        assert store.client is s3_client(built.io_manager.s3)  # the resource's (cached) boto3 client
        assert store.client.meta.endpoint_url == endpoint
        assert store.polars_options()["aws_session_token"] == "session-token"
        store.write_bytes("probe", b"x")
        assert store.read_bytes("probe") == b"x"
    with dg.build_resources({"media_fetch": resources["media_fetch"]}) as built:
        assert dict(built.media_fetch.policy().s3_options)["endpoint_url"] == endpoint
    with pytest.raises(ValueError, match="AWS_PROFILE"):
        s3_options(S3Resource(profile_name="analytics"))


def test_a_streamed_wide_frame_is_written_in_row_groups_of_bounded_bytes(tmp_path):
    """Per-frame vectors (8 x 512 float16 = 8 KiB a row) are streamed in row groups of about ROW_GROUP_BYTES,
    not 262 k rows (2 GiB a group, which the writer buffers whole)."""
    import numpy as np
    import pyarrow.parquet as pq

    from recsys_assets.storage import LocalStore, streamed_rows_per_group, write_parquet

    rows = 6_000
    frames = np.zeros((rows, 8, 512), dtype=np.float16)
    src = tmp_path / "src.parquet"
    pl.DataFrame({"item_id": np.arange(rows), "frame_embeddings": frames}).write_parquet(src)
    write_parquet(LocalStore(tmp_path), "out.parquet", pl.scan_parquet(src), row_group_bytes=16 * 2**20)
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    per_group = streamed_rows_per_group(pl.scan_parquet(src).collect_schema(), 16 * 2**20)
    assert per_group == 16 * 2**20 // (8 + 8 * 512 * 2)
    assert meta.num_row_groups >= rows // per_group and meta.num_rows == rows
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= per_group


def _spark_like_version(store, key: str, values: list[int]) -> str:
    """A version of ``key`` as a local Spark writer leaves it: a part, its Hadoop ``.crc``, ``_SUCCESS``."""
    version = new_parts_version()
    prefix = parts_prefix(key, version)
    buf = io.BytesIO()
    pl.DataFrame({"v": values}).write_parquet(buf)
    store.write_bytes(f"{prefix}/part-00000.parquet", buf.getvalue())
    store.write_bytes(f"{prefix}/.part-00000.parquet.crc", b"crc")
    store.write_bytes(f"{prefix}/_SUCCESS", b"")
    commit_parts(store, key, version, len(values), written_by="test")
    return version


def _republish_leaves_only_the_current_version(store, files_under) -> None:
    key = "t/day.parquet"
    first = _spark_like_version(store, key, [1, 2])
    assert any(f.endswith(".crc") for f in files_under(f"{key}{PARTS_SUFFIX}"))
    second = _spark_like_version(store, key, [3])
    # the earlier version is gone whole, its checksum and marker files with it
    left = files_under(f"{key}{PARTS_SUFFIX}")
    assert left and all(f"/{second}/" in f for f in left) and not any(f"/{first}/" in f for f in left)
    assert read_parquet(store, key)["v"].to_list() == [3]
    # a single object replaces the parts: the manifest and every part file go
    write_parquet(store, key, pl.DataFrame({"v": [4]}))
    assert files_under(f"{key}{PARTS_SUFFIX}") == [] and read_parquet(store, key)["v"].to_list() == [4]
    with pytest.raises(ValueError, match="whole store"):
        store.delete_prefix("")


def test_republished_parts_leave_no_earlier_version_behind_locally(tmp_path):
    store = LocalStore(tmp_path)

    def files_under(prefix: str) -> list[str]:
        base = tmp_path / prefix
        return sorted(str(p.relative_to(tmp_path)) for p in base.rglob("*") if p.is_file()) if base.exists() else []

    _republish_leaves_only_the_current_version(store, files_under)
    assert not (tmp_path / "t/day.parquet.parts").exists()  # the folders go too


def test_republished_parts_leave_no_earlier_version_behind_on_s3(s3_env):
    endpoint, bucket, client = s3_env
    store = open_store(f"s3://{bucket}/assets", endpoint_url=endpoint)

    def files_under(prefix: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"assets/{prefix}/")
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    _republish_leaves_only_the_current_version(store, files_under)
