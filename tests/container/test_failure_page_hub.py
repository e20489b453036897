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
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from helpers import images
from helpers.containers import Container
from helpers.hubconfig import PROXY, hub_config, hub_missing, podman_spawner, running_hub
from helpers.net import free_port, request


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
    missing = hub_missing(Path(sys.executable).parent.parent)
    if missing:
        pytest.skip(missing)
    tag = image(family)
    name = f"nbinit-e2e-fatal-{os.getpid()}"
    marker = tmp_path / "marker"
    marker.mkdir()
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")
    spawner = podman_spawner(
        tag,
        name=name,
        flags=images.podman_run_flags(),
        volumes=[f"{marker}:/s/alice/jupyterhub", f"{termination_log}:/dev/termination-log"],
        remove=False,  # the test reads the exited container's state
    )
    ports = (free_port(), free_port(), free_port())  # proxy, proxy API, hub
    config = hub_config(
        chp=str(PROXY),
        cmd=COMMANDS[family],
        work=str(tmp_path),
        environment={"JUPYTER_IMAGE_SPEC": tag},
        ports=ports,
        start_timeout=120,
        http_timeout=120,
        poll_interval=1,
        spawner=spawner,
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    container = Container(name, tag)
    hub_running = running_hub(
        config, tmp_path, ports, log=tmp_path / "hub.log", env=env, stop_timeout=15
    )
    try:
        with hub_running as hub:
            check_the_page_and_the_stop(hub, container, family, tag, termination_log)
    finally:
        container.remove()


def check_the_page_and_the_stop(hub, container, family, tag, termination_log) -> None:
    """The page through the proxy, who serves it, the readiness probe, then the SIGTERM."""
    hub.spawn("alice")  # the POST waits up to the hub's slow_spawn_timeout (10 s)
    hub.wait_ready("alice", timeout=120, interval=0.05)
    page = request(f"{hub.proxy}/user/alice/", timeout=10)
    answered = time.time()
    api_status = request(f"{hub.proxy}/user/alice/api/status", timeout=10).json()
    took = answered - podman_time(container.state()["StartedAt"])
    print(f"{family}: container start to the page answering through the proxy: {took:.2f}s")
    # The page says what the FATAL line says: the problem, then the fix.
    fatal = container.lines("FATAL")[0].split("nbinit: ", 1)[1]
    assert page.status == 200
    assert "Your server did not start" in page.text(), page
    assert f"{api_status['reason']}: {api_status['fix']}" == fatal
    assert html.escape(api_status["reason"]) in page.text()
    assert html.escape(api_status["fix"]) in page.text()
    assert tag in page.text()  # the image, from JUPYTER_IMAGE_SPEC
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
    hub.wait_gone("alice", timeout=30)
