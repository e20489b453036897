"""Inside the sandbox as root: a real JupyterHub spawns `nbinit start -- jupyterhub-singleuser`.

Starts the hub (configurable-http-proxy from npm, DummyAuthenticator,
SimpleLocalProcessSpawner), spawns alice's server through the REST API with an admin
service token, waits until the hub reports it ready, then prints one JSON line on stdout
with what the server process really is. The hub's log goes to stderr.

With `--podman IMAGE` it runs on the host instead, on free loopback ports, and spawns
through tests/e2e/podman_spawner.py: the server is a real container (`podman run
--network=host`), read from the host's /proc and with `podman exec`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

TOKEN = "e2e-admin-token-0123456789abcdef"

CONFIG = """
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {ports[0]}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {ports[2]}
c.JupyterHub.db_url = "sqlite:///{work}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{work}/cookie_secret"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports[1]}"
c.ConfigurableHTTPProxy.pid_file = "{work}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.Spawner.cmd = {cmd!r}
c.Spawner.environment = {{"NB_UID": "4321", "NB_GID": "4321"}}
{spawner}
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


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


SIMPLE = 'c.JupyterHub.spawner_class = "simple"'
PODMAN = """
import sys
sys.path.insert(0, {here!r})
from podman_spawner import PodmanSpawner
c.JupyterHub.spawner_class = PodmanSpawner
c.PodmanSpawner.image = {image!r}
c.PodmanSpawner.podman_flags = {flags!r}
c.PodmanSpawner.volumes = [{marker!r} + ":/s/{{username}}/jupyterhub"]
"""


def options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("proxy", help="configurable-http-proxy")
    parser.add_argument("--work", default="/tmp/hub", help="the hub's directory")
    parser.add_argument("--ports", default="8000,8001,8081", help="proxy, proxy API, hub")
    parser.add_argument("--cmd", default="nbinit start -- jupyterhub-singleuser")
    parser.add_argument("--podman", metavar="IMAGE", help="spawn containers of IMAGE")
    parser.add_argument("--podman-flags", default="", help="probed `podman run` flags")
    parser.add_argument("--marker", help="host directory mounted as alice's marker")
    return parser.parse_args(argv)


def observe_process(pid: int) -> dict:
    """The server as a local process (SimpleLocalProcessSpawner), in this sandbox."""
    status = proc_status(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        cmdline = [part.decode() for part in handle.read().split(b"\0") if part]
    with open("/etc/passwd") as handle:
        passwd = [line.strip() for line in handle if line.startswith(("alice:", "jovyan:"))]
    return {
        "pid": pid,
        "uid": status["Uid"].split(),
        "gid": status["Gid"].split(),
        "groups": status["Groups"].split(),
        "cmdline": cmdline,
        "passwd": passwd,
        "home_owner": [os.stat("/home/alice").st_uid, os.stat("/home/alice").st_gid],
    }


def observe_container(name: str, image: str) -> dict:
    """The server inside the container, from the host's /proc and `podman exec`."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from helpers.containers import Container

    container = Container(name, image)
    process = container.wait_for_process(lambda p: p.runs("jupyterhub-singleuser"), 10)
    passwd = container.exec("cat", "/etc/passwd").splitlines()
    owner = container.exec("stat", "-c", "%u %g", "/home/alice").split()
    return {
        "container": name,
        "pid1": container.exec("cat", "/proc/1/comm").strip(),
        "uid": process.uid,
        "gid": process.gid,
        "groups": process.groups,
        "cmdline": process.cmdline,
        "passwd": [line for line in passwd if line.startswith(("alice:", "jovyan:"))],
        "home_owner": [int(owner[0]), int(owner[1])],
    }


def stopped(hub_api: str) -> bool:
    _, user = call("GET", f"{hub_api}/users/alice")
    return not (user.get("servers") or {}).get("")


def main() -> int:
    args = options(sys.argv[1:])
    ports = [int(port) for port in args.ports.split(",")]
    spawner = SIMPLE
    if args.podman:
        here = os.path.dirname(os.path.abspath(__file__))
        flags = args.podman_flags.split()
        spawner = PODMAN.format(here=here, image=args.podman, flags=flags, marker=args.marker)
    os.makedirs(args.work, exist_ok=True)
    config = os.path.join(args.work, "jupyterhub_config.py")
    with open(config, "w") as handle:
        handle.write(
            CONFIG.format(
                chp=args.proxy,
                token=TOKEN,
                ports=ports,
                work=args.work,
                cmd=args.cmd.split(),
                spawner=spawner,
            )
        )
    hub = subprocess.Popen(["jupyterhub", "-f", config], cwd=args.work, stdout=sys.stderr)
    hub_api = f"http://127.0.0.1:{ports[2]}/hub/api"
    proxy = f"http://127.0.0.1:{ports[0]}"
    deadline = time.monotonic() + 90
    try:
        wait_for("the hub API", lambda: call("GET", f"{hub_api}/")[0] == 200, deadline)
        status, _ = call("POST", f"{hub_api}/users/alice")
        assert status in (201, 409), status
        status, body = call("POST", f"{hub_api}/users/alice/server", timeout=50)
        assert status in (201, 202), (status, body)

        def ready() -> bool:
            _, user = call("GET", f"{hub_api}/users/alice")
            server = (user.get("servers") or {}).get("")
            return bool(server and server.get("ready"))

        wait_for("alice's server to be ready", ready, deadline)
        _, user = call("GET", f"{hub_api}/users/alice")
        server = user["servers"][""]
        api_status, api = call("GET", f"{proxy}{server['url']}api")
        if args.podman:
            report = observe_container(f"nbinit-hub-{hub.pid}-alice", args.podman)
        else:
            report = observe_process(int(server["state"]["pid"]))
        report.update(
            ready=server["ready"], server_api_status=api_status, server_version=api.get("version")
        )
        status, _ = call("DELETE", f"{hub_api}/users/alice/server", timeout=30)
        if args.podman:
            wait_for("alice's server to stop", lambda: stopped(hub_api), deadline + 30)
            gone = subprocess.run(["podman", "container", "exists", report["container"]])
            report["container_removed"] = gone.returncode == 1
        print(json.dumps(report), flush=True)
        return 0
    finally:
        hub.terminate()
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()


if __name__ == "__main__":
    sys.exit(main())
