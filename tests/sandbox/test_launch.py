"""The drop and the exec: groups, capabilities, PID 1 (tini, an init already there, no tini).

Every case runs nbinit for real in a throwaway container; the command after `--` reports
what the server would see.
"""

from __future__ import annotations

import signal
import time

import pytest
from helpers.sandbox import ALICE, ALICE_ID

pytestmark = pytest.mark.sandbox

HIDE_TINI = "for t in tini tini-static; do mount --bind /dev/null $R/usr/bin/$t; done"

# What the server process sees of its own credentials, and whether root can come back.
CREDENTIALS = (
    "grep -E '^(Uid|Gid|Groups|CapEff|CapPrm):' /proc/self/status | tr -s '\\t ' ' '; "
    "python3 -c 'import os; os.setuid(0)' 2>/dev/null && echo ROOT-AGAIN || echo no-root"
)


def marked(box) -> None:
    box.add_jovyan()
    box.mkdir("/s/alice/jupyterhub")


def processes_script() -> str:
    """Every process in the container: pid, ppid, uid, name (no ps needed)."""
    return (
        "for s in /proc/[0-9]*/status; do "
        "awk '/^Name:/{n=$2}/^Pid:/{p=$2}/^PPid:/{q=$2}/^Uid:/{u=$2}"
        "END{print p, q, u, n}' $s; done 2>/dev/null | sort -n"
    )


def test_drop_clears_root_groups_and_capabilities(sandbox):
    marked(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", CREDENTIALS], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Uid: 4321 4321 4321 4321",
        "Gid: 4321 4321 4321 4321",
        "Groups: 100 4321 ",
        "CapPrm: 0000000000000000",
        "CapEff: 0000000000000000",
        "no-root",
    ]


