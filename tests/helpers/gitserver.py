"""Real git servers on loopback for tests and benchmarks, and a pusher that plays upstream.

- `GitHttpServer`: smart HTTP (`git http-backend` behind a small HTTP server), in a
  thread, or as its own process (`GitHttpProcess`) so that a test can kill it mid-clone;
  `throttle` slows the body down so "mid-clone" is a moment a test can hit.
- `GitDaemon`: `git daemon` serving git:// URLs.
- `HangServer`: accepts connections and never answers (a hung git host).
- `Pusher`: a working clone of a bare repo that writes, deletes, commits and (force-)pushes.

Run as a script, it serves: `python gitserver.py ROOT [--throttle SECONDS_PER_CHUNK]`
(prints the port on its first line).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

if __name__ == "__main__":  # GitHttpProcess runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.net import free_port  # noqa: E402
from helpers.wait import wait_until  # noqa: E402

GIT_ID = ["-c", "user.name=Upstream", "-c", "user.email=upstream@example.org"]


def git(*args: str, cwd: Optional[Path] = None) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    result = subprocess.run(
        ["git", *GIT_ID, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def make_bare(root: Path, name: str, branch: str = "main") -> Path:
    path = root / f"{name}.git"
    git("init", "-q", "--bare", f"--initial-branch={branch}", str(path))
    git("config", "http.receivepack", "true", cwd=path)
    git("config", "uploadpack.allowFilter", "true", cwd=path)
    return path


class Pusher:
    """Upstream's side: a working clone of the bare repo."""

    def __init__(self, bare: Path, work: Path, branch: str = "main") -> None:
        self.bare = bare
        self.work = work
        self.branch = branch
        work.mkdir(parents=True, exist_ok=True)
        git("init", "-q", f"--initial-branch={branch}", cwd=work)
        git("remote", "add", "origin", str(bare), cwd=work)

    def write(self, path: str, content: str | bytes) -> Pusher:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        return self

    def delete(self, path: str) -> Pusher:
        (self.work / path).unlink()
        return self

    def commit(self, message: str = "upstream change") -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self, force: bool = False) -> None:
        git(
            "push",
            "-q",
            *(["--force"] if force else []),
            "origin",
            f"HEAD:{self.branch}",
            cwd=self.work,
        )

    def publish(self, files: dict[str, str], message: str = "upstream change") -> str:
        for path, content in files.items():
            self.write(path, content)
        sha = self.commit(message)
        self.push()
        return sha

    def switch(self, branch: str) -> None:
        """Work on (and push to) another branch from here on."""
        git("checkout", "-q", "-B", branch, cwd=self.work)
        self.branch = branch

    def rewrite(self, files: dict[str, str]) -> str:
        """A force-push of unrelated history (an orphan commit)."""
        git("checkout", "-q", "--orphan", "rewritten", cwd=self.work)
        git("rm", "-rfq", "--cached", ".", cwd=self.work)
        for entry in self.work.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        for path, content in files.items():
            self.write(path, content)
        sha = self.commit("rewritten history")
        self.push(force=True)
        return sha


class _BackendHandler(http.server.BaseHTTPRequestHandler):
    """CGI for `git http-backend`, streamed, optionally throttled."""

    root = ""
    throttle = 0.0
    auth = ""  # "user:password": HTTP Basic required, as a private forge would
    seen_auth: list[str] = []
    busy: list[int] = [0]  # answer this many next requests 503 + Retry-After (a busy forge)
    retry_after = "1"
    request_times: list[float] = []  # time.monotonic() of every request, busy ones too
    bytes_sent: list[int] = [0]  # response bodies from http-backend, in bytes

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        self.request_times.append(time.monotonic())
        if self.busy[0] > 0:
            self.busy[0] -= 1
            self.send_response(503)
            self.send_header("Retry-After", self.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.auth:
            import base64

            given = self.headers.get("Authorization", "")
            self.seen_auth.append(given)
            if given != "Basic " + base64.b64encode(self.auth.encode()).decode():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.end_headers()
                return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_USER": "",
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        body = self._body() if self.command == "POST" else b""
        env["CONTENT_LENGTH"] = str(len(body))
        process = subprocess.Popen(
            ["git", "http-backend"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert process.stdin and process.stdout
        threading.Thread(target=self._feed, args=(process.stdin, body), daemon=True).start()
        status, headers = "200 OK", []
        while True:
            line = process.stdout.readline().decode("latin-1").rstrip("\r\n")
            if not line:
                break
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = value.strip()
            else:
                headers.append((key, value.strip()))
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        try:
            while True:
                chunk = process.stdout.read1(16384) if self.throttle else process.stdout.read(65536)
                if not chunk:
                    break
                self.wfile.write(chunk)
                self.bytes_sent[0] += len(chunk)
                if self.throttle:
                    self.wfile.flush()
                    time.sleep(self.throttle)
        except (BrokenPipeError, ConnectionResetError):
            process.kill()
        process.wait()

    @staticmethod
    def _feed(stdin: object, body: bytes) -> None:
        try:
            stdin.write(body)  # type: ignore[attr-defined]
            stdin.close()  # type: ignore[attr-defined]
        except BrokenPipeError:
            pass

    do_GET = _serve
    do_POST = _serve


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 overflows when a loaded 2-core CI machine stalls the accept
    # loop, and the kernel then resets new connections (seen once as a flaky clone).
    request_queue_size = 128


class GitHttpServer:
    """Smart HTTP on 127.0.0.1 in a thread of the test process."""

    def __init__(
        self,
        root: Path,
        throttle: float = 0.0,
        port: int = 0,
        auth: str = "",
        retry_after: str = "1",
    ) -> None:
        self.root = root
        self.seen_auth: list[str] = []
        self.busy = [0]  # set busy[0] = n: the next n requests get 503 with Retry-After
        self.request_times: list[float] = []
        self.bytes_sent = [0]  # bytes_sent[0]: what http-backend answered, all requests
        handler = type(
            "Handler",
            (_BackendHandler,),
            {
                "root": str(root),
                "throttle": throttle,
                "auth": auth,
                "seen_auth": self.seen_auth,
                "busy": self.busy,
                "retry_after": retry_after,
                "request_times": self.request_times,
                "bytes_sent": self.bytes_sent,
            },
        )
        self.server = _Server(("127.0.0.1", port), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> GitHttpServer:
        self.thread.start()
        return self

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GitHttpProcess:
    """The same server as a separate process, so a test can kill it in the middle."""

    def __init__(self, root: Path, throttle: float = 0.0, port: int = 0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(root), "--throttle", str(throttle), "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout
        self.port = int(self.process.stdout.readline())

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class GitDaemon:
    """`git daemon` serving every repo under root as git://127.0.0.1:PORT/NAME.git."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                f"--base-path={root}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                str(root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def connect() -> int:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port))

        wait_until(
            f"git daemon to listen on port {self.port}",
            connect,
            lambda errno: errno == 0,
            timeout=10,
            interval=0.05,
            alive=lambda: self.process.poll() is None,
        )

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


class HangServer:
    """Accepts every connection and never says a word: a git host that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class ResetOnceProxy:
    """Forwards to a port, but resets the first connection: a flaky proxy in front of git."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.resets = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.resets == 0:
                self.resets += 1
                # SO_LINGER 0: close() sends RST, as a dropped proxy connection does.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.recv(65536)
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def stop(self) -> None:
        self.sock.close()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--throttle", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = GitHttpServer(Path(args.root), args.throttle, args.port)
    print(server.port, flush=True)
    server.server.serve_forever()


if __name__ == "__main__":
    main()
