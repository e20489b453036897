"""One HTTP/1.1 GET over a socket: the request, and the response read within bounds.

What nbinit.fetch needs and no more (fetch keeps the rules: deadline, retries, redirects,
byte cap, TLS verification, the token's origin). Not http.client: it imports the email
parser for its headers, and ssl even for http://, 15-25 ms of every pod's start. The
response head is read with http.client's own bounds (line length, header count), and its
errors carry http.client's names, which fetch's messages quote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import ssl

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the port filled in from the scheme."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)


def show_origin(place: tuple[str, str, int]) -> str:
    """scheme://host[:port], the port only when it is not the scheme's own."""
    scheme, host, port = place
    return f"{scheme}://{host}" + ("" if DEFAULT_PORTS.get(scheme) == port else f":{port}")


def get(
    url: str,
    headers: dict[str, str],
    connect: float,
    read: float,
    proxy: Optional[tuple[str, int, dict[str, str]]] = None,
    tls: Optional[Callable[[], ssl.SSLContext]] = None,
) -> Response:
    """Send GET for the URL and read the response head; the body is the caller's to read.

    Through `proxy` (host, port, its headers): https tunnels with CONNECT (the proxy sees
    only the host), plain http sends the absolute URL to the proxy. `tls` makes the TLS
    context for https, so ssl is imported only then.
    """
    import socket
    from urllib.parse import quote, urlsplit

    parts = urlsplit(url)
    scheme, host, port = origin(url)
    # Percent-encoded as requests does (a space, a non-ASCII or control character in the URL
    # or a Location): nothing in the request line can end it or start another line.
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=URL_SAFE)
    address = (proxy[0], proxy[1]) if proxy else (host, port)
    extra = proxy[2] if proxy and scheme == "http" else {}
    if proxy and scheme == "http":
        target = show_origin((scheme, host, port)) + target
    # An ASCII name as bytes: a str is encoded with the idna codec, an import of its own.
    name = address[0].encode("ascii") if address[0].isascii() else address[0]
    sock = socket.create_connection((name, address[1]), connect)  # type: ignore[arg-type]
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            if proxy:
                _tunnel(sock, host, port, proxy[2])
            if tls is None:
                raise ValueError("an https URL needs a TLS context")
            sock = tls().wrap_socket(sock, server_hostname=host)
        sock.settimeout(read)
        host_header = f"[{host}]" if ":" in host else host
        if DEFAULT_PORTS[scheme] != port:
            host_header += f":{port}"
        lines = [f"GET {target} HTTP/1.1", f"Host: {host_header}", "Connection: close"]
        lines += [header_line(key, value) for key, value in {**headers, **extra}.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return Response(sock)
    except BaseException:
        sock.close()
        raise


def _tunnel(sock: Any, host: str, port: int, headers: dict[str, str]) -> None:
    """CONNECT through an http proxy; the proxy must answer 200 before TLS starts."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.0", f"Host: {authority}"]
    lines += [header_line(key, value) for key, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    answer = Response(sock, body=False)
    answer.file.close()  # the socket stays open, for TLS
    if answer.status != 200:
        raise OSError(f"Tunnel connection failed: {answer.status} {answer.reason}")


URL_SAFE = "!#$%&'()*+,/:;=?@[]~"  # left as they are in a request target; the rest encoded


class UnsafeHeader(ValueError):
    """A header value that could end its line (or is not Latin-1); `key` names the header."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the {key} header's value holds a line break or control character")
        self.key = key


def header_line(key: str, value: str) -> str:
    """`Key: value`, refused when the value could end the line or is not Latin-1.

    The values come from the environment (a token, a proxy's credentials): a line break in
    one would add headers of its own to the request.
    """
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 or ord(c) > 255 for c in value):
        raise UnsafeHeader(key)
    return f"{key}: {value}"


class HTTPException(Exception):
    """A response that is not HTTP; the subclasses are named as http.client names them."""


class BadStatusLine(HTTPException):
    pass


class LineTooLong(HTTPException):
    pass


class IncompleteRead(HTTPException):
    pass


class RemoteDisconnected(ConnectionResetError):
    pass


MAX_LINE = 65536  # http.client's bounds on a status or header line, and on the header count
MAX_HEADERS = 100
MAX_INTERIM = 10  # 100 Continue, 103 Early Hints: a server sends one or two


class Response:
    """A response head as read from the socket, and its body in bounded pieces.

    The request asked for `Connection: close`: a body without a length ends with the
    connection; a chunked one is decoded.
    """

    def __init__(self, sock: Any, body: bool = True) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        try:
            for _ in range(MAX_INTERIM + 1):
                self.status, self.reason = self._status_line()
                self.headers = self._header_lines()
                if self.status >= 200 or not body:  # 1xx: interim, the real answer follows
                    break
            else:
                raise HTTPException(f"more than {MAX_INTERIM} interim (1xx) answers")
        except BaseException:
            self.file.close()
            raise
        self.chunked = "chunked" in self.getheader("Transfer-Encoding", "").lower()
        length = self.getheader("Content-Length", "").strip()
        self.left: Optional[int] = int(length) if length.isdigit() and not self.chunked else None
        self.chunk_left = 0
        self.done = False

    def _line(self, what: str) -> bytes:
        line: bytes = self.file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise LineTooLong(what)
        return line

    def _status_line(self) -> tuple[int, str]:
        line = self._line("status line")
        if not line:
            raise RemoteDisconnected("Remote end closed connection without response")
        version, _, rest = line.decode("iso-8859-1").strip().partition(" ")
        code, _, reason = rest.strip().partition(" ")
        if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
            raise BadStatusLine(repr(line[:80]))
        return int(code), reason.strip()

    def _header_lines(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        last = ""
        for count in range(MAX_HEADERS + 2):
            line = self._line("header line")
            if line in (b"\r\n", b"\n", b""):
                return headers
            if count >= MAX_HEADERS:
                raise HTTPException(f"got more than {MAX_HEADERS} headers")
            text = line.decode("iso-8859-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and last:  # an obsolete folded continuation
                headers[last] += " " + text.strip()
                continue
            key, colon, value = text.partition(":")
            if not colon:
                continue
            last = key.strip().lower()
            value = value.strip()
            headers[last] = f"{headers[last]}, {value}" if last in headers else value
        raise HTTPException(f"got more than {MAX_HEADERS} headers")  # pragma: no cover

    def getheader(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def read1(self, size: int) -> bytes:
        """Up to `size` bytes of the body, b"" at its end; IncompleteRead if cut short."""
        if self.done:
            return b""
        if self.chunked:
            if self.chunk_left == 0:
                size_line = self._line("chunk size").split(b";", 1)[0].strip()
                try:
                    self.chunk_left = int(size_line, 16)
                except ValueError:
                    raise IncompleteRead("chunk size") from None
                if self.chunk_left == 0:
                    self._header_lines()  # the trailer, bounded as the head is
                    self.done = True
                    return b""
            data = self.file.read1(min(size, self.chunk_left))
            if not data:
                raise IncompleteRead("chunk")
            self.chunk_left -= len(data)
            if self.chunk_left == 0 and self.file.read(2) not in (b"\r\n",):
                raise IncompleteRead("chunk end")
            return data
        if self.left is not None:
            if self.left == 0:
                self.done = True
                return b""
            data = self.file.read1(min(size, self.left))
            if not data:
                raise IncompleteRead(f"{self.left} more bytes expected")
            self.left -= len(data)
            return data
        data = self.file.read1(size)
        self.done = not data
        return data

    def close(self) -> None:
        self.file.close()
        self.sock.close()
