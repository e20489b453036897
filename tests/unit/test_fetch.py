"""fetch_config against real loopback servers, in process: caps, deadline, redirects, pin, TLS."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time

import pytest
from helpers.wait import wait_until

from nbinit.errors import NbinitError
from nbinit.fetch import fetch_config, safe_url
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


def test_url_credentials_and_query_values_never_shown():
    assert safe_url("https://bob:pw@h.example:8443/c.yaml?token=abc&x=1#f") == (
        "https://h.example:8443/c.yaml?token=***&x=***"
    )
    assert safe_url("file:///etc/nbinit/admin.yaml") == "/etc/nbinit/admin.yaml"


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
            "(unparsable URL): not a valid URL (Port out of range 0-65535)",
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
