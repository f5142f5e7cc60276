"""Run-time guards: retries for transient I/O only, and the GPU pool.

* :data:`IO_RETRY` is the retry policy of the assets that read the lake, the catalog or media over the network
  (``raw_interactions``, ``video_catalog``, ``item_content_embeddings``): three retries, exponential backoff
  from 10 s with jitter.
* :func:`only_transient_retries` wraps their bodies: an exception is retried only when it (or an exception it
  was raised from) is a network-level failure -- a refused or reset connection, a timeout, a throttled or 5xx
  S3 answer. Everything else -- a schema error, a corrupt parquet file, a missing day, a Delta table that is
  not one -- is a data error: retrying cannot fix it, so it fails at once (``dg.Failure(allow_retries=False)``)
  with the original message.
* :data:`GPU_POOL` is the concurrency pool of the assets that hold the accelerator; the shipped
  ``dagster.yaml`` limits every pool to one step at a time, so a backfill never puts two on one GPU.
"""

import contextlib
import typing

import dagster as dg

IO_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
GPU_POOL = "gpu"

_TRANSIENT_S3_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


def _chain(exc: BaseException) -> typing.Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def is_transient(exc: BaseException) -> bool:
    """A network-level failure somewhere in the exception's chain (see module docstring)."""
    for e in _chain(exc):
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        name = type(e).__name__
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ProtocolError"):
            return True  # botocore / urllib3, without importing them
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _TRANSIENT_S3_CODES or (isinstance(status, int) and status >= 500):
                return True
    return False


@contextlib.contextmanager
def only_transient_retries() -> typing.Iterator[None]:
    try:
        yield
    except dg.Failure:
        raise
    except Exception as e:
        if is_transient(e):
            raise
        raise dg.Failure(
            description=f"{type(e).__name__}: {e} (a data error: not retried)",
            metadata={"error_type": type(e).__name__},
            allow_retries=False,
        ) from e