def test_no_root_process_stays_behind_under_tini(sandbox):
    """tini is PID 1 and the server its child; no sudo/su/nbinit as root in between."""
    marked(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", processes_script()], env=ALICE)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["1", "0", "4321", "tini"]
    assert all(row[2] == "4321" for row in rows), rows
    assert all(row[3] not in ("sudo", "su", "nbinit", "python3") for row in rows), rows


def test_helper_processes_run_as_the_user_with_clean_groups(sandbox):
    """A hook (run through privilege.run_as_user) gets the same drop as the server."""
    marked(sandbox)
    sandbox.write(
        "/etc/nbinit/hooks.d/10-whoami",
        "#!/bin/sh\nid >&2\ngrep -E '^CapEff' /proc/self/status >&2\n",
        mode=0o755,
    )
    result = sandbox.run(["nbinit", "start", "--", "true"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert ALICE_ID + "\n" in result.stderr
    assert "CapEff:\t0000000000000000\n" in result.stderr


def test_hooks_see_no_secret(sandbox):
    """Hooks run as the user: no config token, no user.secret_env, no git token."""
    marked(sandbox)
    sandbox.write(
        "/etc/nbinit/config.yaml",
        "version: 1\nuser:\n  secret_env: [MY_SECRET]\ngit:\n  token_env: MY_GIT_TOKEN\n",
    )
    sandbox.write("/etc/nbinit/hooks.d/10-env", "#!/bin/sh\nenv >&2\n", mode=0o755)
    env = {**ALICE, "NBINIT_CONFIG_TOKEN": "tok-canary-1", "MY_SECRET": "sec-canary-2"}
    env["MY_GIT_TOKEN"] = "git-canary-3"
    result = sandbox.run(["nbinit", "start", "--", "true"], env=env)
    assert result.returncode == 0, result.stderr
    assert "USER=alice" in result.stderr  # the hook's env did reach the log
    assert "canary" not in result.stderr


def test_exit_code_propagates_through_tini(sandbox):
    marked(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", "exit 7"], env=ALICE)
    assert result.returncode == 7


def test_init_already_pid1_execs_the_command_directly(sandbox):
    """docker-stacks' `tini -g -- start.sh` case: nbinit is not PID 1, so no second tini."""
    marked(sandbox)
    argv = ["tini", "-g", "--", "nbinit", "start", "--", "sh", "-c", processes_script()]
    result = sandbox.run(argv, env=ALICE)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["1", "0", "0", "tini"]
    assert [row[3] for row in rows].count("tini") == 1
    assert rows[1][1:] == ["1", "4321", "sh"]  # nbinit became the command: same PID


# -- PID 1 without tini: nbinit is the init ---------------------------------------------


def test_minimal_init_reaps_zombies_and_says_so_once(sandbox):
    marked(sandbox)
    sandbox.setup.append(HIDE_TINI)
    # An orphan that exits is re-parented to PID 1; only a reaping init removes it.
    script = (
        "(sh -c 'sleep 0.2 &' &); sleep 1.5; "
        "cat /proc/1/comm; "
        "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l"
    )
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", script], env=ALICE)
    assert result.returncode == 0, result.stderr
    comm, zombies = result.stdout.split()
    assert comm != "tini"
    assert zombies == "0"
    said = [line for line in result.lines("INFO") if "minimal init" in line]
    assert len(said) == 1
    assert said[0].endswith(
        "nbinit: no tini on PATH: nbinit stays PID 1 as a minimal init (forwards signals to "
        "the server's process group, reaps zombies); install tini in the image to use it instead"
    )
    assert result.lines("WARNING") == []


def test_minimal_init_forwards_sigterm_to_the_group(sandbox):
    marked(sandbox)
    sandbox.setup.append(HIDE_TINI)
    script = (
        "trap 'echo got TERM as $(id -u); exit 7' TERM; echo ready; "
        "sleep 30 & wait $!; echo not-reached"
    )
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", script],
        env=ALICE,
        send_signal_after=(2.5, signal.SIGTERM),
    )
    assert result.stdout == "ready\ngot TERM as 4321\n", result.stderr
    assert result.returncode == 7


def test_minimal_init_propagates_the_exit_code(sandbox):
    marked(sandbox)
    sandbox.setup.append(HIDE_TINI)
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", "exit 42"], env=ALICE)
    assert result.returncode == 42
    killed = sandbox.run(["nbinit", "start", "--", "sh", "-c", "kill -KILL $$"], env=ALICE)
    assert killed.returncode == 128 + signal.SIGKILL


# -- SIGTERM during setup ---------------------------------------------------------------


def test_sigterm_during_setup_ends_within_two_seconds(sandbox):
    marked(sandbox)
    hang = "#!/bin/sh\ntouch /var/tmp/hook-running\nsleep 30\n"
    sandbox.write("/etc/nbinit/hooks.d/10-hang", hang, mode=0o755)
    running = sandbox.host_view("/var/tmp/hook-running")
    seen: list[float] = []

    def hook_running() -> bool:  # the signal comes while the hook hangs, however loaded
        if not seen and running.exists():
            seen.append(time.monotonic())
        return bool(seen)

    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "echo server started"],
        env=ALICE,
        send_signal_after=(0.2, signal.SIGTERM),
        signal_once=hook_running,
        timeout=20,
    )
    elapsed = time.monotonic() - seen[0]
    assert result.returncode == 143, result.stderr
    assert result.stdout == ""  # the server never started
    assert any(
        line.endswith("nbinit: terminated by signal before the server started")
        for line in result.lines("ERROR")
    )
    assert elapsed < 0.2 + 2.0  # the hook's own timeout (5 s) was not waited for


def test_account_step_runs_even_when_the_deadline_has_passed(sandbox):
    """A deadline spent before the user step must never start the server as root."""
    marked(sandbox)
    env = {**ALICE, "NBINIT_DEADLINE": "0.01"}
    result = sandbox.run(["nbinit", "start", "--", "id", "-u"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "4321\n"
    assert [x for x in result.lines("WARNING") if "deadline has passed" not in x] == []
    assert not any("user: skipped" in line for line in result.lines("WARNING"))
    assert any(
        "repos: skipped, the 0.01s deadline has passed" in x for x in result.lines("WARNING")
    )


def test_minimal_init_reports_a_command_it_cannot_exec(sandbox):
    """Executable for the user (so the check before the drop passes), but not a program."""
    marked(sandbox)
    sandbox.setup.append(HIDE_TINI)
    sandbox.write("/usr/local/bin/broken-server", "not a program\n", mode=0o755)
    result = sandbox.run(["nbinit", "start", "--", "/usr/local/bin/broken-server"], env=ALICE)
    assert result.returncode == 126
    assert [line.split("nbinit: ", 1)[1] for line in result.lines("FATAL")] == [
        "cannot exec /usr/local/bin/broken-server: Exec format error: check the command and PATH"
    ]
