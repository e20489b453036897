"""A real JupyterHub on loopback for tests: its config file, the hub process, admin REST calls.

Used by tests/e2e/hub_driver.py and singleuser_driver.py (inside a sandbox with its own
network, fixed ports) and by tests/container (on the host's loopback, free ports, the podman
spawner of tests/helpers/podman_spawner.py). Stdlib only: the drivers import it in the
sandbox.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from helpers.net import request
from helpers.wait import stop_process, wait_until

T = TypeVar("T")
TESTS = Path(__file__).resolve().parents[1]
PROXY = TESTS.parent / "node_modules" / ".bin" / "configurable-http-proxy"


def hub_missing(venv: Path) -> str:
    """Why a real hub from venv cannot run here (the reason to skip), or ""."""
    if not PROXY.exists():
        return f"configurable-http-proxy is not installed at {PROXY} (run scripts/setup.sh)"
    if not shutil.which("node"):
        return "node is not installed (configurable-http-proxy needs it)"
    for tool in ("jupyterhub", "jupyterhub-singleuser"):
        if not (venv / "bin" / tool).exists():
            return f"{tool} is not in {venv}/bin (scripts/setup.sh installs it)"
    return ""


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
{spawner}
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
    spawner: str = "",
) -> str:
    """jupyterhub_config.py: SimpleLocalProcessSpawner running cmd, DummyAuthenticator,
    an admin service token; ports are (proxy, proxy API, hub). spawner: config lines that
    replace the spawner (the podman one)."""
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
        spawner=spawner,
    )


PODMAN_SPAWNER = """
import sys
sys.path.insert(0, {tests!r})
from helpers.podman_spawner import PodmanSpawner
c.JupyterHub.spawner_class = PodmanSpawner
c.PodmanSpawner.image = {image!r}
c.PodmanSpawner.podman_flags = {flags!r}
c.PodmanSpawner.volumes = {volumes!r}
c.PodmanSpawner.name_template = {name!r}
c.PodmanSpawner.remove = {remove!r}
"""


def podman_spawner(
    image: str, *, name: str, flags: list[str], volumes: list[str], remove: bool = True
) -> str:
    """hub_config's `spawner` lines for tests/helpers/podman_spawner.py: each server is
    `podman run --network=host --user 0` of image with the hub's environment, as KubeSpawner
    starts a pod. name: the container's ({username}, {pid} of the hub); volumes may name
    {username}; remove=False keeps the exited container for the test to inspect."""
    return PODMAN_SPAWNER.format(
        tests=str(TESTS), image=image, flags=flags, volumes=volumes, name=name, remove=remove
    )


def hub_env(user: str, api_url: str, port: int, token: str = "test-api-token") -> dict[str, str]:
    """The environment a JupyterHub spawner gives a single-user server (Spawner.get_env)."""
    prefix = f"/user/{user}/"
    return {
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_API_TOKEN": token,
        "JPY_API_TOKEN": token,
        "JUPYTERHUB_API_URL": api_url,
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
        "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_OAUTH_SCOPES": json.dumps([f"access:servers!server={user}/"]),
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([f"access:servers!server={user}/"]),
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
    }


def call(method: str, url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """One REST call with the admin service token: (status, JSON body or {})."""
    answer = request(url, method, timeout=timeout, headers={"Authorization": f"token {TOKEN}"})
    if answer.status >= 400:
        return answer.status, {"error": answer.text()[:300]}
    return answer.status, answer.json() if answer.body.strip() else {}


class Hub:
    """A running hub, seen through its admin REST API (ports: proxy, proxy API, hub)."""

    def __init__(self, ports: tuple[int, int, int], log: Optional[Path] = None) -> None:
        self.proxy = f"http://127.0.0.1:{ports[0]}"
        self.api = f"http://127.0.0.1:{ports[2]}/hub/api"
        self.log = log

    def call(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        return call(method, f"{self.api}{path}", timeout)

    def log_tail(self) -> str:
        if self.log is None:
            return "(the hub's log is on stderr)"
        return f"the hub's log:\n{self.log.read_text(errors='replace')[-6000:]}"

    def wait(self, what: str, observe: Callable[[], T], done: Callable[[T], object] = bool,
             *, timeout: float, interval: float = 0.25) -> T:  # fmt: skip
        """wait_until, failing with the hub's log."""
        return wait_until(
            what, observe, done, timeout=timeout, interval=interval, context=self.log_tail
        )

    def server(self, user: str = "alice") -> dict[str, Any]:
        """The user's default server model; {} when it has none."""
        _, model = self.call("GET", f"/users/{user}")
        return (model.get("servers") or {}).get("") or {}

    def spawn(self, user: str = "alice", *, request_timeout: float = 50) -> int:
        """Create the user and ask for their server: the POST's status (201 or 202)."""
        status, _ = self.call("POST", f"/users/{user}")
        assert status in (201, 409), status
        status, body = self.call("POST", f"/users/{user}/server", timeout=request_timeout)
        assert status in (201, 202), (status, body)
        return status

    def wait_ready(
        self, user: str = "alice", *, timeout: float, interval: float = 0.25
    ) -> dict[str, Any]:
        """The user's server model once the hub says it is ready."""
        return self.wait(
            f"{user}'s server to be ready",
            lambda: self.server(user),
            lambda model: model.get("ready"),
            timeout=timeout,
            interval=interval,
        )

    def wait_gone(self, user: str = "alice", *, timeout: float) -> None:
        """Until the hub has no server for the user (stopped, or a pending spawn cancelled)."""
        self.wait(
            f"{user}'s server to go", lambda: self.server(user), lambda model: not model,
            timeout=timeout,
        )  # fmt: skip


@contextmanager
def running_hub(
    config: str,
    work: Path,
    ports: tuple[int, int, int],
    *,
    jupyterhub: str = "jupyterhub",
    log: Optional[Path] = None,
    env: Optional[dict[str, str]] = None,
    api_timeout: float = 60,
    stop_timeout: float = 10,
) -> Iterator[Hub]:
    """Write config into work, start the hub there, wait for its API, and stop it after.

    Its output goes to `log` (then a failed wait shows its tail) or to this stderr."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "jupyterhub_config.py").write_text(config)
    hub = Hub(ports, log)
    output = log.open("w") if log is not None else sys.stderr
    try:
        process = subprocess.Popen(
            [jupyterhub, "-f", str(work / "jupyterhub_config.py")],
            cwd=work,
            stdout=output,
            stderr=subprocess.STDOUT if log is not None else None,
            env=env,
        )
    finally:
        if log is not None:
            output.close()
    try:
        hub.wait("the hub API", lambda: hub.call("GET", "/")[0], lambda s: s == 200,
                 timeout=api_timeout)  # fmt: skip
        yield hub
    finally:
        stop_process(process, stop_timeout)
