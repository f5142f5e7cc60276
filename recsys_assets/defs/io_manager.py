"""Parquet IO manager for polars DataFrames on a local folder or an S3 prefix.

* One object per asset partition: ``{base_url}/{asset/key/path}/{partition_key}.parquet``
  (unpartitioned assets: ``{base_url}/{asset/key/path}.parquet``).
* Writes are atomic per partition (see :mod:`recsys_assets.storage`), so a killed run leaves the
  previous version intact and runs of different partitions can write at the same time.
* An input that maps to several partitions (a trailing window) arrives as
  ``dict[partition_key, DataFrame]``; partitions never materialized raise, unless the input's
  metadata says ``allow_missing_partitions: True`` (every ``partitions.window_input`` does).
* The stored size is reported as ``parquet_bytes`` (tables) or ``safetensors_bytes`` (models).

Reading only what an asset uses (parquet tables):

* **Columns.** An input whose definition metadata has ``columns: [...]`` (``partitions.columns_input`` /
  ``window_input(..., columns=...)``) gets only those columns: the other column chunks are never read
  (locally not paged in; on S3 not fetched -- polars' object_store reader issues ranged GETs). A column the
  partition lacks fails naming the ones it has. Inputs without ``columns`` get every column.
* **Lazy.** An input annotated ``pl.LazyFrame`` (or ``dict[str, pl.LazyFrame]`` for a window) gets a lazy
  scan, projected to ``columns`` if given: the asset's own ``filter``/``select`` are pushed into the parquet
  reader (row groups ruled out by their statistics are skipped) and it may ``collect(engine="streaming")``.
* Tables are written in row groups of about ``storage.ROW_GROUP_BYTES`` with statistics, so a large
  partition streams and a predicate can skip most of it. An asset may return a ``pl.LazyFrame`` (e.g. a scan
  of parts it spilled): it is streamed into the partition's file, never collected in memory.
* Every load reports what it read: the LOADED_INPUT event's metadata (single-partition inputs) and a debug log
  line say which columns of how many partitions were read.

Why not dagster-polars: its parquet reader cannot read on polars 2.x (dagster-polars 0.27.12 passes
``rechunk=`` to ``pl.scan_parquet``, which polars 2.0 removed; its writer works).
"""

import typing

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

from ..artifacts import ModelArtifact, from_bytes, to_bytes
from ..storage import (
    LocalStore,
    ObjectStore,
    StoredPartition,
    TableRef,
    manifest_key,
    partition_sources,
    read_parquet,
    scan_parquet,
    verify_stored,
    write_parquet,
)
from .checks import failed_blocking_checks
from .s3 import S3Resource, open_s3_store

MODEL_IO = "model_io_manager"
"""The resource key of :class:`SafetensorsIOManager`: model assets set it as their ``io_manager_key`` (and
their readers as ``input_manager_key``); plain tables go through the default ``io_manager``."""


class BlockedPartitionError(dg.Failure):
    """An input partition whose latest blocking check failed."""


def _refuse_if_blocked(context: dg.InputContext, asset_key: dg.AssetKey, pk: typing.Optional[str]) -> None:
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # a bare build_input_context(): no instance to ask
        return
    failed = failed_blocking_checks(instance, asset_key, pk)
    if failed:
        what = asset_key.to_user_string() + (f" partition {pk}" if pk else "")
        raise BlockedPartitionError(
            f"{what} is not used: its latest blocking check(s) {failed} failed. Fix the data and "
            f"re-materialize {what} (its checks run with it) before materializing what reads it."
        )


