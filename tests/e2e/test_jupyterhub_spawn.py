"""A real JupyterHub spawns `nbinit start -- jupyterhub-singleuser` as root in the sandbox.

The hub reports the server ready and the server process runs as alice's uid while jovyan
still exists. jupyterhub-singleuser refuses to run as root, so this proves the drop.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.sandbox import PROJECT, VENV

pytestmark = [pytest.mark.e2e, pytest.mark.sandbox]

PROXY = PROJECT / "node_modules" / ".bin" / "configurable-http-proxy"
DRIVER = Path(__file__).with_name("hub_driver.py")


def prerequisites() -> str:
    if not PROXY.exists():
        return f"configurable-http-proxy is not installed at {PROXY} (run scripts/setup.sh)"
    if not shutil.which("node"):
        return "node is not installed (configurable-http-proxy needs it)"
    for tool in ("jupyterhub", "jupyterhub-singleuser"):
        if not (VENV / "bin" / tool).exists():
            return f"{tool} is not in {VENV}/bin (pip install -e '.[test]')"
    return ""


def test_hub_spawns_the_server_as_the_users_own_account(sandbox):
    missing = prerequisites()
    if missing:
        pytest.skip(missing)
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    argv = ["tini", "-g", "--", str(VENV / "bin" / "python"), str(DRIVER), str(PROXY)]
    result = sandbox.run(argv, net=True, timeout=90)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ready"] is True
    assert report["uid"] == ["4321"] * 4, report
    assert report["gid"] == ["4321"] * 4, report
    assert report["groups"] == ["100", "4321"]
    assert any("jupyterhub-singleuser" in part for part in report["cmdline"]), report
    assert report["server_api_status"] == 200, report
    assert report["server_version"], report
    assert report["home_owner"] == [4321, 4321]
    assert "alice:x:4321:4321::/home/alice:/bin/bash" in report["passwd"]
    assert any(line.startswith("jovyan:x:1000:100:") for line in report["passwd"])
    # nbinit's own lines reached the hub's log, with no warning on this clean start.
    nbinit_lines = [line for line in result.stderr.splitlines() if "] nbinit: " in line]
    assert any("created user alice (uid 4321" in line for line in nbinit_lines), nbinit_lines
    assert not [line for line in nbinit_lines if line.startswith(("WARNING", "FATAL"))]
