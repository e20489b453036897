"""A real JupyterHub spawns `nbinit start -- jupyterhub-singleuser` as root in the sandbox.

The hub reports the server ready and the server process runs as alice's uid while jovyan
still exists. jupyterhub-singleuser refuses to run as root, so this proves the drop.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.hubconfig import PROXY, hub_missing
from helpers.sandbox import VENV

pytestmark = [pytest.mark.e2e, pytest.mark.sandbox]

DRIVER = Path(__file__).with_name("hub_driver.py")


def test_hub_spawns_the_server_as_the_users_own_account(sandbox):
    missing = hub_missing(VENV)
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


def run_driver(sandbox, scenario: str):
    missing = hub_missing(VENV)
    if missing:
        pytest.skip(missing)
    argv = ["tini", "-g", "--", str(VENV / "bin" / "python"), str(DRIVER), str(PROXY), scenario]
    result = sandbox.run(argv, net=True, timeout=150)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_a_fatal_start_sends_the_user_to_the_failure_page_through_the_hub(sandbox, tmp_path):
    """Marker present, NB_UID missing: the hub marks the server ready and redirects alice to
    nbinit's failure page, which headless chromium renders through the proxy."""
    if not shutil.which("chromium"):
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    report, log = run_driver(sandbox, "fatal")
    # The hub took the page for a started server, and sends a logged-in alice there.
    # (the hub counts its own redirects in `?redirects=`)
    assert report["landed"].startswith("http://127.0.0.1:8000/user/alice/"), report["landed"]
    assert report["landed_status"] == 200
    assert "NB_UID is not set, but the marker /s/alice/jupyterhub asks for" in report["page"]
    assert report["api"]["nbinit"] == "failed"
    assert report["api"]["reason"].startswith("NB_UID is not set")
    # Served by nobody, not root and not the user nbinit could not create.
    assert report["uid"] == ["65534"] * 4, report
    assert report["groups"] == ["65534"], report
    # What a browser renders.
    assert report["chromium_rc"] == [0, 0], report["chromium_err"]
    dom = report["dom"]
    assert "<h1>Your server did not start</h1>" in dom
    assert "NB_UID is not set" in dom and "pre_spawn_hook" in dom
    assert 'id="hub-home" href="/hub/home"' in dom
    shot = sandbox.host_view(report["screenshot"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
    kept = tmp_path / "failure-page.png"
    shutil.copyfile(shot, kept)
    print(f"failure page screenshot: {kept}")
    print(f"hub saw the server ready {report['ready_after']}s after the spawn request")
    # Stopping from the hub ends nbinit at once (SIGINT from LocalProcessSpawner), exit 0.
    assert report["stop_status"] in (202, 204)
    assert report["process_gone"] is True
    assert report["stopped_after"] < 5, report
    assert "serving the failure page at 127.0.0.1:" in log
    assert "stopped by signal, exiting" in log


def test_an_admin_cancels_a_pending_spawn_whose_command_hangs(sandbox):
    """JupyterHub >= 5.1: DELETE /hub/api/users/{name}/server stops a spawn still pending."""
    report, _ = run_driver(sandbox, "cancel")
    assert tuple(int(p) for p in report["hub_version"].split(".")[:2]) >= (5, 1), report
    assert report["spawn_status"] == 202  # accepted, still pending
    assert report["pending"] == "spawn"
    assert report["pid"] > 0
    assert report["delete_status"] in (202, 204)
    assert report["process_gone"] is True, report
    assert report["stopped_after"] < 15, report
