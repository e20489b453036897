"""Fetch the admin config: https, http, file:// or a plain path, under one hard deadline.

The rules (research note R-HTTP-1..7): connect and read timeouts on every request plus one
overall deadline enforced outside the client; a byte cap checked on Content-Length and
counted while streaming; redirects only to the same scheme, host and port; the token only
ever sent as `Authorization` to that origin; an optional sha256 pin; a few short, logged
retries with jittered backoff that honours Retry-After. The client is nbinit.httpget, one
HTTP/1.1 GET over a socket (http.client would import the email parser, and ssl even for
http://); `ssl` and `urllib.parse` are imported only when used, and the digest
is CPython's own sha256, not hashlib's OpenSSL: each costs every pod start milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Optional

from nbinit import __version__, httpget
from nbinit.errors import NbinitError
from nbinit.httpget import HTTPException, Response, UnsafeHeader, origin, show_origin
from nbinit.log import Log
from nbinit.urls import public_url, url_secrets

if TYPE_CHECKING:
    import ssl

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
MAX_REDIRECTS = 3
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 4.0
RETRY_AFTER_MAX = 5.0  # urllib3's own default is 6 hours: it would stall the spawn
RETRY_STATUSES = (429, 500, 502, 503, 504)
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
CHUNK = 16384
PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "HTTPS_PROXY", "HTTP_PROXY")

FIX_URL = "check NBINIT_CONFIG_URL"
FIX_SERVER = "check that the config server is up and serves the file"
FIX_CA = "give its CA with REQUESTS_CA_BUNDLE (or NBINIT_CA_BUNDLE), or fix the certificate"


class _DeadlineExpired(BaseException):
    """Raised by the SIGALRM handler; a BaseException so no `except Exception` inside the
    HTTP client can swallow it."""


def config_source(url: str) -> str:
    """How the log, `config show` and the last-good record name the admin config: a file://
    URL by its path, any other URL as urls.public_url writes it (no credentials)."""
    if url.split("://", 1)[0].lower() != "file" or "://" not in url:
        return public_url(url)
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path)


def normalize_pin(sha256: Optional[str]) -> Optional[str]:
    """`sha256:<hex>` or `<hex>`, 64 hex digits; anything else is a configuration mistake."""
    if not sha256:
        return None
    pin = sha256.strip().lower()
    pin = pin[len("sha256:") :] if pin.startswith("sha256:") else pin
    if not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise NbinitError(
            "NBINIT_CONFIG_SHA256 is not a sha256 digest (64 hex digits)",
            "set it to the output of `sha256sum config.yaml`, or unset it",
        )
    return pin


def sha256_hex(data: bytes) -> str:
    """The sha256 digest, from CPython's own sha256 (_sha2 from 3.12, _sha256 before it):
    hashlib would load and set up OpenSSL, 3-10 ms of every start for one small digest."""
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:  # a build without them (FIPS-only): OpenSSL's
            from hashlib import sha256  # type: ignore[assignment,unused-ignore]
    digest: str = sha256(data).hexdigest()
    return digest


def check_pin(body: bytes, pin: Optional[str], shown: str) -> None:
    """A pinned config that changed is treated exactly like a failed fetch."""
    if pin is None:
        return
    digest = sha256_hex(body)
    if digest != pin:
        raise NbinitError(
            f"{shown}: sha256 {digest[:16]}... does not match NBINIT_CONFIG_SHA256 {pin[:16]}...",
            "serve the pinned config, or update the pin to the new file's digest",
        )


def fetch_config(
    url: str,
    *,
    token: Optional[str],
    sha256: Optional[str],
    timeout: float,
    max_bytes: int,
    retries: int,
    log: Log,
) -> tuple[bytes, str]:
    """Return (body, url as safe to log), or raise NbinitError with one line and a fix.

    `timeout` is the whole budget, retries and redirects included.
    """
    from urllib.parse import urlsplit

    pin = normalize_pin(sha256)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("", "file"):
        path = config_source(url) if scheme == "file" else url
        from nbinit.trusted import read_trusted_file

        body = read_trusted_file(path, max_bytes, what="admin config")
        if body is None:
            raise NbinitError(f"{path}: no such file", FIX_URL)
        if len(body) > max_bytes:
            raise NbinitError(f"{path}: larger than {max_bytes} bytes", "raise fetch.max_bytes")
        check_pin(body, pin, path)
        return body, path
    shown = config_source(url)
    if scheme not in ("http", "https"):
        raise NbinitError(
            f"{shown}: unsupported scheme {scheme!r}", "use https://, http://, file:// or a path"
        )
    if token:
        log.add_secret(token)
        # A token mounted from a Secret file often ends with a newline; it is never part of it.
        token = token.strip() or None
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        raise NbinitError(f"{shown}: not a valid URL ({exc})", FIX_URL) from None
    if not parts.hostname:
        raise NbinitError(f"{shown}: no host in the URL", FIX_URL)
    for secret in url_secrets(url):
        log.add_secret(secret)
    if timeout <= 0:
        raise NbinitError(f"{shown}: no time left before the deadline", "raise NBINIT_DEADLINE")
    started = time.monotonic()

    def attempt_all() -> bytes:
        return _fetch_with_retries(url, shown, token, timeout, started, max_bytes, retries, log)

    try:
        body = _within(timeout, attempt_all)
    except _DeadlineExpired:
        raise NbinitError(
            f"{shown}: no complete answer within the {_seconds(timeout)}s limit "
            f"(elapsed {time.monotonic() - started:.1f}s)",
            f"{FIX_SERVER} quickly, or raise fetch.timeout",
        ) from None
    check_pin(body, pin, shown)
    log.info(
        f"fetched {shown}: {len(body)} bytes in {time.monotonic() - started:.3f}s, "
        f"sha256 {sha256_hex(body)[:16]}"
    )
    return body, shown


def _seconds(value: float) -> str:
    """2.0 -> "2", 2.96 -> "3", 1.45 -> "1.4": limits read as people set them."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _within(seconds: float, work: Callable[[], bytes]) -> bytes:
    """Run work, cut off after `seconds` whatever it is blocked on.

    A socket's read timeout is per read: a server that trickles a byte a second is never cut
    off by it, and a check inside the read loop never gets control. In the main thread a
    SIGALRM interrupts the blocked read; elsewhere (no signals there) the work runs in a
    daemon thread that is abandoned at the deadline.
    """
    if threading.current_thread() is not threading.main_thread():
        return _within_thread(seconds, work)

    def expire(signum: int, frame: Optional[FrameType]) -> None:
        raise _DeadlineExpired()

    began = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, expire)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return work()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:  # someone else's alarm keeps its remaining time
            left = max(0.001, previous_timer[0] - (time.monotonic() - began))
            signal.setitimer(signal.ITIMER_REAL, left, previous_timer[1])


