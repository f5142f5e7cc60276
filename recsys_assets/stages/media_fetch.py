"""Fetching a video's bytes from its catalog ``download_url``, safely.

A ``download_url`` comes from data, so it is treated as hostile: :class:`FetchPolicy` says which
schemes, hosts (for ``http(s)://``, and buckets for ``s3://``) and local roots (for ``file://`` and
plain paths) may be reached, how long a connection and a read may take, how many times a transient
failure is retried and how many bytes a video may have. :func:`fetch` returns the bytes or raises
:class:`FetchError` whose ``reason`` is one short code, so the caller lists the item with it:

==================  =====================================================================
``bad_url``         empty, unparsable, or a path that escapes its root
``disallowed_scheme``  a scheme outside ``allowed_schemes`` (``ftp://``, ``gopher://``, ...)
``disallowed_host``    an ``http(s)`` host / ``s3`` bucket / local root outside the allowlist
                    (also checked on every redirect)
``not_found``       404, ``NoSuchKey``, missing file
``http_error``      any other non-2xx status after retries
``too_large``       more than ``max_bytes`` (declared or actually streamed)
``timeout``         connect or read timeout after retries
``io_error``        connection refused/reset, S3 or file errors after retries
==================  =====================================================================

Pure Python (requests, boto3): no Dagster. The policy is a plain picklable dataclass so worker
processes can fetch with it.
"""

from __future__ import annotations

import dataclasses
import os
import time
import typing
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse


class FetchError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class FetchPolicy:
    allowed_schemes: tuple[str, ...] = ("file", "s3", "https")
    allowed_hosts: tuple[str, ...] = ()
    """``http(s)`` host names (exact, or ``.example.com`` for a domain and its subdomains) and ``s3``
    bucket names that may be reached. Empty = none: remote media must be allowed explicitly."""
    allowed_roots: tuple[str, ...] = ()
    """Local folders that ``file://`` URLs and plain paths must lie under. Empty = no local files."""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    retries: int = 2
    """Extra attempts after a transient failure (timeout, connection error, 5xx, 429)."""
    backoff_s: float = 0.5
    max_bytes: int = 256 * 1024 * 1024
    max_redirects: int = 3
    s3_options: tuple[tuple[str, typing.Optional[str]], ...] = ()
    """``endpoint_url``, credentials and region for boto3, as pairs (keeps the dataclass hashable)."""


