"""The media fetcher against a real HTTP server on loopback, a moto S3 server and local files, hostile URLs included."""

import http.server
import threading
import time

import pytest

from recsys_assets.stages.media_fetch import FetchError, FetchPolicy, fetch

from .conftest import free_port

BODY = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


class Handler(http.server.BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path == "/ok.mp4":
            self._send(200, BODY)
        elif self.path == "/slow.mp4":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:10])
            self.wfile.flush()
            time.sleep(2.0)
            try:
                self.wfile.write(BODY[10:])
            except OSError:
                pass
        elif self.path == "/big-declared.mp4":
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
        elif self.path == "/big-chunked.mp4":
            # no Content-Length: the size cap must hold while streaming
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(40):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        elif self.path == "/flaky.mp4":
            if Handler.hits[self.path] < 2:
                self._send(503, b"busy")
            else:
                self._send(200, BODY)
        elif self.path == "/always-500.mp4":
            self._send(500, b"broken")
        elif self.path == "/forbidden.mp4":
            self._send(403, b"no")
        elif self.path == "/redirect-local.mp4":
            self.send_response(302)
            self.send_header("Location", "/ok.mp4")
            self.end_headers()
        elif self.path == "/redirect-evil.mp4":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        else:
            self._send(404, b"not here")

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def http_base():
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def policy(**kw):
    base = dict(
        allowed_schemes=("http", "https", "file", "s3"),
        allowed_hosts=("127.0.0.1",),
        retries=1,
        backoff_s=0.01,
        connect_timeout_s=1.0,
        read_timeout_s=0.5,
    )
    base.update(kw)
    return FetchPolicy(**base)


def reason(url, pol):
    with pytest.raises(FetchError) as e:
        fetch(url, pol)
    return e.value.reason


def test_http_ok_redirect_and_errors(http_base):
    assert fetch(f"{http_base}/ok.mp4", policy()) == BODY
    assert fetch(f"{http_base}/redirect-local.mp4", policy()) == BODY
    assert reason(f"{http_base}/missing.mp4", policy()) == "not_found"
    assert reason(f"{http_base}/forbidden.mp4", policy()) == "http_error"


def test_http_retries_transient_failures_boundedly(http_base):
    Handler.hits.clear()
    assert fetch(f"{http_base}/flaky.mp4", policy(retries=2)) == BODY
    assert Handler.hits["/flaky.mp4"] == 2
    assert reason(f"{http_base}/always-500.mp4", policy(retries=2)) == "http_error"
    assert Handler.hits["/always-500.mp4"] == 3  # one try + two retries, then it gives up


def test_http_read_timeout(http_base):
    t = time.time()
    assert reason(f"{http_base}/slow.mp4", policy(retries=0, read_timeout_s=0.3)) == "timeout"
    assert time.time() - t < 1.9


def test_http_connect_refused_is_an_io_error():
    port = free_port()  # nothing listens there
    assert reason(f"http://127.0.0.1:{port}/x.mp4", policy(retries=0)) in ("io_error", "timeout")


def test_size_cap_declared_and_streamed(http_base):
    assert reason(f"{http_base}/big-declared.mp4", policy(max_bytes=1_000_000)) == "too_large"
    assert reason(f"{http_base}/big-chunked.mp4", policy(max_bytes=1_000_000)) == "too_large"
    assert reason(f"{http_base}/ok.mp4", policy(max_bytes=100)) == "too_large"


def test_hostile_urls_are_refused(http_base, tmp_path):
    pol = policy(allowed_roots=(str(tmp_path),))
    assert reason("ftp://127.0.0.1/x.mp4", pol) == "disallowed_scheme"
    assert reason("gopher://127.0.0.1:70/x", pol) == "disallowed_scheme"
    assert reason("http://example.com/x.mp4", pol) == "disallowed_host"
    assert reason("http://127.0.0.1.evil.com/x.mp4", pol) == "disallowed_host"
    assert reason(f"{http_base}/redirect-evil.mp4", pol) == "disallowed_host"  # a redirect is checked too
    assert reason("file:///etc/passwd", pol) == "disallowed_host"
    assert reason(f"{tmp_path}/../../etc/passwd", pol) == "disallowed_host"
    assert reason("file://otherhost/etc/passwd", pol) == "disallowed_host"
    assert reason("", pol) == "bad_url"
    assert reason(None, pol) == "bad_url"
    assert reason("http://127.0.0.1/a\nb", pol) == "bad_url"
    assert reason(f"{http_base}/ok.mp4", policy(allowed_schemes=("https",))) == "disallowed_scheme"
    # nothing is reachable by default
    assert reason(f"{http_base}/ok.mp4", FetchPolicy(allowed_schemes=("http",))) == "disallowed_host"
    assert reason(str(tmp_path / "a.mp4"), FetchPolicy()) == "disallowed_host"


def test_domain_allowlist_with_leading_dot():
    from recsys_assets.stages.media_fetch import _host_allowed

    assert _host_allowed("cdn.example.com", [".example.com"])
    assert _host_allowed("example.com", [".example.com"])
    assert not _host_allowed("badexample.com", [".example.com"])
    assert not _host_allowed("example.com.evil.org", [".example.com"])


def test_local_files(tmp_path):
    f = tmp_path / "v.mp4"
    f.write_bytes(BODY)
    pol = policy(allowed_roots=(str(tmp_path),))
    assert fetch(str(f), pol) == BODY
    assert fetch(f.as_uri(), pol) == BODY
    assert reason(str(tmp_path / "missing.mp4"), pol) == "not_found"
    assert reason(str(tmp_path), pol) == "not_found"  # a folder is not a video
    assert reason(str(f), policy(allowed_roots=(str(tmp_path),), max_bytes=10)) == "too_large"
    link = tmp_path / "sub"
    link.mkdir()
    (link / "escape.mp4").symlink_to("/etc/hostname")
    assert reason(str(link / "escape.mp4"), pol) == "disallowed_host"  # symlinks are resolved first


def test_s3_through_moto(s3_env):
    endpoint, bucket, client = s3_env
    client.put_object(Bucket=bucket, Key="media/1.mp4", Body=BODY)
    opts = (
        ("aws_access_key_id", "testing"),
        ("aws_secret_access_key", "testing"),
        ("endpoint_url", endpoint),
        ("region_name", "us-east-1"),
    )
    pol = FetchPolicy(allowed_schemes=("s3",), allowed_hosts=(bucket,), s3_options=opts, retries=0)
    assert fetch(f"s3://{bucket}/media/1.mp4", pol) == BODY
    assert reason(f"s3://{bucket}/media/2.mp4", pol) == "not_found"
    assert reason("s3://other-bucket/media/1.mp4", pol) == "disallowed_host"
    assert reason(f"s3://{bucket}/", pol) == "bad_url"
    assert (
        reason(
            f"s3://{bucket}/media/1.mp4",
            FetchPolicy(allowed_schemes=("s3",), allowed_hosts=(bucket,), s3_options=opts, max_bytes=100),
        )
        == "too_large"
    )
