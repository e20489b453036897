"""Inside the sandbox as root: a real JupyterHub spawns `nbinit start -- jupyterhub-singleuser`.

Starts the hub (configurable-http-proxy from npm, DummyAuthenticator,
SimpleLocalProcessSpawner), spawns alice's server through the REST API with an admin
service token, and prints one JSON line on stdout with what it saw. The hub's log goes to
stderr. Scenarios (second argument):

- `spawn` (default): waits until the hub reports the server ready; what the server process
  really is.
- `fatal`: alice has a marker but the hub sends no NB_UID: nbinit's failure page. Logs in
  as alice like a browser, follows the hub's redirect to the server, loads the page
  through the proxy in headless chromium (DOM and a screenshot), then stops the server.
- `cancel`: the server's command hangs; the admin cancels the pending spawn with
  `DELETE /hub/api/users/alice/server` (JupyterHub >= 5.1).

With `--podman IMAGE` it runs on the host instead, on free loopback ports (`--ports`), and
spawns through tests/helpers/podman_spawner.py: the server is a real container (`podman run
--network=host`), read from the host's /proc and with `podman exec`.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from helpers.hubconfig import Hub, call, hub_config, podman_spawner, running_hub  # noqa: E402
from helpers.net import request  # noqa: E402 (run as a script)


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


SERVER_CMD = ["nbinit", "start", "--", "jupyterhub-singleuser"]
SCENARIOS = {
    # scenario: (Spawner.cmd, Spawner.environment, Spawner.http_timeout)
    "spawn": (SERVER_CMD, {"NB_UID": "4321", "NB_GID": "4321"}, 45),
    "fatal": (SERVER_CMD, {}, 45),
    "cancel": (["sleep", "600"], {}, 300),
}


def options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("proxy", help="configurable-http-proxy")
    parser.add_argument("scenario", nargs="?", default="spawn", choices=sorted(SCENARIOS))
    parser.add_argument("--work", default="/tmp/hub", help="the hub's directory")
    parser.add_argument("--ports", default="8000,8001,8081", help="proxy, proxy API, hub")
    parser.add_argument("--cmd", help="the server command (default: the scenario's)")
    parser.add_argument("--podman", metavar="IMAGE", help="spawn containers of IMAGE")
    parser.add_argument("--podman-flags", default="", help="probed `podman run` flags")
    parser.add_argument("--marker", help="host directory mounted as alice's marker")
    return parser.parse_args(argv)


def main() -> int:
    args = options(sys.argv[1:])
    cmd, environment, http_timeout = SCENARIOS[args.scenario]
    if args.cmd:
        cmd = args.cmd.split()
    ports = tuple(int(port) for port in args.ports.split(","))
    assert len(ports) == 3, args.ports
    container = f"nbinit-hub-{os.getpid()}-alice"
    spawner = ""
    if args.podman:
        spawner = podman_spawner(
            args.podman,
            name=container,
            flags=args.podman_flags.split(),
            volumes=[f"{args.marker}:/s/{{username}}/jupyterhub"],
        )
    config = hub_config(
        chp=args.proxy,
        cmd=cmd,
        work=args.work,
        environment=environment,
        http_timeout=http_timeout,
        ports=ports,
        spawner=spawner,
    )
    timeout = 90 if args.podman else 50
    deadline = time.monotonic() + timeout
    with running_hub(config, Path(args.work), ports, api_timeout=timeout) as hub:
        spawned = time.monotonic()
        status = hub.spawn("alice", request_timeout=50)
        if args.scenario == "cancel":
            print(json.dumps(cancel_pending(hub, status)), flush=True)
            return 0

        server = hub.wait_ready("alice", timeout=deadline - time.monotonic())
        if args.scenario == "fatal":
            print(json.dumps(failure_page(hub, spawned)), flush=True)
            return 0
        api_status, api = call("GET", f"{hub.proxy}{server['url']}api")
        if args.podman:
            report = observe_container(container, args.podman)
        else:
            report = observe_process(int(server["state"]["pid"]))
        report.update(
            ready=server["ready"], server_api_status=api_status, server_version=api.get("version")
        )
        hub.call("DELETE", "/users/alice/server", timeout=30)
        if args.podman:
            hub.wait_gone("alice", timeout=deadline + 30 - time.monotonic())
            gone = subprocess.run(["podman", "container", "exists", report["container"]])
            report["container_removed"] = gone.returncode == 1
        print(json.dumps(report), flush=True)
        return 0


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


def failure_page(hub: Hub, spawned: float) -> dict:
    """The hub marked the server ready: where a browser ends up, and what it shows."""
    ready_after = time.monotonic() - spawned
    server = hub.server()
    pid = int(server["state"]["pid"])
    ids = proc_status(pid)
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = request(f"{hub.proxy}/hub/login", opener=browser, timeout=10)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', login.text()).group(1)
    form = urllib.parse.urlencode({"username": "alice", "password": "x", "_xsrf": xsrf})
    request(f"{hub.proxy}/hub/login?next=", "POST", data=form.encode(), opener=browser, timeout=10)
    # What the hub's home page "Start My Server" / a bookmark does: the hub redirects.
    landed = request(f"{hub.proxy}/hub/user/alice/", opener=browser, timeout=10)
    api = request(f"{hub.proxy}/user/alice/api/status", opener=browser, timeout=10).json()
    page_url = f"{hub.proxy}/user/alice/"
    chromium = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--user-data-dir=/tmp/chromium-profile",
    ]
    shot = "/var/tmp/failure-page.png"
    dom = subprocess.run(
        [*chromium, "--dump-dom", page_url], capture_output=True, text=True, timeout=60
    )
    picture = subprocess.run(
        [*chromium, "--window-size=1024,768", f"--screenshot={shot}", page_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    stopping = time.monotonic()
    stop_status, _ = hub.call("DELETE", "/users/alice/server", timeout=20)
    hub.wait_gone("alice", timeout=15)
    return {
        "ready_after": round(ready_after, 2),
        "uid": ids["Uid"].split(),
        "groups": ids["Groups"].split(),
        "landed": landed.url,
        "landed_status": landed.status,
        "page": landed.text(),
        "api": api,
        "dom": dom.stdout,
        "chromium_rc": [dom.returncode, picture.returncode],
        "chromium_err": (dom.stderr + picture.stderr)[-2000:],
        "screenshot": shot if os.path.exists(shot) else "",
        "stop_status": stop_status,
        "stopped_after": round(time.monotonic() - stopping, 2),
        "process_gone": not os.path.exists(f"/proc/{pid}"),
    }


def cancel_pending(hub: Hub, spawn_status: int) -> dict:
    """The command hangs, so the spawn stays pending; the admin's REST call stops it."""
    pending = hub.server().get("pending")
    pid = hub.wait(  # the hub records the pid once it started the command
        "the pending server's pid",
        lambda: int((hub.server().get("state") or {}).get("pid") or 0),
        timeout=10,
        interval=0.1,
    )
    stopping = time.monotonic()
    status, _ = hub.call("DELETE", "/users/alice/server", timeout=30)
    hub.wait_gone("alice", timeout=30)
    return {
        "spawn_status": spawn_status,
        "pending": pending,
        "pid": pid,
        "delete_status": status,
        "stopped_after": round(time.monotonic() - stopping, 2),
        "process_gone": bool(pid) and not os.path.exists(f"/proc/{pid}"),
        "hub_version": hub.call("GET", "/")[1].get("version"),
    }


if __name__ == "__main__":
    sys.exit(main())