def _within_thread(seconds: float, work: Callable[[], bytes]) -> bytes:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["body"] = work()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="nbinit-fetch", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _DeadlineExpired()
    if "error" in outcome:
        raise outcome["error"]
    body: bytes = outcome["body"]
    return body


def _fetch_with_retries(
    url: str,
    shown: str,
    token: Optional[str],
    limit: float,
    started: float,
    max_bytes: int,
    retries: int,
    log: Log,
) -> bytes:
    headers = {
        "User-Agent": f"nbinit/{__version__}",
        "Accept": "application/yaml, text/yaml, text/plain;q=0.9, */*;q=0.1",
        # A compressed body would be capped only after decompression: ask for none.
        "Accept-Encoding": "identity",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_once(url, shown, headers, limit, started, max_bytes)
        except _Retryable as exc:
            elapsed = time.monotonic() - started
            wait = backoff_seconds(attempt, exc.retry_after)
            if attempt == attempts or elapsed + wait >= limit:
                tried = f"{attempt} attempt{'s' * (attempt > 1)}"
                if attempt < attempts:
                    tried += f", no time left for a retry within {_seconds(limit)}s"
                raise NbinitError(f"{shown}: {exc.problem} ({tried})", exc.fix) from None
            log.info(
                f"fetch {shown}: {exc.problem}; retry {attempt}/{retries} in {wait:.1f}s "
                f"(elapsed {elapsed:.1f}s of {_seconds(limit)}s)"
            )
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def backoff_seconds(attempt: int, retry_after: Optional[float] = None) -> float:
    """How long to wait before retry number `attempt` (1, 2, ...): jittered and exponential.

    A class of pods that failed together must not come back together: each wait is drawn
    from the upper half of its exponential step (0.25-0.5 s, 0.5-1 s, ... up to BACKOFF_MAX).
    A server's Retry-After is a floor, never undercut; one longer than RETRY_AFTER_MAX is cut
    to it (urllib3 would wait up to 6 hours and stall the spawn). The jitter comes from
    os.urandom: `random` is an import a start without retries would not pay for.
    """
    step = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1))
    spread = int.from_bytes(os.urandom(2), "big") / 0xFFFF
    wait = step * (0.5 + spread / 2)
    if retry_after is None:
        return wait
    if retry_after >= RETRY_AFTER_MAX:
        return RETRY_AFTER_MAX
    return min(RETRY_AFTER_MAX, retry_after + wait / 2)