class _PartitionedObjectIOManager(dg.ConfigurableIOManager):
    """One object per asset partition under ``base_url``; subclasses give the format."""

    base_url: str
    s3: typing.Optional[S3Resource] = None
    """The deployment's dagster-aws S3 resource (its client writes and reads); None: the environment's."""

    _store: typing.Optional[ObjectStore] = PrivateAttr(default=None)

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_s3_store(self.base_url, self.s3)
        return self._store

    def key_for(self, asset_key: dg.AssetKey, partition_key: typing.Optional[str]) -> str:
        base = "/".join(asset_key.path)
        return f"{base}/{partition_key}{self._suffix}" if partition_key is not None else f"{base}{self._suffix}"

    def url_for(self, asset_key: dg.AssetKey, partition_key: typing.Optional[str]) -> str:
        return f"{self.store.url}/{self.key_for(asset_key, partition_key)}"

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        if obj is None:
            return
        obj = self._prepare(obj)
        keys = context.asset_partition_keys if context.has_asset_partitions else [None]
        if len(keys) != 1:
            raise ValueError(
                f"one output cannot be stored for {len(keys)} partitions of {context.asset_key.to_user_string()}: "
                "give the asset a BackfillPolicy of one partition per run"
            )
        key = self.key_for(context.asset_key, keys[0])
        size = self._write(key, obj)
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(f"{self.store.url}/{key}"),
                f"{self._suffix.lstrip('.')}_bytes": dg.MetadataValue.int(size),
            }
        )

    def _load_one(
        self,
        context: dg.InputContext,
        asset_key: dg.AssetKey,
        pk: typing.Optional[str],
        columns: typing.Optional[list[str]] = None,
        lazy: bool = False,
        ref: bool = False,
    ) -> typing.Any:
        _refuse_if_blocked(context, asset_key, pk)
        key = self.key_for(asset_key, pk)
        try:
            if ref:
                partition_sources(self.store, key)  # raises FileNotFoundError now if never written
                return TableRef(self.store, (key,), tuple(columns) if columns is not None else None)
            return self._read(key, columns, lazy)
        except FileNotFoundError:
            what = asset_key.to_user_string() + (f" partition {pk}" if pk else "")
            raise FileNotFoundError(f"{what} has not been materialized (looked for {self.store.url}/{key})") from None

    def _report(self, context: dg.InputContext, columns: typing.Optional[list[str]], n: int, lazy: bool) -> None:
        what = "every column" if columns is None else f"columns {columns}"
        lazily = " (lazy)" if lazy else ""
        context.log.debug(f"{context.asset_key.to_user_string()}: {what} of {n} partition(s){lazily}")
        if not context.has_asset_partitions or len(context.asset_partition_keys) == 1:
            try:
                context.add_input_metadata(
                    {"columns_read": dg.MetadataValue.json(columns or ["*"]), "lazy": lazy, "partitions_read": n}
                )
            except dg.DagsterInvariantViolationError:  # a bare build_input_context()
                pass

    def load_input(self, context: dg.InputContext) -> typing.Any:
        asset_key = context.asset_key
        annotation = context.dagster_type.typing_type
        wants_dict = typing.get_origin(annotation) is dict
        value_type = typing.get_args(annotation)[1] if wants_dict and typing.get_args(annotation) else annotation
        lazy = value_type is pl.LazyFrame
        ref = value_type is TableRef
        md = context.definition_metadata or {}
        columns = list(md["columns"]) if md.get("columns") is not None else None
        if not context.has_asset_partitions:
            self._report(context, columns, 1, lazy)
            return self._load_one(context, asset_key, None, columns, lazy, ref)
        keys = context.asset_partition_keys
        if not wants_dict:
            if len(keys) != 1:
                raise TypeError(
                    f"input {context.name!r} spans {len(keys)} partitions of {asset_key.to_user_string()}: "
                    "annotate it as dict[str, pl.DataFrame]"
                )
            self._report(context, columns, 1, lazy)
            return self._load_one(context, asset_key, keys[0], columns, lazy, ref)
        allow_missing = bool(md.get("allow_missing_partitions", False))
        out: dict[str, typing.Any] = {}
        missing = []
        for pk in keys:
            try:
                out[pk] = self._load_one(context, asset_key, pk, columns, lazy, ref)
            except FileNotFoundError:
                if not allow_missing:
                    raise
                missing.append(pk)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            context.log.warning(
                f"{asset_key.to_user_string()}: {len(missing)} partition(s) missing ({shown}); continuing without them"
            )
        self._report(context, columns, len(out), lazy)
        return out


