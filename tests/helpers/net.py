"""Loopback networking for tests and benchmarks: a free port, one HTTP request.

`request` returns the answer whatever its status: urllib raises on 4xx/5xx, but the tests
assert on those statuses, so an `HTTPError` is an answer here and only a failure to get one
(refused, reset, timed out) raises `OSError`. Stdlib only: the hub drivers import it
inside the sandbox.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any, NamedTuple, Optional


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick; free until someone binds)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes
    url: str  # where the redirects ended

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(
    url: str,
    method: str = "GET",
    *,
    timeout: float,
    headers: Optional[dict[str, str]] = None,
    opener: Optional[urllib.request.OpenerDirector] = None,
    data: Optional[bytes] = None,
) -> Answer:
    """`method url` (following redirects, through `opener` when given, e.g. one with a cookie
    jar); an error status is returned, not raised."""
    prepared = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    open_url = opener.open if opener is not None else urllib.request.urlopen
    try:
        with open_url(prepared, timeout=timeout) as response:  # noqa: S310 (loopback)
            return Answer(response.status, dict(response.headers), response.read(), response.url)
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read(), exc.url)
