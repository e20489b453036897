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
"""

from __future__ import annotations

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


def main() -> int:
    chp = sys.argv[1]
    scenario = sys.argv[2] if len(sys.argv) > 2 else "spawn"
    cmd, environment, http_timeout = SCENARIOS[scenario]
    os.makedirs("/tmp/hub", exist_ok=True)
    with open("/tmp/hub/jupyterhub_config.py", "w") as handle:
        config = hub_config(
            chp=chp, cmd=cmd, work="/tmp/hub", environment=environment, http_timeout=http_timeout
        )
        handle.write(config)
    hub = subprocess.Popen(
        ["jupyterhub", "-f", "/tmp/hub/jupyterhub_config.py"], cwd="/tmp/hub", stdout=sys.stderr
    )
    deadline = time.monotonic() + 50
    try:
        wait_for("the hub API", lambda: call("GET", f"{HUB_API}/")[0] == 200, deadline)
        status, _ = call("POST", f"{HUB_API}/users/alice")
        assert status in (201, 409), status
        spawned = time.monotonic()
        status, body = call("POST", f"{HUB_API}/users/alice/server", timeout=50)
        assert status in (201, 202), (status, body)
        if scenario == "cancel":
            print(json.dumps(cancel_pending(status)), flush=True)
            return 0

        wait_for("alice's server to be ready", lambda: server_model().get("ready"), deadline)
        if scenario == "fatal":
            print(json.dumps(failure_page(spawned)), flush=True)
            return 0
        _, user = call("GET", f"{HUB_API}/users/alice")
        server = user["servers"][""]
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
    finally:
        hub.terminate()
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()


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
