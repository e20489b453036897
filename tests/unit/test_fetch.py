"""fetch_config against real loopback servers, in process: caps, deadline, redirects, pin, TLS."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import threading
import time

import pytest
from helpers.wait import wait_until

from nbinit.errors import NbinitError
from nbinit.fetch import config_source, fetch_config
from nbinit.log import Log

GOOD = b"version: 1\ndeadline: 15\n"
TOKEN = "s3cr3t-token-value"


def fetch(url, log=None, **kwargs):
    options = {"token": None, "sha256": None, "timeout": 3.0, "max_bytes": 1 << 20, "retries": 0}
    options.update(kwargs)
    return fetch_config(url, log=log or Log(stream=io.StringIO()), **options)


def test_fetches_body_with_bearer_token_and_logs_one_line(http_server):
    server = http_server()
    server.route(body=GOOD)
    stream = io.StringIO()
    body, shown = fetch(server.url(), log=Log(stream=stream), token=TOKEN)
    assert (body, shown) == (GOOD, server.url())
    assert server.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("INFO[")
    assert f"fetched {server.url()}: {len(GOOD)} bytes in" in lines[0]


@pytest.mark.parametrize(
    "url, shown",
    [
        ("file:///etc/nbinit/admin.yaml", "/etc/nbinit/admin.yaml"),
        ("FILE:///etc/my%20admin.yaml", "/etc/my admin.yaml"),
        (
            "https://bob:pw@h.example:8443/c.yaml?token=abc&x=1#f",
            "https://h.example:8443/c.yaml?x=1",
        ),
        ("/etc/nbinit/admin.yaml", "/etc/nbinit/admin.yaml"),
    ],
    ids=["file-url", "file-url-quoted", "https-credentials", "path"],
)
def test_the_config_source_is_a_files_path_or_the_public_url(url, shown):
    assert config_source(url) == shown


def test_retries_are_logged_with_elapsed_and_limit_and_retry_after_is_capped(http_server):
    server = http_server()
    server.route(status=503, body=b"busy", headers={"Retry-After": "100000"})
    stream = io.StringIO()
    started = time.monotonic()
    with pytest.raises(NbinitError) as caught:
        fetch(server.url(), log=Log(stream=stream), retries=1, timeout=8.0)
    assert time.monotonic() - started < 7.0  # Retry-After capped at 5 s, not 100000
    assert str(caught.value) == (
        f"{server.url()}: HTTP 503 Service Unavailable (2 attempts): "
        "check that the config server is up and serves the file"
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("INFO[")
    assert re.search(
        r"HTTP 503 Service Unavailable; retry 1/1 in 5\.0s \(elapsed \d\.\ds of 8s\)$", lines[0]
    )


def test_no_retry_past_the_limit(http_server):
    server = http_server()
    server.route(status=500, headers={"Retry-After": "3"})
    with pytest.raises(NbinitError) as caught:
        fetch(server.url(), retries=3, timeout=2.0)
    assert "(1 attempt, no time left for a retry within 2s)" in str(caught.value)
    assert len(server.seen) == 1


def test_trickling_body_is_cut_at_the_overall_deadline(http_server):
    server = http_server()
    server.route(trickle=True)
    started = time.monotonic()
    with pytest.raises(NbinitError) as caught:
        fetch(server.url(), timeout=1.5)
    assert time.monotonic() - started < 1.5 + 1.0
    assert "no complete answer within the 1.5s limit" in str(caught.value)


def test_trickle_cut_off_outside_the_main_thread_too(http_server):
    server = http_server()
    server.route(trickle=True)
    caught: list[BaseException] = []

    def worker():
        try:
            fetch(server.url(), timeout=1.0)
        except NbinitError as exc:
            caught.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(3.0)
    assert not thread.is_alive()
    assert "no complete answer within the 1s limit" in str(caught[0])


@pytest.mark.parametrize("content_length", [True, False], ids=["declared", "undeclared"])
def test_body_over_the_cap_is_refused(http_server, content_length):
    server = http_server()
    server.route(body=b"#" * (10 << 20), content_length=content_length)
    with pytest.raises(NbinitError) as caught:
        fetch(server.url())
    assert str(caught.value).startswith(f"{server.url()}: body larger than 1048576 bytes: ")


def test_same_origin_redirect_is_followed_with_the_token(http_server):
    server = http_server()
    server.route("/old", status=302, headers={"Location": "/config.yaml"})
    server.route(body=GOOD)
    body, _ = fetch(server.url("/old"), token=TOKEN)
    assert body == GOOD
    assert [s.headers.get("Authorization") for s in server.seen] == [f"Bearer {TOKEN}"] * 2


def test_redirect_to_another_host_is_refused_before_anything_is_sent(http_server):
    server, other = http_server(), http_server()
    other.route(body=GOOD)
    server.route(status=302, headers={"Location": other.url(host="localhost")})
    with pytest.raises(NbinitError) as caught:
        fetch(server.url(), token=TOKEN)
    assert str(caught.value) == (
        f"{server.url()}: redirect to another host (http://localhost:{other.port}) refused: "
        "point NBINIT_CONFIG_URL at the final URL"
    )
    assert other.seen == []


def test_https_to_http_redirect_is_refused(http_server, tls_files, monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files.write_ca(tmp_path / "ca.pem")))
    secure, plain = http_server(tls_files.server_context), http_server()
    secure.route(status=301, headers={"Location": plain.url()})
    with pytest.raises(NbinitError) as caught:
        fetch(secure.url(), token=TOKEN)
    assert f"redirect from https to http://127.0.0.1:{plain.port} refused" in str(caught.value)
    assert plain.seen == []


def test_tls_untrusted_then_trusted_with_requests_ca_bundle(
    http_server, tls_files, monkeypatch, tmp_path
):
    server = http_server(tls_files.server_context)
    server.route(body=GOOD)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("NBINIT_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(NbinitError) as caught:
        fetch(server.url(), retries=2)
    assert str(caught.value).startswith(f"{server.url()}: TLS failure (certificate verify failed: ")
    assert "REQUESTS_CA_BUNDLE" in caught.value.fix
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files.write_ca(tmp_path / "ca.pem")))
    assert fetch(server.url())[0] == GOOD


def test_netrc_is_ignored(http_server, monkeypatch, tmp_path):
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login bob password netrcpass\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    server = http_server()
    server.route(body=GOOD)
    fetch(server.url())
    assert "Authorization" not in server.seen[0].headers


@pytest.mark.parametrize(
    "pin",
    [hashlib.sha256(GOOD).hexdigest(), "sha256:" + hashlib.sha256(GOOD).hexdigest().upper()],
    ids=["hex", "prefixed-upper"],
)
def test_pin_matches(http_server, pin):
    server = http_server()
    server.route(body=GOOD)
    assert fetch(server.url(), sha256=pin)[0] == GOOD


def test_pin_mismatch_is_a_fetch_failure(http_server):
    server = http_server()
    server.route(body=GOOD + b"# tampered\n")
    with pytest.raises(NbinitError) as caught:
        fetch(server.url(), sha256="0" * 64)
    assert "does not match NBINIT_CONFIG_SHA256 0000000000000000..." in str(caught.value)


def test_malformed_pin_is_named():
    with pytest.raises(NbinitError, match="NBINIT_CONFIG_SHA256 is not a sha256 digest"):
        fetch("/nonexistent", sha256="abc")


def test_server_down_names_connection_refused(http_server):
    server = http_server()
    url = server.url()
    server.stop()
    with pytest.raises(NbinitError) as caught:
        fetch(url, retries=1)
    assert str(caught.value) == (
        f"{url}: cannot connect (connection refused) (2 attempts): "
        "check that the config server is up and serves the file"
    )


@pytest.mark.parametrize(
    "url, message",
    [
        pytest.param("ftp://h/c.yaml", "ftp://h/c.yaml: unsupported scheme 'ftp'", id="ftp"),
        pytest.param("/nonexistent.yaml", "/nonexistent.yaml: no such file", id="missing-path"),
        pytest.param("http://", "http://: no host in the URL", id="no-host"),
        pytest.param(
            "https://h:99999/c.yaml",
            "https://h:99999/c.yaml: not a valid URL (Port out of range 0-65535)",
            id="bad-port",
        ),
        pytest.param(
            "file:///nonexistent.yaml", "/nonexistent.yaml: no such file", id="missing-file-url"
        ),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(NbinitError) as caught:
        fetch(url)
    assert caught.value.problem == message


def test_local_file_writable_by_others_is_not_trusted(tmp_path):
    path = tmp_path / "admin.yaml"
    path.write_bytes(GOOD)
    assert fetch(f"file://{path}") == (GOOD, str(path))
    path.chmod(0o666)
    with pytest.raises(NbinitError, match="writable by a non-root user, not trusted"):
        fetch(str(path))


def test_local_symlink_is_refused(tmp_path):
    (tmp_path / "real.yaml").write_bytes(GOOD)
    (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    with pytest.raises(NbinitError, match="a symlink, not trusted"):
        fetch(str(tmp_path / "link.yaml"))


def test_backoff_is_jittered_exponential_with_retry_after_as_a_floor():
    from nbinit.fetch import BACKOFF_MAX, RETRY_AFTER_MAX, backoff_seconds

    for attempt, low, high in ((1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (6, 2.0, 4.0)):
        waits = {backoff_seconds(attempt) for _ in range(50)}
        assert all(low <= w <= high for w in waits), (attempt, waits)
        assert len(waits) > 10  # spread: pods that failed together come back apart
    assert max(backoff_seconds(20) for _ in range(50)) <= BACKOFF_MAX
    assert all(1.0 <= backoff_seconds(1, 1.0) <= RETRY_AFTER_MAX for _ in range(50))
    assert backoff_seconds(1, 100000.0) == RETRY_AFTER_MAX


def test_a_busy_server_is_asked_again_no_sooner_than_its_retry_after(http_server):
    server = http_server()
    server.route(status=503, body=b"busy", headers={"Retry-After": "1"})

    def recover() -> None:  # the server is busy for its first answer only
        wait_until("the first request", lambda: server.seen, timeout=8.0, interval=0.01)
        server.route(body=GOOD)

    threading.Thread(target=recover, daemon=True).start()
    started = time.monotonic()
    body, _ = fetch(server.url(), retries=2, timeout=8.0)
    assert body == GOOD
    assert len(server.seen) == 2
    assert 1.0 <= time.monotonic() - started < 1.0 + 2.0


class RawServer:
    """One loopback socket that answers every connection with fixed bytes, as a broken or
    unusual server would, and keeps what each request sent. `tunnel_to` makes it a CONNECT
    proxy that, after its answer, relays bytes to that (host, port)."""

    def __init__(self, answer: bytes, tunnel_to=None) -> None:
        import socket

        self.answer = answer
        self.tunnel_to = tunnel_to
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        import socket

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(4096)
                    if not data:
                        break
                    request += data
                self.requests.append(request)
                conn.sendall(self.answer)
                if self.tunnel_to:
                    with socket.create_connection(self.tunnel_to, timeout=5) as upstream:
                        relay(conn, upstream)
                    continue
                with contextlib.suppress(OSError):  # a client that gave up already is gone
                    conn.shutdown(socket.SHUT_WR)
                    conn.recv(4096)  # until the client closes: no reset before it has read

    def close(self) -> None:
        self.listener.close()


def relay(a, b) -> None:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        while True:
            for key, _ in selector.select(5):
                data = key.fileobj.recv(65536)
                if not data:
                    return
                key.data.sendall(data)


@pytest.fixture
def raw_server():
    servers = []

    def start(answer: bytes, tunnel_to=None) -> RawServer:
        servers.append(RawServer(answer, tunnel_to))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_the_request_sent_is_one_plain_get(raw_server):
    server = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n" + GOOD)
    url = f"http://127.0.0.1:{server.port}/c.yaml?x=1"
    assert fetch(url, token=TOKEN)[0] == GOOD
    lines = server.requests[0].decode().split("\r\n")
    assert lines[0] == "GET /c.yaml?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert f"Authorization: Bearer {TOKEN}" in lines
    assert "Accept-Encoding: identity" in lines
    assert "Connection: close" in lines


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"b;ext=1\r\nversion: 1\n\r\n0D\r\ndeadline: 15\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
            id="chunked",
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/yaml\r\n\r\n" + GOOD, id="until-close"
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 24\r\n"
            b"X-Folded: a\r\n  b\r\n\r\n" + GOOD,
            id="interim-1xx",
        ),
    ],
)
def test_bodies_framed_every_way_http_allows(raw_server, answer):
    server = raw_server(answer)
    assert fetch(f"http://127.0.0.1:{server.port}/")[0] == GOOD


@pytest.mark.parametrize(
    "answer, problem",
    [
        pytest.param(b"", "cannot connect (RemoteDisconnected)", id="closed"),
        pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n", "cannot connect (BadStatusLine)", id="not-http"),
        pytest.param(b"HTTP/1.1 200 " + b"x" * 70000, "cannot connect (LineTooLong)", id="long"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n",
            "cannot connect (HTTPException)",
            id="101-headers",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + GOOD,
            "connection broken while reading (IncompleteRead)",
            id="short-body",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "connection broken while reading (IncompleteRead)",
            id="bad-chunk",
        ),
    ],
)
def test_broken_answers_are_one_line_each(raw_server, answer, problem):
    server = raw_server(answer)
    url = f"http://127.0.0.1:{server.port}/c.yaml"
    with pytest.raises(NbinitError) as caught:
        fetch(url)
    assert str(caught.value) == (
        f"{url}: {problem} (1 attempt): check that the config server is up and serves the file"
    )


@pytest.mark.parametrize(
    "answer, problem",
    [
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\n" * 11 + b"HTTP/1.1 200 OK\r\n\r\n" + GOOD,
            "cannot connect (HTTPException)",
            id="endless-1xx",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n18\r\n"
            + GOOD
            + b"\r\n0\r\n"
            + b"X-T: 1\r\n" * 101
            + b"\r\n",
            "connection broken while reading (HTTPException)",
            id="endless-trailer",
        ),
    ],
)
def test_answers_that_never_end_are_cut_by_count(raw_server, answer, problem):
    """Each line is bounded by length; the number of 1xx answers and trailer lines too."""
    server = raw_server(answer)
    url = f"http://127.0.0.1:{server.port}/c.yaml"
    with pytest.raises(NbinitError) as caught:
        fetch(url)
    assert str(caught.value).startswith(f"{url}: {problem} (1 attempt)")


def test_a_url_cannot_add_lines_to_the_request(raw_server):
    """A space, a control or non-ASCII character in the path is percent-encoded."""
    server = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n" + GOOD)
    url = f"http://127.0.0.1:{server.port}/a b/\x0bX-Evil: 1/é.yaml"
    assert fetch(url)[0] == GOOD
    lines = server.requests[0].decode().split("\r\n")
    assert lines[0] == "GET /a%20b/%0BX-Evil:%201/%C3%A9.yaml HTTP/1.1"
    assert not any(line.startswith("X-Evil") for line in lines)


def test_a_token_with_a_trailing_newline_is_sent_without_it(raw_server):
    """As a token mounted from a Secret file often is."""
    server = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n" + GOOD)
    assert fetch(f"http://127.0.0.1:{server.port}/", token=f"{TOKEN}\n")[0] == GOOD
    assert f"Authorization: Bearer {TOKEN}\r\n".encode() in server.requests[0]


@pytest.mark.parametrize("token", [f"{TOKEN}\r\nX-Evil: 1", f"{TOKEN}\x00", f"{TOKEN}\u2028x"])
def test_a_token_that_would_add_lines_is_refused_and_never_shown(raw_server, token):
    server = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n" + GOOD)
    with pytest.raises(NbinitError) as caught:
        fetch(f"http://127.0.0.1:{server.port}/", token=token)
    assert "NBINIT_CONFIG_TOKEN holds a line break, control or non-Latin-1 character" in str(
        caught.value
    )
    assert TOKEN not in str(caught.value)
    assert not any(b"X-Evil" in request for request in server.requests)


def test_http_through_the_proxy_the_environment_names(raw_server, monkeypatch):
    proxy = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n" + GOOD)
    monkeypatch.setenv("http_proxy", f"http://user:pa%20ss@127.0.0.1:{proxy.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert fetch("http://config.example/c.yaml")[0] == GOOD
    lines = proxy.requests[0].decode().split("\r\n")
    assert lines[0] == "GET http://config.example/c.yaml HTTP/1.1"
    assert "Host: config.example" in lines
    assert "Proxy-Authorization: Basic dXNlcjpwYSBzcw==" in lines  # user:pa ss


def test_https_tunnels_through_the_proxy(raw_server, http_server, tls_files, monkeypatch, tmp_path):
    server = http_server(tls_files.server_context)
    server.route(body=GOOD)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files.write_ca(tmp_path / "ca.pem")))
    proxy = raw_server(b"HTTP/1.1 200 Connection established\r\n\r\n", ("127.0.0.1", server.port))
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert fetch(server.url(host="localhost"), token=TOKEN)[0] == GOOD
    assert proxy.requests[0].startswith(f"CONNECT localhost:{server.port} HTTP/1.0\r\n".encode())
    assert b"Authorization" not in proxy.requests[0]  # the token only inside the tunnel
    assert server.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_proxy_that_refuses_the_tunnel(raw_server, monkeypatch):
    proxy = raw_server(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(NbinitError) as caught:
        fetch("https://config.example/c.yaml")
    assert "cannot connect (OSError) (1 attempt)" in str(caught.value)
