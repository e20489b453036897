"""A real JupyterHub on loopback for tests: its config file and an admin REST call.

Used by tests/e2e/hub_driver.py (inside a sandbox with its own network, fixed ports) and
by tests/container (on the host's loopback, free ports, a podman spawner).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Optional

TOKEN = "e2e-admin-token-0123456789abcdef"

CONFIG = """
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{work}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{work}/cookie_secret"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.pid_file = "{work}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = {cmd!r}
c.Spawner.environment = {environment!r}
c.Spawner.start_timeout = {start_timeout!r}
c.Spawner.http_timeout = {http_timeout!r}
c.Spawner.poll_interval = {poll_interval!r}
c.JupyterHub.services = [{{"name": "e2e", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "e2e-admin",
        "scopes": ["admin:users", "admin:servers", "admin:server_state", "access:servers"],
        "services": ["e2e"],
    }}
]
"""


def hub_config(
    *,
    chp: str,
    cmd: list[str],
    work: str,
    environment: Optional[dict[str, str]] = None,
    ports: tuple[int, int, int] = (8000, 8001, 8081),
    start_timeout: float = 45,
    http_timeout: float = 45,
    poll_interval: float = 30,
) -> str:
    """jupyterhub_config.py: SimpleLocalProcessSpawner running cmd, DummyAuthenticator,
    an admin service token; ports are (proxy, proxy API, hub)."""
    proxy_port, api_port, hub_port = ports
    return CONFIG.format(
        chp=chp,
        cmd=cmd,
        work=work,
        environment=environment or {},
        proxy_port=proxy_port,
        api_port=api_port,
        hub_port=hub_port,
        start_timeout=start_timeout,
        http_timeout=http_timeout,
        poll_interval=poll_interval,
        token=TOKEN,
    )


def call(method: str, url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """One REST call with the admin service token: (status, JSON body or {})."""
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": f"token {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read()
            return response.status, json.loads(body) if body.strip() else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode("utf-8", "replace")[:300]}
