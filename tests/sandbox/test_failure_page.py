"""The failure page: a FATAL under a hub is served to the browser, as nobody, and ends cleanly.

nbinit runs as PID 1 in a throwaway container on the host's network (no tini: the
hardest case for signals), the way a hub starts it: JUPYTERHUB_SERVICE_URL and
JUPYTERHUB_SERVICE_PREFIX set, the marker present and NB_UID missing (or hostile). The
test fetches the page over loopback, finds the serving process by its environment and
reads its credentials from /proc, then stops it as the kubelet would.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from helpers.net import free_port, request
from helpers.wait import wait_until

pytestmark = pytest.mark.sandbox

HIDE_TINI = "for t in tini tini-static; do mount --bind /dev/null $R/usr/bin/$t; done"


def hub_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/alice/",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTER_IMAGE_SPEC": "registry.example.org/notebooks/minimal-notebook:2026-11-01",
        "JUPYTERHUB_API_TOKEN": "secret-api-token-0123456789",
        **extra,
    }


class Running:
    """nbinit started in a sandbox on a thread, so the test can talk to it meanwhile."""

    def __init__(self, sandbox, argv, env, timeout=60):
        self.result = None
        self.env = env
        self.started = time.monotonic()
        self.thread = threading.Thread(
            target=lambda: setattr(self, "result", sandbox.run(argv, env=env, timeout=timeout))
        )
        self.thread.start()

    def get(self, path: str, port: int, wait: float = 20.0):
        """(status, headers, body) of the first answer, retrying while the port is closed."""
        answer = wait_until(
            f"an answer to GET {path} on port {port}",
            lambda: request(f"http://127.0.0.1:{port}{path}", timeout=5),  # any status
            timeout=wait,
            interval=0.05,
            alive=self.thread.is_alive,
            context=lambda: f"nbinit's run: {self.result}",
        )
        return answer.status, answer.headers, answer.body.decode()

    def server_pid(self) -> int:
        """The host pid of the process started with this run's JUPYTERHUB_SERVICE_URL."""
        marker = f"JUPYTERHUB_SERVICE_URL={self.env['JUPYTERHUB_SERVICE_URL']}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    return int(entry.name)
            except OSError:
                continue
        raise AssertionError("the serving process is gone")

    def finish(self, timeout: float = 30):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "nbinit did not exit"
        return self.result


def proc_ids(pid: int) -> dict[str, list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    return {key: fields[key].split() for key in ("Uid", "Gid", "Groups", "NSpid")}


def marked(box) -> None:
    box.add_jovyan()
    box.mkdir("/s/alice/jupyterhub")
    box.setup.append(HIDE_TINI)  # nbinit itself is PID 1 and must handle SIGTERM


def test_a_fatal_under_a_hub_serves_the_page_as_nobody_and_sigterm_ends_it_with_0(sandbox):
    marked(sandbox)
    # /dev is the host's in the sandbox: the pod's terminationMessagePath is moved instead.
    sandbox.write("/var/log/termination-log", "", mode=0o666)
    port = free_port()
    env = hub_env(port, NBINIT_TERMINATION_LOG="/var/log/termination-log")
    run = Running(sandbox, ["nbinit", "start", "--", "jupyterhub-singleuser"], env)
    status, headers, body = run.get("/user/alice/", port)
    answered = time.monotonic() - run.started
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Your server did not start" in body
    assert "NB_UID is not set, but the marker /s/alice/jupyterhub asks for alice" in body
    assert "pre_spawn_hook" in body  # the fix
    assert "minimal-notebook:2026-11-01" in body
    assert 'href="/hub/home"' in body
    assert "secret-api-token" not in body
    # Any path under the prefix answers the page (the hub waits on the prefix itself).
    assert run.get("/user/alice/lab/tree/x.ipynb?reset", port)[0] == 200
    assert run.get("/elsewhere", port)[0] == 404
    status, headers, raw = run.get("/user/alice/api/status", port)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    answer = json.loads(raw)
    assert answer["nbinit"] == "failed"
    assert answer["reason"].startswith("NB_UID is not set")
    assert "pre_spawn_hook" in answer["fix"]

    pid = run.server_pid()
    ids = proc_ids(pid)
    assert ids["NSpid"][-1] == "1"  # PID 1 of its container
    assert ids["Uid"] == ["65534"] * 4 and ids["Gid"] == ["65534"] * 4, ids
    assert ids["Groups"] == ["65534"], ids
    stopped = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    result = run.finish()
    took = time.monotonic() - stopped
    print(f"failure page answered {answered:.2f}s after start; exit {took:.2f}s after SIGTERM")
    assert result.returncode == 0, result.stderr
    assert took < 1.0
    fatal = result.lines("FATAL")
    assert "nbinit: NB_UID is not set, but the marker /s/alice/jupyterhub asks for" in fatal[0]
    assert fatal[1].endswith("nbinit: not starting the server: fix the problem above and restart")
    assert any("serving the failure page at 127.0.0.1:" in line for line in result.lines("INFO"))
    assert result.lines("WARNING") == []
    written = sandbox.read("/var/log/termination-log")
    assert written.startswith("FATAL nbinit: NB_UID is not set, but the marker"), written
    assert "pre_spawn_hook" in written and written.count("\n") == 1


def test_hostile_text_in_the_reason_is_escaped_on_the_page_and_exact_in_the_json(sandbox):
    marked(sandbox)
    port = free_port()
    hostile = '<script>alert("x")</script>&<img src=x onerror=1>'
    run = Running(
        sandbox,
        ["nbinit", "start", "--", "jupyterhub-singleuser"],
        hub_env(port, NB_UID=hostile, JUPYTERHUB_BASE_URL="javascript:alert(1)//"),
    )
    _, _, body = run.get("/user/alice/", port)
    _, _, raw = run.get("/user/alice/api/status", port)
    os.kill(run.server_pid(), signal.SIGTERM)
    assert run.finish().returncode == 0
    assert "<script>" not in body and "<img" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;img" in body
    assert "javascript:" not in body and 'href="/hub/home"' in body
    assert json.loads(raw)["reason"] == f"NB_UID={hostile!r} is not an integer"


def test_the_page_ends_by_itself_after_explain_minutes_with_exit_0(sandbox):
    marked(sandbox)
    sandbox.write("/etc/nbinit/config.yaml", "version: 1\nexplain_minutes: 0.05\n")
    port = free_port()
    run = Running(sandbox, ["nbinit", "start", "--", "jupyterhub-singleuser"], hub_env(port))
    assert run.get("/user/alice/api/status", port)[0] == 200
    result = run.finish(timeout=20)
    assert result.returncode == 0, result.stderr
    assert any("0.05 min passed, exiting" in line for line in result.lines("INFO"))


def test_on_fatal_exit_keeps_exit_1_and_without_a_hub_that_is_the_default(sandbox):
    marked(sandbox)
    plain = sandbox.run(
        ["nbinit", "start", "--", "true"], env={"JUPYTERHUB_USER": "alice"}, timeout=30
    )
    assert plain.returncode == 1
    assert not [line for line in plain.stderr.splitlines() if "failure page" in line]
    sandbox.write("/etc/nbinit/config.yaml", "version: 1\non_fatal: exit\n")
    hub = sandbox.run(["nbinit", "start", "--", "true"], env=hub_env(free_port()), timeout=30)
    assert hub.returncode == 1
    assert not [line for line in hub.stderr.splitlines() if "failure page" in line]
