"""A real JupyterHub spawns nbinit on an image without jupyterhub: nbinit's runtime serves.

The image's Python is build/lab-venv (jupyter_server and ipykernel, no jupyterhub); the
runtimes are the real zips at the path `COPY build/nbinit-root/ /` gives them. The hub
sees the server ready as alice, its API answers through the proxy, and a kernel started in
it does not have the runtime on its sys.path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers.hubconfig import PROXY, hub_missing
from helpers.sandbox import PROJECT, VENV, VENV_BIN

from nbinit.bundle.runtimes import DEFAULT_RUNTIME_WHEELS, build_runtimes

pytestmark = [pytest.mark.e2e, pytest.mark.sandbox]

DRIVER = Path(__file__).with_name("singleuser_driver.py")
LAB_BIN = PROJECT / "build" / "lab-venv" / "bin"


def test_hub_spawns_nbinits_runtime_on_an_image_without_jupyterhub(sandbox):
    missing = hub_missing(VENV)
    if missing:
        pytest.skip(missing)
    if not (LAB_BIN / "python").exists():
        pytest.skip(f"{LAB_BIN}/python is missing (scripts/setup.sh makes it)")
    from jupyterhub import __version__ as hub_version

    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    for relative, data in build_runtimes(PROJECT / DEFAULT_RUNTIME_WHEELS).items():
        sandbox.write(f"/{relative}", data)
    argv = [
        "tini", "-g", "--", str(VENV_BIN / "python"), str(DRIVER),
        str(PROXY), str(VENV_BIN / "nbinit"), str(LAB_BIN),
    ]  # fmt: skip
    result = sandbox.run(argv, net=True, timeout=150)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ready"] is True
    assert report["uid"] == ["4321"] * 4
    assert report["server_api_status"] == 200, report
    major = hub_version.split(".")[0]
    runtime = report["singleuser"]
    assert runtime["runtime"] == "nbinit" and runtime["hub"] == hub_version, runtime
    assert runtime["version"].split(".")[0] == major
    zip_path = runtime["path"]
    assert re.fullmatch(
        rf"/usr/local/lib/nbinit/singleuser/jupyterhub-{major}\.\d+\.\d+\.zip", zip_path
    )
    # As root nbinit serves it unpacked, so the server's bytecode is cached in the home.
    served = runtime["served_from"]
    assert served == f"/run/nbinit/singleuser/{zip_path.rsplit('/', 1)[1][: -len('.zip')]}"
    with open(LAB_BIN / "jupyter-server") as script:  # pip writes python or python3
        assert report["cmdline"][0] == script.readline()[2:].strip()
    assert served in report["cmdline"]
    assert report["kernel_path"], report
    assert any(entry.startswith(str(LAB_BIN.parent)) for entry in report["kernel_path"])
    assert not [e for e in report["kernel_path"] if e.startswith((served, zip_path))], report
    assert str(PROJECT / "src") not in report["kernel_path"], report  # nor nbinit itself
    nbinit_lines = [line for line in result.stderr.splitlines() if "] nbinit: " in line]
    assert not [line for line in nbinit_lines if line.startswith(("WARNING", "FATAL"))]
