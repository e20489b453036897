"""A real JupyterHub (5.x and 6.x) spawns the NGC-like image with only the COPY line.

The image has JupyterLab but no jupyterhub and no jovyan, and NVIDIA's entrypoint chain;
the hub runs on the host's loopback (tests/helpers/hubconfig.py) and its spawner runs each
server with `podman run`, as KubeSpawner starts a pod: `--user 0`, the hub's JUPYTERHUB_*
environment, the marker volume, z2jh's default command `jupyterhub-singleuser`. nbinit's
runtime must stand in, with the hub's major version, as the marker user or as the jovyan it
creates; the server answers through the proxy, and a kernel started in it does not see the
runtime.

The hubs: JupyterHub 6 from the test venv, JupyterHub 5 from build/hub5-venv
(scripts/setup.sh makes it); a hub that is not installed is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import images
from helpers.containers import Container
from helpers.hubconfig import (
    PROXY,
    TOKEN,
    Hub,
    call,
    hub_config,
    hub_missing,
    podman_spawner,
    running_hub,
)
from helpers.net import free_port

PROJECT = Path(__file__).resolve().parents[2]
HUBS = {"5": PROJECT / "build" / "hub5-venv", "6": PROJECT / ".venv"}
ALICE_UID = "4321"
SERVED = "/run/nbinit/singleuser/"


@contextmanager
def running_podman_hub(
    major: str, tmp_path: Path, image: str, volumes: list[str], environment: dict[str, str]
):
    """JupyterHub `major` whose spawner runs the pod KubeSpawner would make: `podman run
    --network=host --user=0` with the hub's JUPYTERHUB_* environment and `environment`, the
    image's own ENTRYPOINT and z2jh's default command; yields (hub, the server's Container)."""
    venv = HUBS[major]
    missing = hub_missing(venv)
    if missing:
        pytest.skip(f"JupyterHub {major}: {missing}")
    work = tmp_path / f"hub{major}"
    name = f"nbinit-hub-{os.getpid()}-{major}"
    spawner = podman_spawner(
        image, name=name, flags=images.podman_run_flags(), volumes=volumes, remove=False
    )
    ports = (free_port(), free_port(), free_port())  # proxy, proxy API, hub
    config = hub_config(
        chp=str(PROXY), cmd=["jupyterhub-singleuser"], work=str(work),
        environment=environment, ports=ports, start_timeout=120, http_timeout=120,
        poll_interval=1, spawner=spawner,
    )  # fmt: skip
    jupyterhub = str(venv / "bin" / "jupyterhub")
    try:
        with running_hub(
            config, work, ports, jupyterhub=jupyterhub, log=work / "hub.log", stop_timeout=30
        ) as hub:
            version = hub.call("GET", "/")[1]["version"]
            assert version.split(".")[0] == major, version
            yield hub, Container(name, "")
    finally:
        subprocess.run(
            ["podman", "rm", "--force", "--time", "0", name], capture_output=True, timeout=60
        )


def spawn(hub: Hub) -> dict:
    """Start alice's server; its model once the hub says it is ready."""
    hub.spawn("alice", request_timeout=130)
    return hub.wait_ready("alice", timeout=150)


def server_process(running: Container):
    """The server: the image's Python running nbinit's launcher on a runtime."""
    return running.wait_for_process(lambda p: any(part.startswith(SERVED) for part in p.cmdline))


def runtime_of(process) -> str:
    """The runtime the server runs: as root nbinit serves it unpacked from the tree's zip."""
    (served,) = [part for part in process.cmdline if part.startswith(SERVED)]
    assert re.fullmatch(r"jupyterhub-\d+\.\d+\.\d+", served[len(SERVED) :]), served
    return served


def kernel_sys_path(hub: Hub, server_url: str) -> list[str]:
    """A kernel started in the server, asked for its sys.path over the server's own kernel
    websocket, through the proxy (as JupyterLab talks to it)."""
    import asyncio
    import uuid

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    status, kernel = call("POST", f"{hub.proxy}{server_url}api/kernels", timeout=60)
    assert status == 201, (status, kernel)
    url = f"{hub.proxy.replace('http', 'ws', 1)}{server_url}api/kernels/{kernel['id']}/channels"

    async def ask() -> list[str]:
        request = HTTPRequest(url, headers={"Authorization": f"token {TOKEN}"}, connect_timeout=30)
        socket = await websocket_connect(request)
        msg_id = uuid.uuid4().hex
        code = "import json, sys; print(json.dumps(sys.path))"
        socket.write_message(
            json.dumps(
                {
                    "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": msg_id,
                               "username": "test", "version": "5.3"},
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False},
                    "channel": "shell",
                }
            )
        )  # fmt: skip
        printed = ""
        while True:
            message = json.loads(await asyncio.wait_for(socket.read_message(), 60))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                printed += message["content"]["text"]
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                socket.close()
                return json.loads(printed)

    return asyncio.run(asyncio.wait_for(ask(), 120))


def nbinit_problems(running: Container) -> list[str]:
    lines = running.logs().splitlines()
    return [
        line for line in lines if "] nbinit: " in line and line.startswith(("WARNING", "FATAL"))
    ]


@pytest.fixture
def ngc(image) -> str:
    return image("ngc")


def test_hubs_spawn_the_marked_user_with_the_runtime_of_their_major_version(ngc, tmp_path):
    """JupyterHub 6, then 5 with the state of the first start kept: each gets its own major."""
    marker, state = tmp_path / "marker", tmp_path / "state"
    marker.mkdir()
    state.mkdir(mode=0o700)
    volumes = [f"{marker}:/s/alice/jupyterhub", f"{state}:/var/lib/nbinit"]
    environment = {"NB_UID": ALICE_UID, "NB_GID": ALICE_UID}
    for major in ("6", "5"):
        with running_podman_hub(major, tmp_path, ngc, volumes, environment) as (hub, running):
            server = spawn(hub)
            process = server_process(running)
            assert process.uid == [ALICE_UID] * 4
            assert f"/jupyterhub-{major}." in runtime_of(process)
            status, answer = call("GET", f"{hub.proxy}{server['url']}api/status")
            assert status == 200, answer
            assert nbinit_problems(running) == []
            cached = json.loads((state / "hub-version.json").read_text())
            assert cached["version"].split(".")[0] == major
            if major == "6":
                kernel_path = kernel_sys_path(hub, server["url"])
                assert kernel_path and runtime_of(process) not in kernel_path
                assert not [entry for entry in kernel_path if "nbinit" in entry], kernel_path


def test_without_a_marker_the_server_runs_as_the_jovyan_nbinit_creates(ngc, tmp_path):
    with running_podman_hub("5", tmp_path, ngc, [], {}) as (hub, running):
        server = spawn(hub)
        process = server_process(running)
        assert process.uid == ["1000"] * 4
        assert process.gid == ["100"] * 4
        passwd = running.exec("cat", "/etc/passwd").splitlines()
        assert [line for line in passwd if line.startswith("jovyan:")] == [
            "jovyan:x:1000:100::/home/jovyan:/bin/bash"
        ]
        assert call("GET", f"{hub.proxy}{server['url']}api/status")[0] == 200
        assert nbinit_problems(running) == []
