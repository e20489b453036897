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
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import images
from helpers.containers import Container, free_port
from helpers.hubconfig import TOKEN, call, hub_config

PROJECT = Path(__file__).resolve().parents[2]
PROXY_BIN = PROJECT / "node_modules" / ".bin" / "configurable-http-proxy"
HUBS = {"5": PROJECT / "build" / "hub5-venv", "6": PROJECT / ".venv"}
ALICE_UID = "4321"
SERVED = "/run/nbinit/singleuser/"


def wait_for(what: str, check, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; the hub's log:\n{log.read_text()[-6000:]}")


class Hub:
    def __init__(self, work: Path, name: str, ports: tuple[int, int, int]) -> None:
        self.work = work
        self.container = Container(name, "")
        self.api = f"http://127.0.0.1:{ports[2]}/hub/api"
        self.proxy = f"http://127.0.0.1:{ports[0]}"
        self.log = work / "hub.log"

    def spawn(self, user: str) -> dict:
        """Start the user's server; its model once the hub says it is ready."""
        status, _ = call("POST", f"{self.api}/users/{user}")
        assert status in (201, 409), status
        status, body = call("POST", f"{self.api}/users/{user}/server", timeout=130)
        assert status in (201, 202), (status, body)

        def server() -> dict:
            return (call("GET", f"{self.api}/users/{user}")[1].get("servers") or {}).get("", {})

        wait_for(f"{user}'s server to be ready", lambda: server().get("ready"), 150, self.log)
        return server()


@contextmanager
def running_hub(major: str, tmp_path: Path, image: str, extra: list[str]):
    """JupyterHub `major` whose spawner runs the pod KubeSpawner would make: `podman run
    --network=host --user=0` with the hub's JUPYTERHUB_* environment, the image's own
    ENTRYPOINT and z2jh's default command, `extra` podman arguments (volumes, NB_UID)."""
    venv = HUBS[major]
    if not (venv / "bin" / "jupyterhub").exists():
        pytest.skip(f"JupyterHub {major} is not installed in {venv} (scripts/setup.sh)")
    if not PROXY_BIN.exists():
        pytest.skip(f"configurable-http-proxy is not installed at {PROXY_BIN} (scripts/setup.sh)")
    work = tmp_path / f"hub{major}"
    work.mkdir()
    name = f"nbinit-hub-{os.getpid()}-{major}"
    cmd = ["podman", "run", f"--name={name}", "--network=host", *images.podman_run_flags()]
    cmd += ["--user=0", "--env=JUPYTERHUB_*", "--env=JPY_API_TOKEN", *extra]
    cmd += [image, "jupyterhub-singleuser"]
    ports = (free_port(), free_port(), free_port())  # proxy, proxy API, hub
    config = hub_config(
        chp=str(PROXY_BIN), cmd=cmd, work=str(work), ports=ports, start_timeout=120,
        http_timeout=120, poll_interval=1,
    )  # fmt: skip
    (work / "jupyterhub_config.py").write_text(config)
    hub = Hub(work, name, ports)
    with hub.log.open("w") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "jupyterhub"), "-f", str(work / "jupyterhub_config.py")],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("the hub API", lambda: call("GET", f"{hub.api}/")[0] == 200, 60, hub.log)
        version = call("GET", f"{hub.api}/")[1]["version"]
        assert version.split(".")[0] == major, version
        yield hub
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        subprocess.run(
            ["podman", "rm", "--force", "--time", "0", name], capture_output=True, timeout=60
        )


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
    extra = [f"--volume={marker}:/s/alice/jupyterhub", f"--volume={state}:/var/lib/nbinit"]
    extra += [f"--env=NB_UID={ALICE_UID}", f"--env=NB_GID={ALICE_UID}"]
    for major in ("6", "5"):
        with running_hub(major, tmp_path, ngc, extra) as hub:
            server = hub.spawn("alice")
            running = hub.container
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
    with running_hub("5", tmp_path, ngc, []) as hub:
        server = hub.spawn("alice")
        running = hub.container
        process = server_process(running)
        assert process.uid == ["1000"] * 4
        assert process.gid == ["100"] * 4
        passwd = running.exec("cat", "/etc/passwd").splitlines()
        assert [line for line in passwd if line.startswith("jovyan:")] == [
            "jovyan:x:1000:100::/home/jovyan:/bin/bash"
        ]
        assert call("GET", f"{hub.proxy}{server['url']}api/status")[0] == 200
        assert nbinit_problems(running) == []
