"""The problems file: a degraded start leaves STARTUP-PROBLEMS.txt in the home, as the user.

Real git over loopback, nbinit as PID 1; the file is read from the overlay's upper layer
with its owner, and a clean restart must remove it.
"""

from __future__ import annotations

import os
import time

import pytest
import yaml
from helpers.gitserver import GitHttpServer, HangServer, Pusher, make_bare

pytestmark = pytest.mark.sandbox

HOME = "/home/jovyan"
NAME = "STARTUP-PROBLEMS.txt"


@pytest.fixture
def git(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    server = GitHttpServer(root).start()
    yield root, server
    server.stop()


def publish(root, name):
    pusher = Pusher(make_bare(root, name, "main"), root.parent / "work" / name, "main")
    pusher.publish({"README.md": "hello\n"}, "initial")


@pytest.fixture
def box(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir(HOME, mode=0o755, uid=1000, gid=100)
    return sandbox


def configure(box, repos, **extra):
    git = {"allowed_schemes": ["http"], "min_free_mb": 0, **extra.pop("git", {})}
    document = {"version": 1, "git": git, "repos": repos, **extra}
    box.write("/etc/nbinit/config.yaml", yaml.safe_dump(document))


def start(box, command=("true",), **kwargs):
    return box.run(["nbinit", "start", "--", *command], timeout=60, **kwargs)


def test_a_failed_repo_leaves_the_file_as_the_user_and_a_clean_restart_removes_it(box, git):
    root, server = git
    publish(root, "intro")
    configure(
        box,
        [{"url": server.url("intro"), "dest": "intro"}, {"url": server.url("gone"), "dest": "lab"}],
    )
    first = start(box)
    assert first.returncode == 0, first.stderr
    warnings = first.lines("WARNING")
    assert len(warnings) == 1 and "lab" in warnings[0], first.stderr
    written = box.host_view(f"{HOME}/{NAME}")
    info = written.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (1000, 100, 0o644)
    text = written.read_text()
    assert text.startswith("Your notebook server started, but not everything went as planned\n")
    assert f"- {warnings[0].split('nbinit: ', 1)[1]}\n" in text
    assert "intro" not in text.split("reported these problems")[1].split("More detail")[0]
    assert "nbinit status" in text

    publish(root, "gone")  # the admin fixes the repo; the user restarts
    second = start(box)
    assert second.returncode == 0, second.stderr
    assert second.lines("WARNING") == []
    assert not os.path.lexists(written)
    assert box.host_view(f"{HOME}/lab/README.md").read_text() == "hello\n"


def test_a_repo_that_fails_in_the_background_updates_the_file_when_the_sync_ends(box, git):
    root, server = git
    publish(root, "intro")
    hang = HangServer()
    try:
        configure(
            box,
            [
                {"url": server.url("intro"), "dest": "intro"},
                {"url": hang.url("slow"), "dest": "slow"},
            ],
            deadline=2,
            git={"timeout": 4},
        )
        wait_for_file = (
            f"for i in $(seq 200); do [ -e {HOME}/{NAME} ] && break; sleep 0.1; done; "
            f"cat {HOME}/{NAME}"
        )
        started = time.monotonic()
        result = start(box, ("sh", "-c", wait_for_file))
        took = time.monotonic() - started
    finally:
        hang.stop()
    assert result.returncode == 0, result.stderr
    # At exec nothing had failed yet: the start itself logged no WARNING and wrote no file;
    # the worker's own line comes later.
    assert [line[-40:] for line in result.lines("WARNING")] == [
        "slow: git clone timed out after 4s (background)"[-40:]
    ], result.stderr
    assert "continuing in the background" in result.stderr
    assert "- slow: " in result.stdout, result.stdout
    assert "Still syncing" not in result.stdout
    assert took < 20
    assert box.host_view(f"{HOME}/{NAME}").stat().st_uid == 1000


def test_off_writes_nothing_and_a_symlink_at_the_name_is_replaced_not_followed(box, git):
    root, server = git
    configure(box, [{"url": server.url("gone"), "dest": "lab"}], problems_file="off")
    assert start(box).returncode == 0
    assert not os.path.lexists(box.host_view(f"{HOME}/{NAME}"))

    configure(box, [{"url": server.url("gone"), "dest": "lab"}])
    box.write("/etc/precious", "root's\n", mode=0o644)
    box.symlink(f"{HOME}/{NAME}", "/etc/precious", uid=1000, gid=100)
    result = start(box)
    assert result.returncode == 0, result.stderr
    assert box.read("/etc/precious") == "root's\n"
    written = box.host_view(f"{HOME}/{NAME}")
    assert not written.is_symlink() and written.stat().st_uid == 1000
    assert "- lab: " in written.read_text()
