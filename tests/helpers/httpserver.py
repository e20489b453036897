"""A real HTTP(S) server on loopback for config-fetch tests, with the misbehaviours they need.

Each path serves a `Route`: a status and body, optionally late (`delay`), never ending
(`trickle`), without Content-Length, or as a redirect. Every request is recorded (path and
headers) so a test can assert what reached which host. TLS uses a `trustme` CA.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line: a server slower than the deadline
    trickle: bool = False  # after the headers, one byte every 0.2 s, forever
    content_length: bool = True  # False: the body ends when the connection closes


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]


class HTTPServer:
    """A threaded server on 127.0.0.1 (also reachable as `localhost`), HTTP or HTTPS."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        self.scheme = "https" if tls else "http"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/config.yaml", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def route(self, path: str = "/config.yaml", **kwargs: object) -> Route:
        self.routes[path] = Route(**kwargs)  # type: ignore[arg-type]
        return self.routes[path]

    def stop(self) -> None:
        """Stop serving and close the port: afterwards connections are refused."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


def serve_hub_api(server: HTTPServer, version: str) -> str:
    """Make server a stand-in for the hub's API: `GET /hub/api` answers the hub's version, as
    jupyterhub-singleuser asks before it listens. Returns the URL for JUPYTERHUB_API_URL."""
    body = json.dumps({"version": version}).encode()
    for path in ("/hub/api", "/hub/api/"):
        server.route(path, body=body, headers={"Content-Type": "application/json"})
    return server.url("/hub/api")


def _handler_for(server: HTTPServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # keep pytest's output for the test's own messages

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            server.seen.append(Seen("GET", self.path, dict(self.headers.items())))
            route = server.routes.get(self.path.split("?", 1)[0])
            if route is None:
                route = Route(404, b"not found\n")
            if route.delay and server.stopping.wait(route.delay):
                return
            self.send_response(route.status)
            for key, value in route.headers.items():
                self.send_header(key, value)
            if route.trickle:
                self.send_header("Content-Type", "application/yaml")
                self.send_header("Connection", "close")
                self.end_headers()
                self._trickle()
                return
            if route.content_length:
                self.send_header("Content-Length", str(len(route.body)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            # The client may give up (a capped body): that is the point of the test.
            with contextlib.suppress(OSError):
                self.wfile.write(route.body)

        def _trickle(self) -> None:
            try:
                while not server.stopping.wait(0.2):
                    self.wfile.write(b"#")
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True

    return Handler


@dataclass
class TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""

    server_context: ssl.SSLContext
    ca_pem: bytes

    @classmethod
    def create(cls) -> TLSFiles:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return cls(context, ca.cert_pem.bytes())

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.ca_pem)
        return path
