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
spawns through tests/e2e/podman_spawner.py: the server is a real container (`podman run
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from helpers.hubconfig import call, hub_config  # noqa: E402 (run as a script)

# Fixed ports in a sandbox with its own network; main() sets them from --ports.
HUB_API = "http://127.0.0.1:8081/hub/api"
PROXY = "http://127.0.0.1:8000"


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


SERVER_CMD = ["nbinit", "start", "--", "jupyterhub-singleuser"]
SCENARIOS = {
    # scenario: (Spawner.cmd, Spawner.environment, Spawner.http_timeout)
    "spawn": (SERVER_CMD, {"NB_UID": "4321", "NB_GID": "4321"}, 45),
    "fatal": (SERVER_CMD, {}, 45),
    "cancel": (["sleep", "600"], {}, 300),
}


def server_model() -> dict:
    _, user = call("GET", f"{HUB_API}/users/alice")
    return (user.get("servers") or {}).get("") or {}


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
    parser.add_argument("scenario", nargs="?", default="spawn", choices=sorted(SCENARIOS))
    parser.add_argument("--work", default="/tmp/hub", help="the hub's directory")
    parser.add_argument("--ports", default="8000,8001,8081", help="proxy, proxy API, hub")
    parser.add_argument("--cmd", help="the server command (default: the scenario's)")
    parser.add_argument("--podman", metavar="IMAGE", help="spawn containers of IMAGE")
    parser.add_argument("--podman-flags", default="", help="probed `podman run` flags")
    parser.add_argument("--marker", help="host directory mounted as alice's marker")
    return parser.parse_args(argv)


def main() -> int:
    global HUB_API, PROXY
    args = options(sys.argv[1:])
    cmd, environment, http_timeout = SCENARIOS[args.scenario]
    if args.cmd:
        cmd = args.cmd.split()
    ports = tuple(int(port) for port in args.ports.split(","))
    PROXY, HUB_API = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[2]}/hub/api"
    spawner = ""
    if args.podman:
        here = os.path.dirname(os.path.abspath(__file__))
        flags = args.podman_flags.split()
        spawner = PODMAN.format(here=here, image=args.podman, flags=flags, marker=args.marker)
    os.makedirs(args.work, exist_ok=True)
    config_path = os.path.join(args.work, "jupyterhub_config.py")
    with open(config_path, "w") as handle:
        config = hub_config(
            chp=args.proxy,
            cmd=cmd,
            work=args.work,
            environment=environment,
            http_timeout=http_timeout,
            ports=ports,
            spawner=spawner,
        )
        handle.write(config)
    hub = subprocess.Popen(["jupyterhub", "-f", config_path], cwd=args.work, stdout=sys.stderr)
    deadline = time.monotonic() + (90 if args.podman else 50)
    try:
        wait_for("the hub API", lambda: call("GET", f"{HUB_API}/")[0] == 200, deadline)
        status, _ = call("POST", f"{HUB_API}/users/alice")
        assert status in (201, 409), status
        spawned = time.monotonic()
        status, body = call("POST", f"{HUB_API}/users/alice/server", timeout=50)
        assert status in (201, 202), (status, body)
        if args.scenario == "cancel":
            print(json.dumps(cancel_pending(status)), flush=True)
            return 0

        wait_for("alice's server to be ready", lambda: server_model().get("ready"), deadline)
        if args.scenario == "fatal":
            print(json.dumps(failure_page(spawned)), flush=True)
            return 0
        _, user = call("GET", f"{HUB_API}/users/alice")
        server = user["servers"][""]
        api_status, api = call("GET", f"{PROXY}{server['url']}api")
        if args.podman:
            report = observe_container(f"nbinit-hub-{hub.pid}-alice", args.podman)
        else:
            report = observe_process(int(server["state"]["pid"]))
        report.update(
            ready=server["ready"], server_api_status=api_status, server_version=api.get("version")
        )
        status, _ = call("DELETE", f"{HUB_API}/users/alice/server", timeout=30)
        if args.podman:
            wait_for("alice's server to stop", lambda: not server_model(), deadline + 30)
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


def failure_page(spawned: float) -> dict:
    """The hub marked the server ready: where a browser ends up, and what it shows."""
    ready_after = time.monotonic() - spawned
    server = server_model()
    pid = int(server["state"]["pid"])
    ids = proc_status(pid)
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(f"{PROXY}/hub/login", timeout=10) as response:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', response.read().decode()).group(1)
    form = urllib.parse.urlencode({"username": "alice", "password": "x", "_xsrf": xsrf})
    with browser.open(f"{PROXY}/hub/login?next=", data=form.encode(), timeout=10) as response:
        response.read()
    # What the hub's home page "Start My Server" / a bookmark does: the hub redirects.
    with browser.open(f"{PROXY}/hub/user/alice/", timeout=10) as response:
        landed, landed_status, page = response.url, response.status, response.read().decode()
    with browser.open(f"{PROXY}/user/alice/api/status", timeout=10) as response:
        api = json.loads(response.read())
    page_url = f"{PROXY}/user/alice/"
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
    stop_status, _ = call("DELETE", f"{HUB_API}/users/alice/server", timeout=20)
    wait_for("the server to stop", lambda: not server_model(), time.monotonic() + 15)
    return {
        "ready_after": round(ready_after, 2),
        "uid": ids["Uid"].split(),
        "groups": ids["Groups"].split(),
        "landed": landed,
        "landed_status": landed_status,
        "page": page,
        "api": api,
        "dom": dom.stdout,
        "chromium_rc": [dom.returncode, picture.returncode],
        "chromium_err": (dom.stderr + picture.stderr)[-2000:],
        "screenshot": shot if os.path.exists(shot) else "",
        "stop_status": stop_status,
        "stopped_after": round(time.monotonic() - stopping, 2),
        "process_gone": not os.path.exists(f"/proc/{pid}"),
    }


def cancel_pending(spawn_status: int) -> dict:
    """The command hangs, so the spawn stays pending; the admin's REST call stops it."""
    pending = server_model().get("pending")
    pid = 0
    until = time.monotonic() + 10
    while not pid and time.monotonic() < until:  # the hub records the pid once it started
        pid = int((server_model().get("state") or {}).get("pid") or 0)
        time.sleep(0.1)
    stopping = time.monotonic()
    status, _ = call("DELETE", f"{HUB_API}/users/alice/server", timeout=30)
    wait_for("the pending server to go", lambda: not server_model(), time.monotonic() + 30)
    return {
        "spawn_status": spawn_status,
        "pending": pending,
        "pid": pid,
        "delete_status": status,
        "stopped_after": round(time.monotonic() - stopping, 2),
        "process_gone": bool(pid) and not os.path.exists(f"/proc/{pid}"),
        "hub_version": call("GET", f"{HUB_API}/")[1].get("version"),
    }


if __name__ == "__main__":
    sys.exit(main())
