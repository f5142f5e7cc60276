"""Fetching a video's bytes from its catalog ``download_url``, safely.

A ``download_url`` comes from data, so it is treated as hostile: :class:`FetchPolicy` says which
schemes, hosts (for ``http(s)://``, and buckets for ``s3://``) and local roots (for ``file://`` and
plain paths) may be reached, how long a connection and a read may take, how many times a transient
failure is retried and how many bytes a video may have. :func:`fetch` returns the bytes or raises
:class:`FetchError` whose ``reason`` is one short code, so the caller lists the item with it:

==================  =====================================================================
``bad_url``         empty, unparsable, ambiguous (backslash, userinfo, percent-encoded or odd-form host,
                    parsers that disagree on the host), or a path that escapes its root
``disallowed_scheme``  a scheme outside ``allowed_schemes`` (``ftp://``, ``gopher://``, ...)
``disallowed_host``    an ``http(s)`` host / ``s3`` bucket / local root outside the allowlist, or a
                    host that resolves to a loopback, private, link-local, metadata or otherwise
                    non-public address that is not explicitly allowed (checked on every redirect)
``not_found``       404, ``NoSuchKey``, missing file
``http_error``      any other non-2xx status after retries
``too_large``       more than ``max_bytes`` (declared or actually streamed)
``timeout``         connect or read timeout after retries, or the fetch's overall ``deadline_s`` passed
``io_error``        connection refused/reset, S3 or file errors after retries
==================  =====================================================================

``http(s)``: one parser decides. :func:`parse_http_url` accepts only an unambiguous URL (no backslash,
no userinfo, no control characters, no percent-encoding in the authority, IP literals only in canonical
dotted-quad or plain bracketed IPv6 form) and checks that ``urllib.parse`` and urllib3 (what requests
uses) read the same host. The host is then resolved once; every address must be public, or explicitly
allowed (an IP literal in ``allowed_hosts``, or inside ``allowed_networks``), and the connection is made
to that checked address (TLS still verifies the certificate against the host name), so what was checked
is what is connected to -- no second DNS answer, no second parser.

Pure Python (urllib3, boto3): no Dagster. The policy is a plain picklable dataclass so worker
processes can fetch with it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import time
import typing
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse, urlsplit

import urllib3


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
    allowed_networks: tuple[str, ...] = ()
    """CIDR ranges (``10.20.0.0/16``) whose addresses an allowed host may resolve to although they are not
    public (an internal CDN). Loopback, private, link-local and metadata addresses are refused otherwise."""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    """Longest wait for the next bytes of a response."""
    deadline_s: float = 120.0
    """Longest a whole fetch may take (connects, redirects, retries and the transfer together)."""
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


def _retrying(
    policy: FetchPolicy, url: str, attempt: typing.Callable[[], bytes], deadline: "_Deadline | None" = None
) -> bytes:
    last: typing.Optional[FetchError] = None
    for i in range(policy.retries + 1):
        try:
            return attempt()
        except _Transient as e:
            last = e.error
            if i < policy.retries:
                pause = policy.backoff_s * (2**i)
                if deadline is not None and deadline.end - time.monotonic() <= pause:
                    break  # no time left for another try
                time.sleep(pause)
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
    deadline = _Deadline(policy.deadline_s, url)

    def attempt() -> bytes:
        try:
            obj = client.get_object(Bucket=bucket, Key=key)
            _check_size(obj.get("ContentLength"), policy, url)
            chunks, total = [], 0
            for chunk in obj["Body"].iter_chunks(1 << 16):
                total += len(chunk)
                _check_size(total, policy, url)
                chunks.append(chunk)
                deadline.left()
            return b"".join(chunks)
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

    return _retrying(policy, url, attempt, deadline)


_CANONICAL_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<target>[^#]*)(?:#.*)?$")
_ALLOWED_URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
"""Cloud instance-metadata endpoints (AWS, ECS, AWS IPv6, Alibaba): never reachable, whatever is allowed."""


@dataclasses.dataclass(frozen=True)
class HttpTarget:
    """One ``http(s)`` URL as :func:`parse_http_url` read it: the only form the fetcher connects from."""

    scheme: str
    host: str
    """Lower-case DNS name, canonical dotted-quad IPv4, or IPv6 (no brackets)."""
    port: int
    request_target: str
    """Path and query, as sent in the request line."""

    @property
    def is_ip_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return True
        except ValueError:
            return False

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.request_target}"


def parse_http_url(url: str) -> HttpTarget:
    """Read an ``http(s)`` URL strictly; anything ambiguous raises ``FetchError("bad_url")``.

    Refused: characters outside RFC 3986 (backslash, space, control, non-ASCII), userinfo (``user@``),
    percent-encoding anywhere in the authority, an empty host, a host that looks numeric but is not a
    canonical dotted quad (decimal ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.1``, short ``127.1``),
    IPv4-mapped / compatible / 6to4 / Teredo IPv6, zone ids, ports outside 1..65535, and any URL whose
    host ``urllib.parse`` or urllib3 read differently."""
    if not isinstance(url, str) or not url:
        raise FetchError("bad_url", f"empty URL {url!r}")
    bad = sorted({ch for ch in url if ch not in _ALLOWED_URL_CHARS})
    if bad:
        raise FetchError("bad_url", f"{url!r}: characters not allowed in a URL: {bad!r}")
    m = _URL.match(url)
    if not m:
        raise FetchError("bad_url", f"{url!r} is not scheme://authority/path")
    scheme = m["scheme"].lower()
    if scheme not in ("http", "https"):
        raise FetchError("disallowed_scheme", f"{url}: scheme {scheme!r} is not http(s)")
    authority, target = m["authority"], m["target"] or "/"
    if "@" in authority:
        raise FetchError("bad_url", f"{url}: userinfo (user@host) is not allowed")
    if "%" in authority:
        raise FetchError("bad_url", f"{url}: percent-encoding in the host is not allowed")
    if not target.startswith(("/", "?")):
        raise FetchError("bad_url", f"{url}: the path must start with '/'")
    if target.startswith("?"):
        target = "/" + target
    ipv6 = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d*))?", authority)
    if ipv6:
        raw_host, port_text = ipv6[1], ipv6[2]
        try:
            addr = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise FetchError("bad_url", f"{url}: {raw_host!r} is not an IPv6 address") from None
        if addr.ipv4_mapped or addr.sixtofour or addr.teredo or (addr.packed[:12] == bytes(12) and int(addr) > 1):
            raise FetchError("bad_url", f"{url}: IPv6 that embeds an IPv4 address ({addr}) is not allowed")
        host = addr.compressed
    else:
        raw_host, _, port_text = authority.partition(":")
        if ":" in port_text:
            raise FetchError("bad_url", f"{url}: more than one ':' in the authority")
        host = raw_host.lower().rstrip(".")
        if not host:
            raise FetchError("bad_url", f"{url}: no host")
        labels = host.split(".")
        numeric_looking = re.fullmatch(r"[0-9a-fx.]+", host) is not None and (
            labels[-1].isdigit() or labels[-1].startswith("0x") or host.isdigit()
        )
        if numeric_looking or labels[-1].isdigit():
            if not _CANONICAL_IPV4.match(host):
                raise FetchError("bad_url", f"{url}: {raw_host!r} is an IP literal in an odd form (use a dotted quad)")
        elif len(host) > 253 or not all(_LABEL.match(label) for label in labels):
            raise FetchError("bad_url", f"{url}: {raw_host!r} is not a valid host name")
    default_port = 443 if scheme == "https" else 80
    if port_text == "" or port_text is None:
        port = default_port
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise FetchError("bad_url", f"{url}: bad port {port_text!r}")
    # the other parsers must read the same host (urllib.parse, and urllib3's, which requests uses)
    try:
        std = urlsplit(url).hostname
        u3 = urllib3.util.parse_url(url).host
    except ValueError as e:
        raise FetchError("bad_url", f"{url!r}: {e}") from None
    u3 = (u3 or "").strip("[]").lower().rstrip(".")
    std = (std or "").lower().rstrip(".")
    if ipv6:
        std, u3 = (ipaddress.IPv6Address(h).compressed if h else h for h in (std, u3))
    if std != host or u3 != host:
        raise FetchError("bad_url", f"{url}: parsers disagree on the host ({host!r}, urllib {std!r}, urllib3 {u3!r})")
    return HttpTarget(scheme, host, port, target)


def address_allowed(address: str, target: HttpTarget, policy: FetchPolicy) -> bool:
    """A resolved address may be connected to when it is public, or inside ``allowed_networks``, or the very
    IP literal the allowlist names. Metadata endpoints never."""
    ip = ipaddress.ip_address(address)
    if ip in METADATA_ADDRESSES:
        return False
    if target.is_ip_literal and _host_allowed(target.host, policy.allowed_hosts):
        return True
    if any(ip in ipaddress.ip_network(n, strict=False) for n in policy.allowed_networks):
        return True
    return ip.is_global and not ip.is_multicast


def resolve(target: HttpTarget, policy: FetchPolicy) -> str:
    """The one address the fetcher will connect to for ``target``; every address the name resolves to must
    be allowed (an answer that mixes a public and a private address is refused)."""
    if not _host_allowed(target.host, policy.allowed_hosts):
        raise FetchError("disallowed_host", f"{target.url}: host {target.host!r} is not in allowed_hosts")
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchError("io_error", f"{target.url}: cannot resolve {target.host!r}: {e}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    refused = [a for a in addresses if not address_allowed(a, target, policy)]
    if refused or not addresses:
        raise FetchError(
            "disallowed_host", f"{target.url}: {target.host!r} resolves to non-public address(es) {refused} not allowed"
        )
    return addresses[0]


class _Deadline:
    def __init__(self, seconds: float, url: str):
        self.end = time.monotonic() + seconds
        self.seconds, self.url = seconds, url

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise FetchError("timeout", f"{self.url}: over the fetch deadline of {self.seconds:g} s")
        return remaining


def _get(target: HttpTarget, address: str, policy: FetchPolicy, deadline: _Deadline) -> urllib3.BaseHTTPResponse:
    timeout = urllib3.Timeout(
        connect=min(policy.connect_timeout_s, deadline.left()), read=min(policy.read_timeout_s, deadline.left())
    )
    if target.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address,
            target.port,
            timeout=timeout,
            retries=False,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False)
    return pool.urlopen(
        "GET",
        target.request_target,
        headers={"Host": target.host_header, "User-Agent": "recsys-assets-media-fetch", "Accept-Encoding": "identity"},
        redirect=False,
        preload_content=False,
        assert_same_host=False,
    )


def _read_body(resp: urllib3.BaseHTTPResponse, policy: FetchPolicy, deadline: _Deadline, url: str) -> bytes:
    declared = resp.headers.get("content-length")
    _check_size(int(declared) if declared and declared.isdigit() else None, policy, url)
    chunks, total = [], 0
    while True:
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:  # no read may outlive the deadline, however slowly the bytes trickle
            sock.settimeout(min(policy.read_timeout_s, deadline.left()))
        chunk = resp.read1(1 << 16)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        _check_size(total, policy, url)
        chunks.append(chunk)
        deadline.left()


def _fetch_http(url: str, policy: FetchPolicy) -> bytes:
    first = parse_http_url(url)
    deadline = _Deadline(policy.deadline_s, url)

    def attempt() -> bytes:
        target = first
        for _ in range(policy.max_redirects + 1):
            if target.scheme not in policy.allowed_schemes:
                raise FetchError("disallowed_scheme", f"{url} leads to {target.url}: scheme not allowed")
            address = resolve(target, policy)
            try:
                resp = _get(target, address, policy, deadline)
                try:
                    status = resp.status
                    if status in (301, 302, 303, 307, 308) and resp.headers.get("location"):
                        target = parse_http_url(urljoin(target.url, resp.headers["location"]))
                        continue
                    if status in (404, 410):
                        raise FetchError("not_found", f"{target.url}: HTTP {status}")
                    if status >= 500 or status == 429:
                        raise _Transient(FetchError("http_error", f"{target.url}: HTTP {status}"))
                    if status != 200:
                        raise FetchError("http_error", f"{target.url}: HTTP {status}")
                    return _read_body(resp, policy, deadline, target.url)
                finally:
                    resp.release_conn()
                    resp.close()
            except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError, socket.timeout) as e:
                deadline.left()
                raise _Transient(FetchError("timeout", f"{target.url}: {type(e).__name__}")) from None
            except urllib3.exceptions.ProtocolError as e:
                reason = "timeout" if "timed out" in str(e).lower() else "io_error"
                raise _Transient(FetchError(reason, f"{target.url}: {e}")) from None
            except urllib3.exceptions.SSLError as e:
                raise FetchError("io_error", f"{target.url}: TLS: {e}") from None
            except (urllib3.exceptions.HTTPError, OSError) as e:
                reason = "timeout" if "timed out" in str(e).lower() else "io_error"
                raise _Transient(FetchError(reason, f"{target.url}: {type(e).__name__}: {e}")) from None
        raise FetchError("http_error", f"{url}: more than {policy.max_redirects} redirects")

    return _retrying(policy, url, attempt, deadline)


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
