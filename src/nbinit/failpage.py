"""The failure page: after a FATAL under a hub, the user's browser says what failed and the fix.

Without it a FATAL reaches only the pod log; the user sees JupyterHub's "didn't respond in
30 seconds", and KubeSpawner's `restartPolicy: OnFailure` turns exit 1 into a crash loop
that holds the server half-started until `start_timeout`. Instead nbinit drops root and
answers on the server's own address and prefix, so the hub finds the server "up" (any
non-5xx answer) and sends the user to this page, then exits 0 after `explain_minutes` or
at SIGTERM, so the pod completes and the user can start again from the hub's home page.

Standard library only, imported only after a FATAL: a clean start never pays for it.
Everything shown is HTML-escaped, and shows only the FATAL's problem and fix (already
redacted like every log line), the time, the image and the link: no environment.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import pwd
import signal
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Optional

from nbinit import privilege
from nbinit.context import Identity
from nbinit.errors import NbinitError
from nbinit.log import Log

EXPLAIN = "explain"
EXIT = "exit"
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LOG_MAX = 4096  # what Kubernetes keeps of it
TEXT_MAX = 2000  # per field shown: a FATAL line is one sentence and its fix
REQUEST_TIMEOUT = 5.0  # a client that sends nothing holds one thread this long, no more
POLL = 0.25  # seconds between looks at the clock (and, as PID 1, at orphans to reap)
NOBODY = Identity("nobody", 65534, 65534, "/", "/usr/sbin/nologin")


def under_hub(env: dict[str, str]) -> bool:
    """A hub launched this server: it set the service URL or prefix."""
    return bool(env.get("JUPYTERHUB_SERVICE_URL") or env.get("JUPYTERHUB_SERVICE_PREFIX"))


def choose(setting: Optional[str], env: dict[str, str]) -> str:
    """on_fatal as configured, else explain under a hub and exit anywhere else."""
    if setting in (EXPLAIN, EXIT):
        return setting
    return EXPLAIN if under_hub(env) else EXIT


class Failure:
    """What the page shows: the FATAL's problem and fix, when, in which image, where to go."""

    def __init__(self, problem: str, fix: str, env: dict[str, str], secrets: tuple[str, ...]):
        from nbinit.log import redact

        self.problem = _bounded(redact(problem, secrets))
        self.fix = _bounded(redact(fix, secrets))
        self.when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        # KubeSpawner sets JUPYTER_IMAGE_SPEC (and JUPYTER_IMAGE) to the pod's image.
        self.image = _bounded(env.get("JUPYTER_IMAGE_SPEC") or env.get("JUPYTER_IMAGE") or "")
        base = env.get("JUPYTERHUB_BASE_URL") or "/"
        # Only a path: a base URL like `javascript:...` must never become a link.
        base = base if base.startswith("/") and not base.startswith("//") else "/"
        self.hub_home = (base if base.endswith("/") else base + "/") + "hub/home"

    def line(self) -> str:
        return f"{self.problem}: {self.fix}" if self.fix else self.problem

    def page(self) -> bytes:
        e = html.escape
        image = self.image and f"<tr><th>Image</th><td><code>{e(self.image)}</code></td></tr>"
        fix = f"<h2>How to fix it</h2><p>{e(self.fix)}</p>" if self.fix else ""
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Your server did not start</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:46em;margin:3em auto;padding:0 1em;color:#222}}
h1{{color:#b00020;font-size:1.6em}} h2{{font-size:1.15em;margin-top:1.5em}}
.problem{{background:#fdecea;border-left:4px solid #b00020;padding:.8em 1em}}
th{{text-align:left;padding-right:1em;color:#555;font-weight:normal}}
a.button{{display:inline-block;margin-top:1.5em;padding:.6em 1.2em;background:#1565c0;
color:#fff;text-decoration:none;border-radius:4px}}
</style></head>
<body>
<h1>Your server did not start</h1>
<h2>What failed</h2>
<p class="problem" id="problem">{e(self.problem)}</p>
{fix}
<table>
<tr><th>When</th><td>{e(self.when)}</td></tr>
{image}
</table>
<p>Go to the hub's home page, stop this server, and start it again once the problem is
fixed. If the fix is for an administrator, send them this page.</p>
<a class="button" id="hub-home" href="{e(self.hub_home, quote=True)}">Go to the hub home page</a>
</body></html>
""".encode()

    def status(self) -> bytes:
        answer = {"nbinit": "failed", "reason": self.problem, "fix": self.fix, "time": self.when}
        return json.dumps(answer).encode()


def _bounded(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 3] + "..."


def address(env: dict[str, str]) -> tuple[str, int, str]:
    """(host, port, prefix) to serve on: those of JUPYTERHUB_SERVICE_URL, else :8888 and /."""
    from nbinit.readiness import service_address

    host, port, path = service_address(env.get("JUPYTERHUB_SERVICE_URL", ""))
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or path or "/"
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    return host, port, prefix if prefix.endswith("/") else prefix + "/"


def write_termination_log(text: str, path: str = TERMINATION_LOG) -> bool:
    """The FATAL line for Kubernetes' pod status, when that file exists and is writable.

    Never created (a plain container has no such file) and never followed as a symlink.
    """
    data = text.encode()[:TERMINATION_LOG_MAX]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, data)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def unprivileged_identity(fallback: Optional[Identity]) -> Identity:
    """nobody (it owns nothing), else the default user; uid 65534 when neither exists."""
    try:
        entry = pwd.getpwnam("nobody")
        if entry.pw_uid != 0 and entry.pw_gid != 0:
            return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, "/", entry.pw_shell)
    except KeyError:
        pass
    if fallback is not None and fallback.uid != 0 and fallback.gid != 0:
        return fallback
    return NOBODY


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never keeps the process from exiting

    def __init__(self, host: str, port: int, failure: Failure, prefix: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.failure = failure
        self.prefix = prefix
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    server_version = "nbinit"
    sys_version = ""

    def _answer(self, head_only: bool = False) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        prefix = self.server.prefix
        failure = self.server.failure
        if path == prefix + "api/status":
            status, kind, body = 200, "application/json", failure.status()
        elif path.startswith(prefix) or path + "/" == prefix:
            status, kind, body = 200, "text/html; charset=utf-8", failure.page()
        else:
            status, kind, body = 404, "text/plain; charset=utf-8", b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer(head_only=True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the pod log keeps the FATAL line, not every browser request."""


class _Stop(BaseException):
    """SIGTERM or SIGINT: stop serving.

    A BaseException: socketserver hands any Exception raised while a request is handled to
    handle_error and goes on, so a SIGTERM that came mid-request was lost for 15 minutes.
    """


def _stop(signum: int, frame: Optional[FrameType]) -> None:
    raise _Stop()


def serve(
    failure: Failure,
    env: dict[str, str],
    minutes: float,
    fallback: Optional[Identity],
    log: Log,
) -> int:
    """Bind as root, drop root, answer until `minutes` pass or SIGTERM: 0; 1 when it cannot."""
    host, port, prefix = address(env)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server = _Server(host, port, failure, prefix)
    except OSError as exc:
        log.error(f"cannot serve the failure page on {host or '*'}:{port}: {exc.strerror}")
        return 1
    except _Stop:
        return 0
    identity = unprivileged_identity(fallback)
    try:
        if os.geteuid() == 0:
            privilege.drop_privileges(identity)
    except NbinitError as exc:  # never serve as root
        server.server_close()
        log.error(f"not serving the failure page: {exc}")
        return 1
    who = f"{identity.name} (uid {identity.uid})" if os.geteuid() == identity.uid else "this user"
    log.info(
        f"serving the failure page at {host or '*'}:{port}{prefix} as {who} for "
        f"{minutes:g} min (JSON at {prefix}api/status); exit 0 then or at SIGTERM"
    )
    pid1 = os.getpid() == 1
    until = time.monotonic() + minutes * 60
    try:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                log.info(f"failure page: {minutes:g} min passed, exiting")
                break
            server.timeout = min(POLL, left)
            server.handle_request()
            if pid1:
                _reap_orphans()
    except _Stop:
        log.info("failure page: stopped by signal, exiting")
    finally:
        with contextlib.suppress(_Stop):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.server_close()
    return 0


def _reap_orphans() -> None:
    """As PID 1, every orphan (a git worker left from before the FATAL) is ours to reap."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
