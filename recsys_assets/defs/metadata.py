"""Metadata that makes a materialization readable in the UI: row counts, schema, a preview, tables."""

import math
import typing

import dagster as dg
import polars as pl

from .columns import describe


def markdown_table(rows: typing.Sequence[typing.Mapping[str, typing.Any]] | pl.DataFrame, max_rows: int = 20) -> str:
    if isinstance(rows, pl.DataFrame):
        df = rows.head(max_rows)
        header, body = df.columns, df.rows()
    else:
        rows = list(rows)[:max_rows]
        header = list(rows[0]) if rows else []
        body = [tuple(r.get(h) for h in header) for r in rows]

    def fmt(v: typing.Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in body]
    return "\n".join(lines)


def to_metadata(values: typing.Mapping[str, typing.Any]) -> dict[str, dg.MetadataValue]:
    """Plain Python values -> typed metadata (ints, floats, text, JSON for containers)."""
    out: dict[str, typing.Any] = {}
    for k, v in values.items():
        if isinstance(v, dg.MetadataValue) or isinstance(v, dg.TableSchema):
            out[k] = v
        elif isinstance(v, bool):
            out[k] = dg.MetadataValue.bool(v)
        elif isinstance(v, int):
            out[k] = dg.MetadataValue.int(v)
        elif isinstance(v, float):
            out[k] = dg.MetadataValue.float(v)
        elif isinstance(v, (dict, list, tuple)):
            out[k] = dg.MetadataValue.json(v)
        else:
            out[k] = dg.MetadataValue.text(str(v))
    return out


def frame_metadata(df: pl.DataFrame | pl.LazyFrame, preview_rows: int = 5) -> dict[str, typing.Any]:
    """Row count, schema and a preview (of a LazyFrame: counted and previewed by scanning, not collected)."""
    if isinstance(df, pl.LazyFrame):
        height = int(df.select(pl.len()).collect().item())
        df = df.head(preview_rows).collect()
    else:
        height = df.height
    return {
        "dagster/row_count": dg.MetadataValue.int(height),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, str(dtype), description=describe(name)) for name, dtype in df.schema.items()]
        ),
        "preview": dg.MetadataValue.md(markdown_table(df, preview_rows)),
    }


def latest_partition_metadata(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: typing.Sequence[str]
) -> dict[str, dict[str, typing.Any]]:
    """The metadata of the latest materialization of each of ``partitions`` that has one (plain values)."""
    if not partitions:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=list(partitions)), limit=20 * len(partitions)
    ).records
    out: dict[str, dict[str, typing.Any]] = {}
    for record in records:  # newest first
        mat = record.asset_materialization
        if mat is not None and mat.partition is not None and mat.partition not in out:
            out[mat.partition] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return out


def png_metadata(png: bytes, url: str, alt: str) -> dict[str, dg.MetadataValue]:
    """A PNG for the asset's page: inline in markdown (a data URI, so it needs no file server) and as the
    path of the stored file."""
    import base64

    inline = f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
    return {alt: dg.MetadataValue.md(inline), f"{alt}_png": dg.MetadataValue.path(url)}
