"""Hostile media URLs against real loopback servers: an allowed server on 127.0.0.1 and a canary on
127.0.0.2 that must never see a connection. A table of SSRF payloads, a property test over generated
URLs, redirects, DNS answers that point inside, and the overall fetch deadline against a trickling server.
Every server here listens on loopback only."""

import http.server
import threading
import time

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recsys_assets.stages.media_fetch import FetchError, FetchPolicy, fetch, parse_http_url

from .conftest import free_port

BODY = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4
REFUSALS = {"bad_url", "disallowed_host", "disallowed_scheme"}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler):
        self.connections = 0
        self.paths: list[str] = []
        super().__init__(address, handler)

    def verify_request(self, request, client_address):  # every accepted TCP connection
        self.connections += 1
        return True


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.server.paths.append(self.path)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/trickle.mp4":
            # one byte every 0.1 s: each read is well inside any read timeout, the whole never ends in time
            self.send_response(200)
            self.send_header("Content-Length", "400")
            self.end_headers()
            try:
                for i in range(400):
                    self.wfile.write(BODY[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)


def _serve(host: str):
    server = _Server((host, free_port()), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def servers():
    allowed, canary = _serve("127.0.0.1"), _serve("127.0.0.2")
    yield allowed, canary
    allowed.shutdown()
    canary.shutdown()


def policy(**kw) -> FetchPolicy:
    base = dict(
        allowed_schemes=("http", "https"),
        allowed_hosts=("127.0.0.1",),
        retries=0,
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
        deadline_s=3.0,
    )
    return FetchPolicy(**{**base, **kw})


def refusal(url: str, pol: FetchPolicy) -> str:
    with pytest.raises(FetchError) as e:
        fetch(url, pol)
    return e.value.reason


def payloads(ap: int, cp: int) -> list[str]:
    """``ap``: the allowed server's port on 127.0.0.1; ``cp``: the canary's on 127.0.0.2."""
    ok = f"127.0.0.1:{ap}"
    return [
        f"http://127.0.0.2:{cp}\\@{ok}/x.mp4",  # the reported bypass: urlparse reads the host after '@'
        f"http://{ok}\\@127.0.0.2:{cp}/x.mp4",
        f"http://127.0.0.2:{cp}\\{ok}/x.mp4",
        f"http://127.0.0.2:{cp}#@{ok}/x.mp4",
        f"http://127.0.0.2:{cp}?@{ok}/x.mp4",
        f"http://{ok}@127.0.0.2:{cp}/x.mp4",
        f"http://user:pass@127.0.0.2:{cp}/x.mp4",
        f"http://user@{ok}/x.mp4",  # userinfo is refused even towards an allowed host
        f"http://2130706434:{cp}/x.mp4",  # 127.0.0.2 as a decimal
        f"http://0x7f000002:{cp}/x.mp4",
        f"http://0x7f.0.0.2:{cp}/x.mp4",
        f"http://0177.0.0.2:{cp}/x.mp4",
        f"http://127.2:{cp}/x.mp4",
        f"http://127.0.0.02:{cp}/x.mp4",
        f"http://[::ffff:127.0.0.2]:{cp}/x.mp4",
        f"http://[::ffff:7f00:2]:{cp}/x.mp4",
        f"http://[::127.0.0.2]:{cp}/x.mp4",
        f"http://127.0.0.2.:{cp}/x.mp4",
        f"http://%31%32%37.0.0.2:{cp}/x.mp4",
        f"http://127.0.0.1%2e:{ap}/x.mp4",
        f"http://127.0.0.2%00.127.0.0.1:{ap}/x.mp4",
        f"http://127.0.0.1\t:{ap}/x.mp4",
        f"http://127.0.0.1 .127.0.0.2:{cp}/x.mp4",
        f"http://127.0.0.1:{ap}:{cp}/x.mp4",
        f"http://localhost:{cp}/x.mp4",
        f"http://LOCALHOST:{ap}/x.mp4",
        f"http://{ok}/redirect?to=http://127.0.0.2:{cp}/x.mp4",
        f"http://{ok}/redirect?to=http://127.0.0.2:{cp}\\@{ok}/x.mp4",
        f"http://{ok}/redirect?to=http://169.254.169.254/latest/meta-data/",
        f"http://{ok}/redirect?to=http://[fd00:ec2::254]/latest/",
        f"http://{ok}/redirect?to=gopher://127.0.0.2:{cp}/",
        f"http://{ok}/redirect?to=//127.0.0.2:{cp}/x.mp4",  # scheme-relative
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fe80::1%25lo]/x.mp4",
        f"ftp://127.0.0.2:{cp}/x.mp4",
        f"gopher://127.0.0.2:{cp}/_GET",
        "file://127.0.0.2/etc/passwd",
        f"http:/\\127.0.0.2:{cp}/x.mp4",
        f"http:\\\\127.0.0.2:{cp}/x.mp4",
        f"http://127。0。0。2:{cp}/x.mp4",  # ideographic full stops
    ]


def test_the_reported_backslash_bypass_reaches_another_host_through_requests(servers):
    """The original failure: the allowlist read the host with urlparse while requests connected elsewhere."""
    from urllib.parse import urlparse

    allowed, canary = servers
    url = f"http://127.0.0.2:{canary.server_port}\\@127.0.0.1:{allowed.server_port}/x.mp4"
    assert urlparse(url).hostname == "127.0.0.1"  # what the old allowlist checked
    before = canary.connections
    requests.get(url, timeout=2)  # what the old fetcher then did
    assert canary.connections == before + 1  # ... and the canary was reached
    # now: refused before any connection
    assert refusal(url, policy()) == "bad_url"
    assert canary.connections == before + 1


def test_a_table_of_ssrf_payloads_is_refused_and_never_connects(servers):
    allowed, canary = servers
    before = canary.connections
    pol = policy(allowed_hosts=("127.0.0.1", "cdn.example.com"), allowed_schemes=("http", "https", "file"))
    got = {url: refusal(url, pol) for url in payloads(allowed.server_port, canary.server_port)}
    assert {u: r for u, r in got.items() if r not in REFUSALS} == {}
    assert canary.connections == before
    # and the https form of the metadata trick from the issue
    assert refusal("https://169.254.169.254\\@cdn.example.com/", pol) == "bad_url"


def test_an_allowed_name_that_resolves_inside_is_refused_unless_its_network_is_allowed(servers):
    allowed, _ = servers
    url = f"http://localhost:{allowed.server_port}/ok.mp4"
    assert refusal(url, policy(allowed_hosts=("localhost",))) == "disallowed_host"
    assert fetch(url, policy(allowed_hosts=("localhost",), allowed_networks=("127.0.0.0/8",))) == BODY
    # metadata endpoints stay refused even inside an allowed network
    meta = "http://169.254.169.254/latest/meta-data/"
    assert refusal(meta, policy(allowed_hosts=("169.254.169.254",), allowed_networks=("169.254.0.0/16",))) == (
        "disallowed_host"
    )


def test_allowed_urls_still_work_and_redirects_inside_the_allowlist_are_followed(servers):
    allowed, _ = servers
    base = f"http://127.0.0.1:{allowed.server_port}"
    assert fetch(f"{base}/ok.mp4", policy()) == BODY
    assert fetch(f"HTTP://127.0.0.1:{allowed.server_port}/ok.mp4?x=1#frag", policy()) == BODY
    assert fetch(f"{base}/redirect?to=/ok.mp4", policy()) == BODY
    assert fetch(f"{base}/redirect?to={base}/ok.mp4", policy()) == BODY


def test_parse_is_what_is_connected_to():
    t = parse_http_url("http://CDN.example.com.:8080/a/b.mp4?sig=1#x")
    assert (t.scheme, t.host, t.port, t.request_target, t.host_header) == (
        "http",
        "cdn.example.com",
        8080,
        "/a/b.mp4?sig=1",
        "cdn.example.com:8080",
    )
    assert parse_http_url("https://[2001:db8::1]/v.mp4").host_header == "[2001:db8::1]"


HOSTS = [
    "127.0.0.1",
    "127.0.0.2",
    "2130706434",
    "0x7f000002",
    "0177.0.0.2",
    "127.2",
    "[::ffff:127.0.0.2]",
    "localhost",
    "127.0.0.1.",
    "[::1]",
    "169.254.169.254",
]
JUNK = ["", "\\", "\\@", "@", "#@", "?@", "%2e", "%00", ":", "/", ".", "\t", " ", "%40", "。"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_a_url_is_refused_or_connects_only_to_an_allowed_host(servers, data):
    allowed, canary = servers
    ports = [allowed.server_port, canary.server_port]

    def mostly(default: str, others: list[str]) -> str:  # the plain form 4 times in 5
        return data.draw(st.sampled_from([default] * 4 * len(others) + others))

    parts = [
        mostly("http://", ["HTTP://", "https://", "http:/", "http:\\\\", "//"]),
        mostly("", ["user@", "127.0.0.1@", "a:b@", "127.0.0.1\\@"]),
        mostly("127.0.0.1", HOSTS),
        mostly("", JUNK),
        mostly(f":{allowed.server_port}", ["", f":{canary.server_port}"]),
        mostly("", JUNK),
        mostly("", ["@127.0.0.1", *[f"@127.0.0.1:{p}" for p in ports], "@127.0.0.2"]),
        data.draw(st.sampled_from(["/ok.mp4", "", "/x?y=@127.0.0.2", "#/ok.mp4"])),
        data.draw(st.sampled_from(["", "", "", ""]) | st.text(alphabet="@:/\\.%#?[]0127x", max_size=6)),
    ]
    url = "".join(parts)
    before_canary, before_allowed = canary.connections, allowed.connections
    try:
        body = fetch(url, policy(connect_timeout_s=0.3, read_timeout_s=0.5, deadline_s=1.0))
    except FetchError as e:
        body, reason = None, e.reason
    event("fetched" if body is not None else reason)  # pytest --hypothesis-show-statistics shows the mix
    assert canary.connections == before_canary, url
    if body is not None:
        # fetched: then it went to the allowed server, as the parse said (fetch strips surrounding whitespace,
        # as catalog exports often carry it, and then parses what is left)
        assert allowed.connections > before_allowed and parse_http_url(url.strip()).host == "127.0.0.1", url
    else:
        # refused or failed: if anything connected, it was the allowed server
        assert reason in REFUSALS | {"not_found", "http_error", "io_error", "timeout"}, (url, reason)


def test_a_trickling_server_is_cut_off_at_the_deadline(servers):
    allowed, _ = servers
    url = f"http://127.0.0.1:{allowed.server_port}/trickle.mp4"
    # the original failure: per-read timeouts alone accept a body that trickles for ever (here 1.5 s of it)
    t = time.monotonic()
    with requests.get(url, stream=True, timeout=(1.0, 0.5)) as r:
        got = 0
        for chunk in r.iter_content(1):
            got += len(chunk)
            if time.monotonic() - t > 1.5:
                break
    assert got > 5 and time.monotonic() - t > 1.5  # still reading, no timeout fired
    # now: the fetch's overall deadline cuts it off
    t = time.monotonic()
    assert refusal(url, policy(read_timeout_s=0.5, deadline_s=1.0, retries=2)) == "timeout"
    assert time.monotonic() - t < 1.6


def test_a_worker_item_has_a_wall_clock_limit_even_when_its_fetch_does_not(servers):
    from recsys_assets.stages.media_decode import DecodeParams, MediaJob, fetch_and_decode

    allowed, _ = servers
    url = f"http://127.0.0.1:{allowed.server_port}/trickle.mp4"
    slow_policy = policy(read_timeout_s=5.0, deadline_s=60.0)  # a generous fetch policy ...
    t = time.monotonic()
    out = fetch_and_decode(MediaJob(1, url, slow_policy, DecodeParams(), max_seconds=0.8))  # ... a strict item
    assert (out.error, out.item_id) == ("timeout", 1) and "0.8 s" in out.detail
    assert time.monotonic() - t < 1.5
