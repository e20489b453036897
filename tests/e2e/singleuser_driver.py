"""Inside the sandbox as root: a real JupyterHub spawns nbinit on an image without jupyterhub.

hub_driver.py's hub (proxy, DummyAuthenticator, SimpleLocalProcessSpawner), but the
server's PATH leads to build/lab-venv (jupyter_server and ipykernel, no jupyterhub), so
nbinit's runtime must stand in for `jupyterhub-singleuser`. Once the hub reports the
server ready, a kernel is started through the server's REST API (via the proxy) and asked
for its sys.path over the kernel protocol. Prints one JSON line on stdout.

    python singleuser_driver.py PROXY_COMMAND NBINIT LAB_BIN
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from helpers.hubconfig import call, hub_config  # noqa: E402 (run as a script)
from hub_driver import HUB_API, PROXY, proc_status, server_model, wait_for  # noqa: E402


def kernel_sys_path(server_url: str) -> list[str]:
    """Start a kernel in the server and ask it, over the kernel protocol, for sys.path."""
    from jupyter_client import BlockingKernelClient

    status, kernel = call("POST", f"{PROXY}{server_url}api/kernels", timeout=30)
    assert status == 201, (status, kernel)
    connection = f"/home/alice/.local/share/jupyter/runtime/kernel-{kernel['id']}.json"
    wait_for(
        "the kernel's connection file", lambda: os.path.exists(connection), time.monotonic() + 30
    )
    client = BlockingKernelClient(connection_file=connection)
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=30)
        printed: list[str] = []

        def keep(message: dict) -> None:
            if message["header"]["msg_type"] == "stream":
                printed.append(message["content"]["text"])

        client.execute_interactive(
            "import json, sys; print(json.dumps(sys.path))", output_hook=keep, timeout=30
        )
    finally:
        client.stop_channels()
    return json.loads("".join(printed))


def main() -> int:
    chp, nbinit, lab_bin = sys.argv[1:4]
    environment = {
        "NB_UID": "4321",
        "NB_GID": "4321",
        "PATH": f"{lab_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "NBINIT_STATUS_FILE": "/var/lib/nbinit-status.json",
    }
    cmd = [nbinit, "start", "--", "jupyterhub-singleuser"]
    os.makedirs("/tmp/hub", exist_ok=True)
    with open("/tmp/hub/jupyterhub_config.py", "w") as handle:
        handle.write(hub_config(chp=chp, cmd=cmd, work="/tmp/hub", environment=environment))
    hub = subprocess.Popen(
        ["jupyterhub", "-f", "/tmp/hub/jupyterhub_config.py"], cwd="/tmp/hub", stdout=sys.stderr
    )
    deadline = time.monotonic() + 100
    try:
        wait_for("the hub API", lambda: call("GET", f"{HUB_API}/")[0] == 200, deadline)
        status, _ = call("POST", f"{HUB_API}/users/alice")
        assert status in (201, 409), status
        status, body = call("POST", f"{HUB_API}/users/alice/server", timeout=60)
        assert status in (201, 202), (status, body)
        wait_for("alice's server to be ready", lambda: server_model().get("ready"), deadline)
        server = server_model()
        pid = int(server["state"]["pid"])
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = [part.decode() for part in handle.read().split(b"\0") if part]
        api_status, api = call("GET", f"{PROXY}{server['url']}api/status")
        with open("/var/lib/nbinit-status.json") as handle:
            exec_step = json.load(handle)["steps"][-1]
        report = {
            "ready": server["ready"],
            "uid": proc_status(pid)["Uid"].split(),
            "cmdline": cmdline,
            "server_api_status": api_status,
            "server_api": api,
            "singleuser": exec_step["details"].get("singleuser"),
            "kernel_path": kernel_sys_path(server["url"]),
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


if __name__ == "__main__":
    sys.exit(main())
