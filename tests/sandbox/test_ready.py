"""`nbinit ready`, the readiness probe, in a container: before exec, listening, gone.

A shell is PID 1 (the kubelet's exec probe runs beside the entrypoint, not inside it);
it starts `nbinit start` in the background with a hook that holds setup for a moment, and
runs the probe at each stage, as root and as jovyan, printing `stage rc line`.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.sandbox

PROBE = (
    'probe() { out=$(nbinit ready); rc=$?; echo "$1 $rc $out"; '
    "out=$(setpriv --reuid=1000 --regid=100 --clear-groups nbinit ready); "
    'echo "$1-as-jovyan $? $out"; }'
)

SCRIPT = f"""
{PROBE}
probe first
nbinit start -- python3 -m http.server --bind 127.0.0.1 8888 >/dev/null 2>/tmp/server.log &
server=$!
while [ ! -e /tmp/in-hook ]; do sleep 0.05; done
probe setup
touch /tmp/hook-may-end
for i in $(seq 100); do nbinit ready >/dev/null && break; sleep 0.05; done
probe listening
kill $server; wait $server
probe gone
"""

# Holds the hooks step until the test has probed (as the user: the hooks run as jovyan).
HOOK = """#!/bin/sh
touch /tmp/in-hook
while [ ! -e /tmp/hook-may-end ]; do sleep 0.05; done
"""


def test_ready_is_1_before_exec_0_while_the_server_listens_and_1_once_it_is_gone(sandbox):
    sandbox.add_jovyan()
    sandbox.write("/etc/nbinit/hooks.d/10-hold", HOOK, mode=0o755)
    sandbox.write("/etc/nbinit/config.yaml", "version: 1\nhooks: {timeout: 30}\n")
    env = {"JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:8888/user/alice/"}
    result = sandbox.run(["sh", "-c", SCRIPT], env=env, net=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split(" ", 1)[0]: line.split(" ", 2)[1:] for line in result.stdout.splitlines()}
    assert rows["first"] == [
        "1",
        "not ready: nbinit has not written its status file yet: still starting",
    ]
    assert rows["setup"] == ["1", "not ready: nbinit is still setting up (last step: gpu)"]
    assert rows["listening"][0] == "0"
    assert rows["listening"][1].startswith("ready: the server (pid ")
    assert rows["listening"][1].endswith(" accepts connections on 127.0.0.1:8888")
    assert rows["gone"][0] == "1"
    assert rows["gone"][1].startswith("not ready: the server (pid ")
    assert rows["gone"][1].endswith(" is gone")
    for stage in ("first", "setup", "listening", "gone"):  # any user gets the same answer
        assert rows[f"{stage}-as-jovyan"] == rows[stage], stage


def test_ready_is_0_for_the_failure_page_so_the_hub_can_send_the_user_there(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    env = {
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:8888/user/alice/",
    }
    script = f"""
{PROBE}
nbinit start -- true 2>/dev/null &
page=$!
for i in $(seq 100); do nbinit ready >/dev/null && break; sleep 0.05; done
probe page
kill $page; wait $page; echo "exit $?"
"""
    result = sandbox.run(["sh", "-c", script], env=env, net=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split(" ", 1)[0]: line.split(" ", 2)[1:] for line in result.stdout.splitlines()}
    assert rows["page"][0] == "0", rows
    assert rows["page"][1].startswith("ready: the failure page (pid ")
    assert rows["page-as-jovyan"] == rows["page"]
    assert rows["exit"] == ["0"]
