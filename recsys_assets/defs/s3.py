"""S3 for every resource that may read or write ``s3://``: one dagster-aws ``S3Resource`` per deployment.

``definitions.py`` builds it from the environment (secrets as ``dg.EnvVar``, so they never land in run
config) and registers it as the ``s3`` resource; every resource that touches S3 takes it as its nested
``s3`` field. It is the one place endpoint and credentials are set:

- the stores of the IO managers, the embedding cache, the reports and the snapshot listing use the boto3
  client it makes (``S3Resource.get_client()``, dagster-aws's retries included);
- readers with their own S3 client (polars' and deltalake's object_store, the media-fetch worker
  processes, checkpoint downloads) get the same settings as options, from :func:`s3_options`.

``profile_name`` and ``use_unsigned_session`` are refused: polars and deltalake cannot follow them, so a
deployment would read with other credentials than it writes with. Set ``AWS_PROFILE`` in the environment
instead (boto3, polars and deltalake all honour it).
"""

import typing

from dagster_aws.s3 import S3Resource

from ..storage import ObjectStore, open_store

__all__ = ["S3Resource", "open_s3_store", "s3_client", "s3_options", "s3_store_options"]


def s3_options(s3: typing.Optional[S3Resource]) -> dict[str, typing.Optional[str]]:
    """Endpoint, credentials and region of ``s3`` as keyword options (None where unset: the environment's
    AWS credential chain applies, as in boto3)."""
    if s3 is None:
        return {}
    if s3.profile_name or s3.use_unsigned_session:
        raise ValueError(
            "S3Resource.profile_name / use_unsigned_session are not supported: polars and deltalake read with "
            "their own clients and cannot follow them. Set AWS_PROFILE in the environment instead."
        )
    return {
        "endpoint_url": s3.endpoint_url,
        "aws_access_key_id": s3.aws_access_key_id,
        "aws_secret_access_key": s3.aws_secret_access_key,
        "aws_session_token": s3.aws_session_token,
        "region_name": s3.region_name,
    }


_CLIENTS: dict[tuple, typing.Any] = {}


def s3_client(s3: typing.Optional[S3Resource]) -> typing.Any:
    """The boto3 S3 client of ``s3`` (one per distinct configuration and process: boto3 clients are
    thread-safe); the default ``S3Resource()`` (environment credentials) when ``s3`` is None."""
    s3 = s3 if s3 is not None else S3Resource()
    s3_options(s3)  # refuses what polars could not follow
    key = tuple(sorted((k, repr(getattr(s3, k))) for k in type(s3).model_fields))
    if key not in _CLIENTS:
        _CLIENTS[key] = s3.get_client()
    return _CLIENTS[key]


def s3_store_options(url: str, s3: typing.Optional[S3Resource]) -> dict[str, typing.Any]:
    """:func:`s3_options` plus, for an ``s3://`` URL, the resource's client: what :func:`open_store` takes."""
    opts: dict[str, typing.Any] = dict(s3_options(s3))
    if url.startswith("s3://"):
        opts["client"] = s3_client(s3)
    return opts


def open_s3_store(url: str, s3: typing.Optional[S3Resource]) -> ObjectStore:
    """The store at ``url`` (a path or ``s3://bucket/prefix``), with ``s3``'s client for S3."""
    return open_store(url, **s3_store_options(url, s3))