def _host_allowed(host: str, allowed: typing.Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for a in allowed:
        a = a.lower()
        if a.startswith(".") and (host == a[1:] or host.endswith(a)):
            return True
        if host == a:
            return True
    return False


def _check_size(n: typing.Optional[int], policy: FetchPolicy, url: str) -> None:
    if n is not None and n > policy.max_bytes:
        raise FetchError("too_large", f"{url} has {n} bytes > max_bytes {policy.max_bytes}")


def _retrying(policy: FetchPolicy, url: str, attempt: typing.Callable[[], bytes]) -> bytes:
    last: typing.Optional[FetchError] = None
    for i in range(policy.retries + 1):
        try:
            return attempt()
        except _Transient as e:
            last = e.error
            if i < policy.retries:
                time.sleep(policy.backoff_s * (2**i))
    assert last is not None
    raise last


class _Transient(Exception):
    def __init__(self, error: FetchError):
        self.error = error


def _fetch_file(path_str: str, policy: FetchPolicy, url: str) -> bytes:
    if not policy.allowed_roots:
        raise FetchError("disallowed_host", f"{url}: local files are not allowed (no allowed_roots)")
    try:
        path = Path(path_str).resolve()
    except (OSError, RuntimeError) as e:
        raise FetchError("bad_url", f"{url}: {e}") from None
    roots = [Path(r).resolve() for r in policy.allowed_roots]
    if not any(path == r or r in path.parents for r in roots):
        raise FetchError("disallowed_host", f"{url} is outside the allowed roots {[str(r) for r in roots]}")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FetchError("not_found", url) from None
    except OSError as e:
        raise FetchError("io_error", f"{url}: {e}") from None
    if not path.is_file():
        raise FetchError("not_found", f"{url} is not a file")
    _check_size(size, policy, url)
    try:
        with open(path, "rb") as f:
            data = f.read(policy.max_bytes + 1)
    except OSError as e:
        raise FetchError("io_error", f"{url}: {e}") from None
    _check_size(len(data), policy, url)
    return data


_S3_CLIENTS: dict[tuple, typing.Any] = {}


def _s3_client(policy: FetchPolicy) -> typing.Any:
    key = (policy.s3_options, policy.connect_timeout_s, policy.read_timeout_s)
    if key not in _S3_CLIENTS:
        import boto3
        from botocore.config import Config

        opts = {k: v for k, v in policy.s3_options if v}
        _S3_CLIENTS[key] = boto3.client(
            "s3",
            config=Config(
                connect_timeout=policy.connect_timeout_s,
                read_timeout=policy.read_timeout_s,
                retries={"max_attempts": 1, "mode": "standard"},
            ),
            **opts,
        )
    return _S3_CLIENTS[key]


def _fetch_s3(bucket: str, key: str, policy: FetchPolicy, url: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

    if not _host_allowed(bucket, policy.allowed_hosts):
        raise FetchError("disallowed_host", f"{url}: bucket {bucket!r} is not in allowed_hosts")
    client = _s3_client(policy)

    def attempt() -> bytes:
        try:
            obj = client.get_object(Bucket=bucket, Key=key)
            _check_size(obj.get("ContentLength"), policy, url)
            data = obj["Body"].read(policy.max_bytes + 1)
            _check_size(len(data), policy, url)
            return data
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code"))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
                raise FetchError("not_found", url) from None
            err = FetchError("io_error", f"{url}: {code}")
            if status >= 500 or status == 429:
                raise _Transient(err) from None
            raise err from None
        except (ConnectTimeoutError, ReadTimeoutError) as e:
            raise _Transient(FetchError("timeout", f"{url}: {e}")) from None
        except BotoCoreError as e:
            raise _Transient(FetchError("io_error", f"{url}: {e}")) from None

    return _retrying(policy, url, attempt)


def _fetch_http(url: str, policy: FetchPolicy) -> bytes:
    import requests

    def attempt() -> bytes:
        current = url
        for _ in range(policy.max_redirects + 1):
            parsed = urlparse(current)
            if parsed.scheme not in policy.allowed_schemes or parsed.scheme not in ("http", "https"):
                raise FetchError("disallowed_scheme", f"{url} redirects to {current}")
            if not parsed.hostname or not _host_allowed(parsed.hostname, policy.allowed_hosts):
                raise FetchError("disallowed_host", f"{current}: host {parsed.hostname!r} is not in allowed_hosts")
            try:
                with requests.get(
                    current,
                    stream=True,
                    allow_redirects=False,
                    timeout=(policy.connect_timeout_s, policy.read_timeout_s),
                ) as r:
                    if r.status_code in (301, 302, 303, 307, 308) and "location" in r.headers:
                        current = urljoin(current, r.headers["location"])
                        continue
                    if r.status_code == 404 or r.status_code == 410:
                        raise FetchError("not_found", f"{current}: HTTP {r.status_code}")
                    if r.status_code >= 500 or r.status_code == 429:
                        raise _Transient(FetchError("http_error", f"{current}: HTTP {r.status_code}"))
                    if r.status_code != 200:
                        raise FetchError("http_error", f"{current}: HTTP {r.status_code}")
                    declared = r.headers.get("content-length")
                    _check_size(int(declared) if declared and declared.isdigit() else None, policy, current)
                    chunks, total = [], 0
                    for chunk in r.iter_content(chunk_size=1 << 16):
                        total += len(chunk)
                        _check_size(total, policy, current)
                        chunks.append(chunk)
                    return b"".join(chunks)
            except (requests.ConnectTimeout, requests.ReadTimeout) as e:
                raise _Transient(FetchError("timeout", f"{current}: {type(e).__name__}")) from None
            except requests.exceptions.ChunkedEncodingError as e:
                # raised by iter_content for a read timeout or a dropped connection mid-body
                reason = "timeout" if "timed out" in str(e).lower() else "io_error"
                raise _Transient(FetchError(reason, f"{current}: {e}")) from None
            except requests.ConnectionError as e:
                reason = "timeout" if "timed out" in str(e).lower() else "io_error"
                raise _Transient(FetchError(reason, f"{current}: {type(e).__name__}")) from None
            except requests.RequestException as e:
                raise FetchError("io_error", f"{current}: {e}") from None
        raise FetchError("http_error", f"{url}: more than {policy.max_redirects} redirects")

    return _retrying(policy, url, attempt)


def fetch(url: typing.Optional[str], policy: FetchPolicy) -> bytes:
    """The bytes at ``url`` under ``policy``; raises :class:`FetchError` with a reason code."""
    if url is None or not isinstance(url, str) or not url.strip():
        raise FetchError("bad_url", f"empty download_url {url!r}")
    url = url.strip()
    if any(ord(ch) < 32 for ch in url):
        raise FetchError("bad_url", f"control characters in {url!r}")
    try:
        parsed = urlparse(url)
    except ValueError as e:
        raise FetchError("bad_url", f"{url!r}: {e}") from None
    scheme = parsed.scheme.lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        scheme, local = "file", url
    elif scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise FetchError("disallowed_host", f"{url}: file URLs with a host are not allowed")
        local = unquote(parsed.path)
    else:
        local = ""
    if scheme not in policy.allowed_schemes:
        raise FetchError("disallowed_scheme", f"{url}: scheme {scheme!r} not in {list(policy.allowed_schemes)}")
    if scheme == "file":
        return _fetch_file(local, policy, url)
    if scheme == "s3":
        if not parsed.netloc or not parsed.path.strip("/"):
            raise FetchError("bad_url", f"{url}: s3 URLs need a bucket and a key")
        return _fetch_s3(parsed.netloc, unquote(parsed.path.lstrip("/")), policy, url)
    if scheme in ("http", "https"):
        return _fetch_http(url, policy)
    raise FetchError("disallowed_scheme", f"{url}: no fetcher for scheme {scheme!r}")
