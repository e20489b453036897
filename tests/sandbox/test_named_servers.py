"""Named servers: two of one user's servers start at once on the same home volume.

Two containers (two sandboxes, as two pods would be), each with its own /etc and hostname,
share one home directory bind-mounted from the test's tmp dir, and start together against a slowed
git server so their syncs overlap. Each repo must be cloned exactly once, and no lock,
temporary or partial clone may be left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading

import pytest
import yaml
from helpers.gitserver import GitHttpProcess, Pusher, make_bare
from helpers.sandbox import Sandbox

pytestmark = pytest.mark.sandbox

HOME = "/home/jovyan"
REPOS = ("intro", "lab", "data")


def test_two_starts_on_one_home_sync_each_repo_once_and_leave_nothing_behind(sandbox, tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    for name in REPOS:
        pusher = Pusher(make_bare(root, name, "main"), tmp_path / "work" / name, "main")
        # ~200 KiB of incompressible data: a dozen throttled chunks, so the clones overlap.
        pusher.publish({"README.md": f"{name}\n", "data.bin": os.urandom(200_000).hex()}, "v1")
    server = GitHttpProcess(root, throttle=0.1)
    volume = tmp_path / "home-volume"
    volume.mkdir()
    os.chown(volume, 1000, 100)
    config = {
        "version": 1,
        "deadline": 90,
        "git": {"allowed_schemes": ["http"], "min_free_mb": 0},
        "repos": [{"url": server.url(name), "dest": name} for name in REPOS],
    }
    # Two pods: each its own hostname (the repo lock tells a dead owner on this host from
    # a live one elsewhere by it), one home volume.
    boxes = [sandbox, Sandbox(tmp_path / "second")]
    for index, box in enumerate(boxes):
        box.hostname = f"jupyter-alice--server{index}"
        box.add_jovyan()
        box.setup.append(f"mount --bind {volume} $R{HOME}")
        box.write("/etc/nbinit/config.yaml", yaml.safe_dump(config))
    results: list = [None, None]
    barrier = threading.Barrier(2)

    def start(index: int) -> None:
        barrier.wait()
        results[index] = boxes[index].run(["nbinit", "start", "--", "true"], timeout=120)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(150)
    finally:
        server.kill()
    for result in results:
        assert result is not None and result.returncode == 0, result and result.stderr
        assert result.lines("WARNING") == [], result.stderr
    logs = "\n".join(result.stderr for result in results)
    for name in REPOS:
        cloned = re.findall(rf"nbinit: cloned \S+/{name}\.git into {name} ", logs)
        assert len(cloned) == 1, (name, logs)
        # The other start saw it being synced (or already there), and left it alone.
        assert re.search(rf"nbinit: {name}: .* is syncing it|nbinit: {name}: up to date", logs), (
            name,
            logs,
        )
    # Nothing left behind: no lock, no temporary clone, each repo whole.
    locks = volume / ".cache" / "nbinit" / "locks"
    assert not locks.exists() or os.listdir(locks) == []
    visible = sorted(p for p in os.listdir(volume) if not p.startswith("."))
    assert visible == sorted(REPOS)
    leftovers = [p for p in os.listdir(volume) if p.startswith(".") and "nbinit" in p]
    assert leftovers == []
    for name in REPOS:
        repo = volume / name
        assert (repo / "README.md").read_text() == f"{name}\n"
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(repo), "fsck", "--no-dangling"],
            check=True,
            capture_output=True,
        )
        owners = {p.stat().st_uid for p in repo.rglob("*") if not p.is_symlink()}
        assert owners == {1000}, name
