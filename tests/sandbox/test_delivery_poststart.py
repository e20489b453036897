"""`nbinit poststart`: user-level steps only, a hard deadline nothing can hang, always exit 0."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers.sandbox import ALICE, BASE_PATH, VENV_BIN
from helpers.wait import wait_until

from nbinit import poststart

pytestmark = pytest.mark.sandbox


@pytest.mark.parametrize(
    ("soft", "hard"),
    [
        pytest.param(20.0, 25.0, id="default-deadline-plus-grace"),
        pytest.param(235.0, 240.0, id="at-the-cap"),
        pytest.param(600.0, 240.0, id="capped-below-z2jh-start-timeout"),
    ],
)
def test_hard_limit(soft, hard):
    assert poststart.poststart_limit(soft) == hard


@pytest.fixture
def silent_server():
    """Accepts connections (the kernel's backlog) and never answers: the fetch just waits."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/config.yaml"
    listener.close()


def start_poststart(tmp_path: Path, url: str, deadline: str) -> subprocess.Popen[str]:
    env = {
        "PATH": BASE_PATH,
        "LANG": "C.UTF-8",
        "NBINIT_DEADLINE": deadline,
        "NBINIT_CONFIG_URL": url,
        "NBINIT_STATUS_FILE": str(tmp_path / "status.json"),
        "NBINIT_BAKED_CONFIG": str(tmp_path / "absent.yaml"),
        "NBINIT_STATE_DIR": str(tmp_path / "state"),
    }
    return subprocess.Popen(
        [str(VENV_BIN / "nbinit"), "poststart"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def child_of(pid: int, timeout: float = 5.0) -> int:
    children = wait_until(
        "poststart to start its worker",
        Path(f"/proc/{pid}/task/{pid}/children").read_text,
        str.split,
        timeout=timeout,
        interval=0.01,
    )
    return int(children.split()[0])


def test_a_frozen_worker_is_stopped_at_the_hard_deadline(tmp_path, silent_server):
    """SIGSTOP stands for any hang (a stuck syscall, a thread): only the supervisor is left."""
    started = time.monotonic()
    process = start_poststart(tmp_path, silent_server, deadline="2")
    worker = child_of(process.pid)
    os.kill(worker, signal.SIGSTOP)
    out, err = process.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert process.returncode == 0
    assert out == ""
    hard = poststart.poststart_limit(2.0)
    assert elapsed < hard + poststart.POSTSTART_KILL_WAIT + 3.0
    errors = [line for line in err.splitlines() if line.startswith("ERROR[")]
    assert len(errors) == 1, err
    assert re.search(
        rf"nbinit: poststart: the hard deadline of {hard:g}s passed after \d+\.\ds: stopped; "
        r"the server goes on without what was left",
        errors[0],
    )
    assert not Path(f"/proc/{worker}").exists()  # reaped, not left behind
    saved = json.loads((tmp_path / "status.json").read_text())
    assert saved["finished"] is True
    assert saved["outcome"] == "failed"
    assert saved["errors"][-1] == errors[0].split("nbinit: ", 1)[1]


def test_sigterm_stops_it_and_it_still_exits_0(tmp_path, silent_server):
    process = start_poststart(tmp_path, silent_server, deadline="30")
    child_of(process.pid)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "poststart: terminated by signal after" in err


def test_an_unreachable_config_is_a_warning_and_exit_0(tmp_path, silent_server):
    process = start_poststart(tmp_path, silent_server, deadline="2")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "hard deadline" not in err  # the fetch kept its own deadline
    warnings = [line for line in err.splitlines() if line.startswith("WARNING[")]
    assert "no complete answer within the" in warnings[0], err
    assert warnings[0].endswith("using built-in defaults (no last good copy)")
    # The fetch may take the whole 2 s: then the steps after it say so, one line each.
    for warning in warnings[1:]:
        assert re.fullmatch(
            r"(user|repos|gpu): skipped, the 2s deadline has passed",
            warning.split("nbinit: ", 1)[1],
        )
    saved = json.loads((tmp_path / "status.json").read_text())
    assert saved["finished"] is True
    assert [s["name"] for s in saved["steps"]] == ["config", "user", "repos", "gpu"]


def test_poststart_never_creates_the_account(sandbox):
    """The server is already starting as the container's user: no account appears here."""
    sandbox.add_jovyan()
    sandbox.mkdir("/s")
    sandbox.mkdir("/s/alice", mode=0o755)
    sandbox.mkdir("/s/alice/jupyterhub", mode=0o755)
    # NBINIT_STATUS_FILE: /run is a tmpfs, gone after the run.
    env = {**ALICE, "NBINIT_STATUS_FILE": "/var/tmp/nbinit-status.json"}
    result = sandbox.run(["nbinit", "poststart"], env=env)
    assert result.returncode == 0, result.stderr
    assert "alice" not in sandbox.read("/etc/passwd")
    assert not sandbox.host_view("/home/alice").exists()
    steps = json.loads(sandbox.read(env["NBINIT_STATUS_FILE"]))["steps"]
    user = next(step for step in steps if step["name"] == "user")
    assert user["reason"].startswith("account alice is not created yet"), user
    assert result.stdout == ""