class _Retryable(NbinitError):
    """A failure worth another try: connection refused or reset, a timeout, HTTP 429/5xx."""

    def __init__(self, problem: str, fix: str, retry_after: Optional[float] = None) -> None:
        super().__init__(problem, fix)
        self.retry_after = retry_after


def _fetch_once(
    url: str,
    shown: str,
    headers: dict[str, str],
    limit: float,
    started: float,
    max_bytes: int,
) -> bytes:
    """One GET (nbinit.httpget), following at most MAX_REDIRECTS same-origin redirects by hand.

    Not requests: with urllib3, idna and charset_normalizer it costs a pod 25-30 ms of
    imports for one GET; the rules here are the same (verified TLS, same-origin redirects,
    byte cap, deadline, no netrc). Why not http.client either: httpget's docstring.
    """
    first = origin(url)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        # Slightly past the time left, so the overall deadline (one clear message) wins.
        left = max(0.1, limit - (time.monotonic() - started)) + 0.5
        try:
            response = httpget.get(
                current,
                headers,
                min(CONNECT_TIMEOUT, left),
                min(READ_TIMEOUT, left),
                proxy=_proxy_for(current),
                tls=_tls_context,
            )
        except UnsafeHeader as exc:
            source = "NBINIT_CONFIG_TOKEN" if exc.key == "Authorization" else "the proxy variable"
            raise NbinitError(
                f"{source} holds a line break, control or non-Latin-1 character",
                f"set {source} to the value alone, without quotes or a line break inside it",
            ) from None
        except OSError as exc:  # ssl.SSLError is one; ssl is imported only for https
            if _is_tls_error(exc):
                raise NbinitError(f"{shown}: TLS failure ({_tls_reason(exc)})", FIX_CA) from None
            if _is_timeout(exc):
                raise _Retryable("timed out waiting for the server", FIX_SERVER) from None
            raise _Retryable(f"cannot connect ({_connect_reason(exc)})", FIX_SERVER) from None
        except HTTPException as exc:
            raise _Retryable(f"cannot connect ({_connect_reason(exc)})", FIX_SERVER) from None
        try:
            if response.status in REDIRECT_STATUSES:
                current = _next_location(response.getheader("Location", ""), current, first, shown)
                continue
            return _read_body(response, shown, max_bytes)
        finally:
            response.close()
    raise NbinitError(
        f"{shown}: more than {MAX_REDIRECTS} redirects", "point NBINIT_CONFIG_URL at the final URL"
    )


