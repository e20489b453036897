"""Inside the sandbox as root: a real JupyterHub spawns `nbinit start -- jupyterhub-singleuser`.

Starts the hub (configurable-http-proxy from npm, DummyAuthenticator,
SimpleLocalProcessSpawner), spawns alice's server through the REST API with an admin
service token, waits until the hub reports it ready, then prints one JSON line on stdout
with what the server process really is. The hub's log goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

TOKEN = "e2e-admin-token-0123456789abcdef"
HUB_API = "http://127.0.0.1:8081/hub/api"
PROXY = "http://127.0.0.1:8000"

CONFIG = """
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = 8000
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = 8081
c.JupyterHub.db_url = "sqlite:////tmp/hub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/tmp/hub/cookie_secret"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
c.ConfigurableHTTPProxy.pid_file = "/tmp/hub/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = ["nbinit", "start", "--", "jupyterhub-singleuser"]
c.Spawner.environment = {{"NB_UID": "4321", "NB_GID": "4321"}}
c.Spawner.start_timeout = 45
c.Spawner.http_timeout = 45
c.JupyterHub.services = [{{"name": "e2e", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "e2e-admin",
        "scopes": ["admin:users", "admin:servers", "admin:server_state", "access:servers"],
        "services": ["e2e"],
    }}
]
"""


def call(method: str, url: str, timeout: float = 5.0) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": f"token {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            return response.status, json.loads(body) if body.strip() else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode("utf-8", "replace")[:300]}


def wait_for(what: str, check, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"hub_driver: timed out waiting for {what}")


@contextlib.contextmanager
def running_hub(config: str) -> Iterator[subprocess.Popen]:
    """JupyterHub with this config in /tmp/hub, its log on stderr; stopped on the way out."""
    os.makedirs("/tmp/hub", exist_ok=True)
    with open("/tmp/hub/jupyterhub_config.py", "w") as handle:
        handle.write(config)
    hub = subprocess.Popen(
        ["jupyterhub", "-f", "/tmp/hub/jupyterhub_config.py"], cwd="/tmp/hub", stdout=sys.stderr
    )
    try:
        yield hub
    finally:
        hub.terminate()
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()


def spawn_until_ready(name: str, deadline: float) -> dict:
    """Once the hub's API answers: create the user, start the server, wait for ready; its model."""
    wait_for("the hub API", lambda: call("GET", f"{HUB_API}/")[0] == 200, deadline)
    status, _ = call("POST", f"{HUB_API}/users/{name}")
    assert status in (201, 409), status
    status, body = call("POST", f"{HUB_API}/users/{name}/server", timeout=50)
    assert status in (201, 202), (status, body)

    def server() -> dict:
        _, user = call("GET", f"{HUB_API}/users/{name}")
        return (user.get("servers") or {}).get("") or {}

    wait_for(f"{name}'s server to be ready", lambda: server().get("ready"), deadline)
    return server()


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def main() -> int:
    chp = sys.argv[1]
    with running_hub(CONFIG.format(chp=chp, token=TOKEN)):
        server = spawn_until_ready("alice", time.monotonic() + 50)
        pid = int(server["state"]["pid"])
        status = proc_status(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = [part.decode() for part in handle.read().split(b"\0") if part]
        api_status, api = call("GET", f"{PROXY}{server['url']}api")
        with open("/etc/passwd") as handle:
            passwd = [line.strip() for line in handle if line.startswith(("alice:", "jovyan:"))]
        report = {
            "ready": server["ready"],
            "pid": pid,
            "uid": status["Uid"].split(),
            "gid": status["Gid"].split(),
            "groups": status["Groups"].split(),
            "cmdline": cmdline,
            "server_api_status": api_status,
            "server_version": api.get("version"),
            "passwd": passwd,
            "home_owner": [os.stat("/home/alice").st_uid, os.stat("/home/alice").st_gid],
        }
        call("DELETE", f"{HUB_API}/users/alice/server", timeout=20)
        print(json.dumps(report), flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
