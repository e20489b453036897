"""`nbinit ready`: the readiness probe. Ready once nbinit has exec'd the server and it listens.

Why a probe at all: KubeSpawner counts a pod as started when its containers are ready,
and from then on the hub gives the server only `Spawner.http_timeout` (30 s) to answer.
Without a readinessProbe a container is ready the moment its entrypoint starts, so all of
nbinit's setup (a big clone) would count against those 30 s instead of `start_timeout`.

It reads the status file the start writes (no root needed) and tries one TCP connection:
no subprocess, no imports beyond the standard library's basics, well under 100 ms.
The failure page counts as ready: the hub must find it to send the user there.
"""

from __future__ import annotations

import json
import os
import socket

TYPE_CHECKING = False  # `typing` costs `nbinit ready`, run every few seconds, 2-3 ms; mypy reads it
if TYPE_CHECKING:
    from typing import Any, Optional

CONNECT_TIMEOUT = 0.05  # seconds; loopback answers in microseconds or refuses at once
DEFAULT_PORT = 8888  # jupyterhub-singleuser's (and KubeSpawner's) port


def service_address(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a JUPYTERHUB_SERVICE_URL; ("", 8888, "") when it is unset."""
    if not url:
        return "", DEFAULT_PORT, ""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return parts.hostname or "", parts.port or DEFAULT_PORT, parts.path
    except ValueError:  # a port that is not a number: the server would not start either
        return "", DEFAULT_PORT, ""


def _read(env: dict[str, str]) -> tuple[Optional[str], Optional[dict[str, Any]]]:
    from nbinit.status import candidate_paths

    for path in candidate_paths(env):
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read(1 << 20))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return path, None
        return path, data if isinstance(data, dict) else None
    return None, None


def _connect_host(host: str) -> str:
    """Where to knock for a server bound to host: loopback for the wildcard addresses."""
    if host in ("", "0.0.0.0"):  # noqa: S104 (the server's bind address, not ours)
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def check(env: dict[str, str]) -> tuple[bool, str]:
    """(ready, one line saying why)."""
    path, data = _read(env)
    if path is None:
        return False, "nbinit has not written its status file yet: still starting"
    if data is None:
        return False, f"status file {path} is unreadable or damaged"
    serving = data.get("serving")
    if not isinstance(serving, dict):
        if data.get("finished"):
            errors = data.get("errors") or ["see the pod log"]
            return False, f"the start failed and nothing serves: {str(errors[0])[:200]}"
        steps = data.get("steps") or [{}]
        return False, f"nbinit is still setting up (last step: {steps[-1].get('name', 'none')})"
    what = str(serving.get("what", "server"))
    pid = int(serving.get("pid") or 0)
    try:
        if pid > 0:
            os.kill(pid, 0)
    except ProcessLookupError:
        return False, f"the {what} (pid {pid}) is gone"
    except PermissionError:
        pass  # it runs as another user: alive
    host, port, _ = service_address(str(serving.get("url") or ""))
    host = _connect_host(host)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return False, f"the {what} (pid {pid}) does not accept connections on {host}:{port}: {why}"
    return True, f"the {what} (pid {pid}) accepts connections on {host}:{port}"


def main() -> int:
    """`nbinit ready`: one line on stdout; exit 0 when ready, else 1."""
    import sys

    ready, why = check(dict(os.environ))
    sys.stdout.write(("ready: " if ready else "not ready: ") + why + "\n")
    return 0 if ready else 1