def is_spark_frame(obj: typing.Any) -> bool:
    """A pyspark DataFrame, classic or Spark Connect (checked without importing pyspark)."""
    return type(obj).__module__.startswith("pyspark.sql") and type(obj).__name__ == "DataFrame"


class PolarsParquetIOManager(_PartitionedObjectIOManager):
    """Stores tables as parquet under ``base_url`` (a path, ``file://`` or ``s3://bucket/prefix``): a polars
    DataFrame (or LazyFrame, streamed) as one object; a Spark DataFrame as part files that Spark's executors
    write, published by a manifest (``storage.commit_parts``) -- the driver never holds the rows. Inputs come
    back as polars frames (either layout), or as a :class:`~recsys_assets.storage.TableRef` (the files, unread)
    when the input is annotated so. ``spark_scheme_map`` rewrites storage URLs for Spark's filesystem."""

    _suffix: typing.ClassVar[str] = ".parquet"
    spark_scheme_map: dict[str, str] = {"s3": "s3a"}

    def _prepare(self, obj: typing.Any) -> typing.Any:
        if not (isinstance(obj, (pl.DataFrame, pl.LazyFrame, StoredPartition)) or is_spark_frame(obj)):
            raise TypeError(
                f"{type(self).__name__} stores polars or Spark DataFrames (or checks a Pipes job's StoredPartition), "
                f"got {type(obj).__name__}"
            )
        return obj  # a LazyFrame is streamed to the file (storage.write_parquet), never collected here

    def _write(self, key: str, obj: typing.Any) -> int:
        if isinstance(obj, StoredPartition):  # a Pipes job wrote and published it: check, write nothing
            return sum(self._size(f) for f in verify_stored(self.store, key, obj)["files"])
        if is_spark_frame(obj):
            from ..spark.io import write_partition

            manifest = write_partition(obj, self.store, key, self.spark_scheme_map)
            return sum(self._size(f) for f in manifest["files"])
        return write_parquet(self.store, key, obj)

    def _size(self, key: str) -> int:
        if isinstance(self.store, LocalStore):
            return self.store.path(key).stat().st_size
        return int(self.store.size(key) or 0)  # type: ignore[attr-defined]

    def is_stored_as_parts(self, asset_key: dg.AssetKey, partition_key: typing.Optional[str]) -> bool:
        return self.store.exists(manifest_key(self.key_for(asset_key, partition_key)))

    def _read(self, key: str, columns: typing.Optional[list[str]] = None, lazy: bool = False) -> typing.Any:
        if lazy:
            scan = scan_parquet(self.store, key)
            return scan.select(columns) if columns is not None else scan
        return read_parquet(self.store, key, columns)


class SafetensorsIOManager(_PartitionedObjectIOManager):
    """Stores :class:`~recsys_assets.artifacts.ModelArtifact` s (model weights + JSON config) as one
    ``.safetensors`` object per partition -- atomic like the parquet writes, never a pickle."""

    _suffix: typing.ClassVar[str] = ".safetensors"

    def _prepare(self, obj: typing.Any) -> ModelArtifact:
        if not isinstance(obj, ModelArtifact):
            raise TypeError(f"{type(self).__name__} stores ModelArtifact objects, got {type(obj).__name__}")
        return obj

    def _write(self, key: str, obj: ModelArtifact) -> int:
        data = to_bytes(obj)
        self.store.write_bytes(key, data)
        return len(data)

    def _read(self, key: str, columns: typing.Optional[list[str]] = None, lazy: bool = False) -> ModelArtifact:
        return from_bytes(self.store.read_bytes(key))
