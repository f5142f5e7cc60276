import datetime as dt

import polars as pl
import pytest

from recsys_assets.sources.lake import SnapshotNotFoundError, delta_storage_options, read_catalog, read_snapshot
from recsys_assets.stages.item_meta import CatalogSchemaError, build_item_meta, prepare_catalog, validate_item_meta
from recsys_assets.storage import LocalStore, open_store, write_parquet

from .conftest import interactions

DAY = dt.date(2026, 11, 2)


def test_snapshot_folder_with_several_files(tmp_path):
    store = LocalStore(tmp_path)
    a = interactions([{"item_id": 1}])
    b = interactions([{"item_id": 2}]).select(list(reversed(a.columns)))  # columns in another order
    write_parquet(store, "snap/dt=2026-11-02/part-0.parquet", a)
    write_parquet(store, "snap/dt=2026-11-02/part-1.parquet", b)
    got = read_snapshot(str(tmp_path / "snap/dt={date}/"), DAY)
    assert sorted(got["item_id"].to_list()) == [1, 2]
    with pytest.raises(SnapshotNotFoundError, match="no snapshot parquet files for 2026-11-03"):
        read_snapshot(str(tmp_path / "snap/dt={date}/"), DAY + dt.timedelta(days=1))
    with pytest.raises(ValueError, match="must contain"):
        read_snapshot(str(tmp_path / "snap/"), DAY)


def test_snapshot_and_delta_catalog_on_s3(s3_env):
    endpoint, bucket, _ = s3_env
    store = open_store(f"s3://{bucket}", endpoint_url=endpoint)
    write_parquet(store, "daily/20261102/part-0.parquet", interactions([{"item_id": 7}]))
    got = read_snapshot(f"s3://{bucket}/daily/{{yyyymmdd}}/", DAY, endpoint_url=endpoint)
    assert got["item_id"].to_list() == [7]

    cat = pl.DataFrame(
        {"item_id": [7, 8], "language": ["hindi", "tamil"], "download_url": ["s3://m/7.mp4", "s3://m/8.mp4"]}
    )
    opts = {
        **delta_storage_options(
            endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        ),
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    cat.write_delta(f"s3://{bucket}/josh-meta/video", storage_options=opts)
    back = read_catalog(
        f"s3://{bucket}/josh-meta/video",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    assert back.sort("item_id").equals(cat)


def test_prepare_catalog_types_and_as_of():
    raw = pl.DataFrame(
        {
            "item_id": ["1", "2", "3"],
            "language": ["hindi"] * 3,
            "download_url": ["u1", "u2", "u3"],
            "upload_date": [dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)],
            "extra": [1, 2, 3],
        }
    )
    cat = prepare_catalog(raw, as_of=DAY)
    assert cat["item_id"].to_list() == [1, 2]
    assert cat["item_id"].dtype == pl.Int64 and "extra" in cat.columns and cat["duration_s"].null_count() == 2
    with pytest.raises(CatalogSchemaError, match="download_url"):
        prepare_catalog(raw.drop("download_url"))


def test_item_meta_counts_items_missing_from_catalog():
    inter = interactions(
        [{"item_id": 1, "is_positive": True}, {"item_id": 2}, {"item_id": 2, "client_id": 9}, {"item_id": 404}]
    ).with_columns(is_positive=pl.Series([True, False, True, False]))
    cat = prepare_catalog(
        pl.DataFrame({"item_id": [1, 2, 3], "language": ["hindi", "tamil", "hindi"], "download_url": ["a", "b", "c"]})
    )
    res = build_item_meta(inter, cat)
    assert res.items["item_id"].to_list() == [1, 2]
    assert res.items.filter(pl.col("item_id") == 2).row(0, named=True)["num_clients"] == 2
    assert res.missing["item_id"].to_list() == [404]
    assert res.coverage == pytest.approx(2 / 3)
    v = validate_item_meta(res.items, res.coverage, 0.99)
    assert v["catalog_coverage"][0] is False and v["item_id_unique"][0] is True