def _tls_context() -> ssl.SSLContext:
    """Verified TLS: the CA bundle the environment names, else the system's trust store.

    The system store is what git and curl in the same image trust (and where an admin puts
    an internal CA); certifi's bundle is the fallback for an image without one.
    """
    import ssl

    cafile = (
        os.environ.get("NBINIT_CA_BUNDLE")
        or os.environ.get("REQUESTS_CA_BUNDLE")
        or os.environ.get("CURL_CA_BUNDLE")
    )
    if not cafile:
        paths = ssl.get_default_verify_paths()
        if paths.cafile is None and paths.capath is None:
            with contextlib.suppress(ImportError):
                import certifi

                cafile = certifi.where()
    try:
        return ssl.create_default_context(cafile=cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise NbinitError(
            f"cannot load the CA bundle {cafile}: {getattr(exc, 'strerror', None) or exc}",
            "point NBINIT_CA_BUNDLE (or REQUESTS_CA_BUNDLE) at a readable PEM file",
        ) from None


def _is_tls_error(exc: BaseException) -> bool:
    import sys

    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLError)


def _is_timeout(exc: BaseException) -> bool:
    import socket

    return isinstance(exc, (TimeoutError, socket.timeout))


def _next_location(location: str, current: str, first: tuple[str, str, int], shown: str) -> str:
    from urllib.parse import urljoin

    if not location:
        raise NbinitError(f"{shown}: redirect without a Location", FIX_SERVER)
    target = urljoin(current, location)
    place = origin(target)
    if place == first:
        return target
    if first[0] == "https" and place[0] != "https":
        problem = f"redirect from https to {show_origin(place)} refused"
    else:
        problem = f"redirect to another host ({show_origin(place)}) refused"
    # Nothing was sent there: the token stays with the origin the admin configured.
    raise NbinitError(f"{shown}: {problem}", "point NBINIT_CONFIG_URL at the final URL")


def _read_body(response: Response, shown: str, max_bytes: int) -> bytes:
    status = response.status
    if status != 200:
        reason = f"HTTP {status} {response.reason or ''}".strip()
        if status in RETRY_STATUSES:
            raise _Retryable(reason, FIX_SERVER, _retry_after(response.getheader("Retry-After")))
        if status in (401, 403):
            raise NbinitError(f"{shown}: {reason}", "check NBINIT_CONFIG_TOKEN")
        raise NbinitError(f"{shown}: {reason}", FIX_URL)
    too_big = NbinitError(
        f"{shown}: body larger than {max_bytes} bytes",
        "serve the config itself (not a bundle or an error page), or raise fetch.max_bytes",
    )
    declared = response.getheader("Content-Length", "") or ""
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    body = bytearray()
    for chunk in _chunks(response):
        body += chunk
        if len(body) > max_bytes:
            raise too_big
    return bytes(body)


def _chunks(response: Response) -> Iterator[bytes]:
    while True:
        try:
            chunk = response.read1(CHUNK)
        except (HTTPException, OSError) as exc:
            raise _Retryable(
                f"connection broken while reading ({type(exc).__name__})", FIX_SERVER
            ) from None
        if not chunk:
            return
        yield chunk


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header (a number or an HTTP date), else None."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


def _proxy_for(url: str) -> Optional[tuple[str, int, dict[str, str]]]:
    """(host, port, headers) of the proxy the environment names for this URL, if any.

    Read only when a proxy variable is set; NO_PROXY is honoured as curl and requests do.
    """
    if not any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    import urllib.request
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme.lower()) or proxies.get("all")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(parts.hostname or "", proxies):
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    _, host, port = origin(proxy)
    headers = {}
    proxy_parts = urlsplit(proxy)
    if proxy_parts.username:
        import base64

        pair = f"{unquote(proxy_parts.username)}:{unquote(proxy_parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return host, port, headers


def _tls_reason(exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"certificate verify failed: ([^(\]'\"]+)", text)
    if found:
        return "certificate verify failed: " + found.group(1).strip()
    found = re.search(r"\[SSL: ([A-Z_]+)\]", text)
    return found.group(1).lower().replace("_", " ") if found else "handshake failed"


def _connect_reason(exc: Exception) -> str:
    text = str(exc)
    for pattern, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "server closed the connection"),
    ):
        if pattern in text:
            return reason
    return type(exc).__name__
