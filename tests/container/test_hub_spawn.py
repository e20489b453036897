"""A real JupyterHub on loopback spawns real containers through podman.

tests/e2e/hub_driver.py runs the hub on the host (free loopback ports) with
tests/e2e/podman_spawner.py: each server is `podman run --network=host --user 0 ...` of the
image plus the one COPY line, with the hub's environment, NB_UID/NB_GID and the marker
volume, as KubeSpawner starts a pod. The hub must see the server ready, the server must run
as alice's own account, and stopping it through the hub must remove the container.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import images
from helpers.hubconfig import PROXY, hub_missing
from helpers.net import free_port
from helpers.sandbox import VENV, VENV_BIN

pytestmark = pytest.mark.e2e

E2E = Path(__file__).resolve().parents[1] / "e2e"

COMMANDS = {
    "docker-stacks": "jupyterhub-singleuser",  # z2jh's default; start.sh's hook hands over
    "plain-python": "nbinit start -- jupyterhub-singleuser",  # singleuser.cmd runs nbinit
}


@pytest.mark.parametrize("family", list(COMMANDS))
def test_hub_spawns_a_container_as_the_users_own_account(family, image, tmp_path):
    missing = hub_missing(VENV)
    if missing:
        pytest.skip(missing)
    marker = tmp_path / "marker"
    marker.mkdir()
    ports = ",".join(str(free_port()) for _ in range(3))
    argv = [
        sys.executable,
        str(E2E / "hub_driver.py"),
        str(PROXY),
        f"--work={tmp_path / 'hub'}",
        f"--ports={ports}",
        f"--cmd={COMMANDS[family]}",
        f"--podman={image(family)}",
        f"--podman-flags={' '.join(images.podman_run_flags())}",
        f"--marker={marker}",
    ]
    env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ready"] is True
    assert report["uid"] == ["4321"] * 4, report
    assert report["gid"] == ["4321"] * 4, report
    assert "100" in report["groups"]
    assert report["pid1"] == "tini"
    assert report["server_api_status"] == 200, report
    assert report["server_version"], report
    assert report["home_owner"] == [4321, 4321]
    assert "alice:x:4321:4321::/home/alice:/bin/bash" in report["passwd"]
    assert any(line.startswith("jovyan:x:1000:100:") for line in report["passwd"])
    assert report["container_removed"] is True
    nbinit_lines = [line for line in result.stderr.splitlines() if "] nbinit: " in line]
    assert any("created user alice (uid 4321" in line for line in nbinit_lines), nbinit_lines
    assert not [line for line in nbinit_lines if line.startswith(("WARNING", "FATAL"))]
