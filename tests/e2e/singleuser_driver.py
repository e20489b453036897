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
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from helpers.hubconfig import Hub, call, hub_config, running_hub  # noqa: E402 (a script)
from hub_driver import proc_status  # noqa: E402

PORTS = (8000, 8001, 8081)  # proxy, proxy API, hub: the sandbox has its own network


def kernel_sys_path(hub: Hub, server_url: str) -> list[str]:
    """Start a kernel in the server and ask it, over the kernel protocol, for sys.path."""
    from jupyter_client import BlockingKernelClient

    status, kernel = call("POST", f"{hub.proxy}{server_url}api/kernels", timeout=30)
    assert status == 201, (status, kernel)
    connection = Path(f"/home/alice/.local/share/jupyter/runtime/kernel-{kernel['id']}.json")
    hub.wait("the kernel's connection file", connection.exists, timeout=30)
    client = BlockingKernelClient(connection_file=str(connection))
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
    config = hub_config(chp=chp, cmd=cmd, work="/tmp/hub", environment=environment, ports=PORTS)
    with running_hub(config, Path("/tmp/hub"), PORTS, api_timeout=100) as hub:
        hub.spawn("alice", request_timeout=60)
        server = hub.wait_ready("alice", timeout=100)
        pid = int(server["state"]["pid"])
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = [part.decode() for part in handle.read().split(b"\0") if part]
        api_status, api = call("GET", f"{hub.proxy}{server['url']}api/status")
        with open("/var/lib/nbinit-status.json") as handle:
            exec_step = json.load(handle)["steps"][-1]
        report = {
            "ready": server["ready"],
            "uid": proc_status(pid)["Uid"].split(),
            "cmdline": cmdline,
            "server_api_status": api_status,
            "server_api": api,
            "singleuser": exec_step["details"].get("singleuser"),
            "kernel_path": kernel_sys_path(hub, server["url"]),
        }
        hub.call("DELETE", "/users/alice/server", timeout=20)
        print(json.dumps(report), flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
