"""A real JupyterHub spawns a real container that hits a FATAL: the user gets the failure page.

The hub runs on the host's loopback (configurable-http-proxy, DummyAuthenticator) and its
spawner runs `podman run --network=host --user 0 ... IMAGE jupyterhub-singleuser`, passing
the hub's JUPYTERHUB_* environment through, as KubeSpawner's pod would get it: alice's
marker bind-mounted, no NB_UID from the hub, and a host file bind-mounted at
/dev/termination-log. The docker-stacks image (tini -g -- start.sh, nbinit's
start-notebook.d hook) carries docker-stacks' own `ENV NB_UID=1000 NB_GID=100`, so its
FATAL is about those; plain-python (nbinit is PID 1) fails on the missing NB_UID.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from helpers import images
from helpers.containers import Container, free_port
from helpers.hubconfig import call, hub_config

PROJECT = Path(__file__).resolve().parents[2]
PROXY = PROJECT / "node_modules" / ".bin" / "configurable-http-proxy"


def wait_for(what: str, check, timeout: float, log: Path):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            found = check()
            if found:
                return found
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; hub log:\n{log.read_text()[-5000:]}")


def podman_time(raw: str) -> float:
    """A podman state time (2026-12-01T22:45:01.123456789Z, UTC) as a wall-clock float."""
    head, _, rest = raw.partition(".")
    fraction = "".join(ch for ch in rest.split("+")[0].split("-")[0] if ch.isdigit())[:6]
    return datetime.fromisoformat(f"{head}.{fraction or '0'}+00:00").timestamp()


COMMANDS = {
    "docker-stacks": ["jupyterhub-singleuser"],
    "plain-python": ["nbinit", "start", "--", "jupyterhub-singleuser"],
}


@pytest.mark.parametrize("family", sorted(COMMANDS))
def test_a_fatal_in_a_real_container_under_a_real_hub_shows_the_page_and_ends_cleanly(
    image, tmp_path, family
):
    if not PROXY.exists() or not shutil.which("node"):
        pytest.skip(f"configurable-http-proxy is not installed at {PROXY} (run scripts/setup.sh)")
    tag = image(family)
    name = f"nbinit-e2e-fatal-{os.getpid()}"
    marker = tmp_path / "marker"
    marker.mkdir()
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")
    cmd = [
        "podman",
        "run",
        f"--name={name}",
        "--network=host",
        *images.podman_run_flags(),
        "--user=0",
        "--env=JUPYTERHUB_*",
        "--env=JPY_API_TOKEN",
        f"--env=JUPYTER_IMAGE_SPEC={tag}",
        f"--volume={marker}:/s/alice/jupyterhub",
        f"--volume={termination_log}:/dev/termination-log",
        tag,
        *COMMANDS[family],
    ]
    proxy_port, api_port, hub_port = free_port(), free_port(), free_port()
    (tmp_path / "jupyterhub_config.py").write_text(
        hub_config(
            chp=str(PROXY),
            cmd=cmd,
            work=str(tmp_path),
            ports=(proxy_port, api_port, hub_port),
            start_timeout=120,
            http_timeout=120,
            poll_interval=1,
        )
    )
    hub_log = tmp_path / "hub.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with hub_log.open("w") as log:
        hub = subprocess.Popen(
            ["jupyterhub", "-f", str(tmp_path / "jupyterhub_config.py")],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    api = f"http://127.0.0.1:{hub_port}/hub/api"
    public = f"http://127.0.0.1:{proxy_port}"
    container = Container(name, tag)
    try:
        wait_for("the hub API", lambda: call("GET", f"{api}/")[0] == 200, 60, hub_log)
        assert call("POST", f"{api}/users/alice")[0] in (201, 409)
        status, _ = call("POST", f"{api}/users/alice/server")
        assert status in (201, 202)

        def server() -> dict:
            return (call("GET", f"{api}/users/alice")[1].get("servers") or {}).get("") or {}

        wait_for("alice's server to be ready", lambda: server().get("ready"), 120, hub_log)
        with urllib.request.urlopen(f"{public}/user/alice/", timeout=10) as response:
            page_status, page = response.status, response.read().decode()
        answered = time.time()
        with urllib.request.urlopen(f"{public}/user/alice/api/status", timeout=10) as response:
            api_status = json.loads(response.read())
        took = answered - podman_time(container.state()["StartedAt"])
        print(f"{family}: container start to the page answering through the proxy: {took:.2f}s")

        # The page says what the FATAL line says: the problem, then the fix.
        fatal = container.lines("FATAL")[0].split("nbinit: ", 1)[1]
        assert page_status == 200
        assert "Your server did not start" in page, page
        assert f"{api_status['reason']}: {api_status['fix']}" == fatal
        assert html.escape(api_status["reason"]) in page and html.escape(api_status["fix"]) in page
        assert tag in page  # the image, from JUPYTER_IMAGE_SPEC
        assert api_status["nbinit"] == "failed"
        if family == "plain-python":
            assert api_status["reason"].startswith("NB_UID is not set, but the marker")

        # Served by nobody: the process that listens is nbinit, dropped to 65534.
        serving = [p for p in container.processes() if any("nbinit" in a for a in p.cmdline)]
        assert serving, [p.cmdline for p in container.processes()]
        assert {tuple(p.uid) for p in serving} == {("65534",) * 4}, serving

        # The readinessProbe's answer, as the kubelet runs it (exec, here as jovyan): ready,
        # so KubeSpawner hands the pod to the hub and the user reaches the page.
        probe = container.exec("nbinit", "ready", user="1000")
        assert probe.startswith("ready: the failure page (pid "), probe

        # What `podman stop` does: SIGTERM to the container's PID 1, then wait. Sent here
        # directly, so podman's own start-up (0.1-1.5 s on a loaded machine) is not counted.
        pid1 = container.host_pid()
        stopping = time.time()
        os.kill(pid1, signal.SIGTERM)
        exit_code = container.wait_exit(timeout=30)
        finished = podman_time(container.state()["FinishedAt"])
        took = finished - stopping
        print(f"{family}: SIGTERM (as podman stop sends it) to exit 0: {took:.2f}s")
        assert exit_code == 0, container.logs()[-3000:]
        assert took < 1.0
        assert termination_log.read_text() == f"FATAL nbinit: {fatal}\n"
        # The hub notices the stop: alice can start again without an admin.
        wait_for("the hub to see the server stopped", lambda: not server(), 30, hub_log)
    finally:
        hub.terminate()
        try:
            hub.wait(15)
        except subprocess.TimeoutExpired:
            hub.kill()
        container.remove()
