"""Model artifacts: named arrays plus a JSON config, stored as ONE safetensors file (never a pickle).

The config travels inside the file's ``__metadata__`` (key ``config``), so a partition is a single
object and its write is atomic; :func:`to_bytes` / :func:`from_bytes` are the format. Arrays are numpy
(float32/int64...), so torch modules and scikit-learn estimators both round-trip through them.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import typing

import numpy as np


@dataclasses.dataclass
class ModelArtifact:
    arrays: dict[str, np.ndarray]
    config: dict[str, typing.Any]

    def subset(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays whose name starts with ``prefix + '.'``, with the prefix removed."""
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.arrays.items() if k.startswith(p)}


def to_bytes(artifact: ModelArtifact) -> bytes:
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(v) for k, v in artifact.arrays.items()}
    return save(arrays, metadata={"config": json.dumps(artifact.config, sort_keys=True, default=_json_default)})


def from_bytes(data: bytes) -> ModelArtifact:
    from safetensors.numpy import load

    if len(data) < 8:
        raise ValueError("not a safetensors file: fewer than 8 bytes")
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    meta = header.get("__metadata__") or {}
    return ModelArtifact(arrays=load(data), config=json.loads(meta.get("config", "{}")))


def _json_default(v: typing.Any) -> typing.Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
