# ruff: noqa: E501 - the corpus below holds exact log lines
"""Repo sync end to end: real git servers on loopback, nbinit as PID 1, git as jovyan.

Each test asserts what a user sees: the exit code, the exact log line, the files (and their
owners) in the home afterwards, and that nothing else changed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers.gitserver import (
    GitDaemon,
    GitHttpProcess,
    GitHttpServer,
    HangServer,
    Pusher,
    ResetOnceProxy,
    make_bare,
)

pytestmark = pytest.mark.sandbox

HOME = "/home/jovyan"
STATUS = "/var/lib/nbinit-test/status.json"
BASE = "1\n2\n3\n4\n5\n6\n7\n"
PROBLEMS = "STARTUP-PROBLEMS.txt"


class Upstream:
    """Bare repos served over smart HTTP, each with a pusher playing the course author."""

    def __init__(self, root: Path) -> None:
        self.root = root / "srv"
        self.root.mkdir()
        self.work = root / "work"
        self.server = GitHttpServer(self.root).start()
        self.pushers: dict[str, Pusher] = {}

    def repo(self, name: str, files: dict[str, str], branch: str = "main") -> Pusher:
        bare = make_bare(self.root, name, branch)
        pusher = Pusher(bare, self.work / name, branch)
        pusher.publish(files, "initial")
        self.pushers[name] = pusher
        return pusher

    def url(self, name: str) -> str:
        return self.server.url(name)


@pytest.fixture
def upstream(tmp_path):
    up = Upstream(tmp_path)
    yield up
    up.server.stop()


@pytest.fixture
def box(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir(HOME, mode=0o755, uid=1000, gid=100)
    sandbox.mkdir(os.path.dirname(STATUS), mode=0o755)
    return sandbox


def configure(box, repos, git=None, deadline=None, dotfile=None):
    settings = {"allowed_schemes": ["http"], "min_free_mb": 0, **(git or {})}
    document = {"version": 1, "git": settings, "repos": repos}
    if deadline:
        document["deadline"] = deadline
    box.write("/etc/nbinit/config.yaml", yaml.safe_dump(document))
    if dotfile is not None:
        box.write(f"{HOME}/.nbinit.yaml", yaml.safe_dump(dotfile), uid=1000, gid=100)


def start(box, command=("true",), env=None, **kwargs):
    return box.run(
        ["nbinit", "start", "--", *command],
        env={"NBINIT_STATUS_FILE": STATUS, **(env or {})},
        **kwargs,
    )


def as_user(box, *argv):
    """A command as jovyan inside the container (the user at a terminal)."""
    result = box.run(
        ["setpriv", "--reuid=1000", "--regid=100", "--clear-groups", "env", f"HOME={HOME}", *argv]
    )
    assert result.returncode == 0, result.stderr
    return result


def home(box, rel=""):
    return box.host_view(f"{HOME}/{rel}")


def read(box, rel):
    return home(box, rel).read_text()


def user_write(box, rel, content):
    box.write(f"{HOME}/{rel}", content, uid=1000, gid=100)


def git_host(path, *args):
    """Read-only git on the host side of the overlay (never writes: no root-owned files)."""
    return subprocess.run(
        ["git", "--no-optional-locks", "-c", "safe.directory=*", "-C", str(path), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def messages(result, level):
    return [line.split("nbinit: ", 1)[1] for line in result.lines(level)]


def clean_start(box):
    result = start(box)
    assert result.returncode == 0, result.stderr
    assert messages(result, "WARNING") == [], result.stderr
    return result


def canaries(box):
    found = box.host_view("/var/tmp")
    return [p for p in os.listdir(found) if "canary" in p] if found.exists() else []


def owners(path: Path) -> set[int]:
    found = {os.lstat(path).st_uid}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            found.add(os.lstat(os.path.join(root, name)).st_uid)
    return found


# -- clone and update --------------------------------------------------------------------------


def test_clone_then_nothing_changed(box, upstream):
    upstream.repo("course", {"a.txt": BASE})
    configure(box, [{"url": upstream.url("course"), "dest": "lectures/course"}])
    first = clean_start(box)
    assert f"cloned {upstream.url('course')} into lectures/course (main)" in messages(first, "INFO")
    assert read(box, "lectures/course/a.txt") == BASE
    assert (home(box, "lectures/course/.git/shallow")).exists()
    assert oct(os.stat(home(box, "lectures/course")).st_mode & 0o777) == "0o755"
    second = clean_start(box)
    assert "lectures/course: up to date (main)" in messages(second, "INFO")
    assert owners(home(box)) == {1000}
    leftovers = [p for p in os.listdir(home(box, "lectures")) if "nbinit-clone" in p]
    assert leftovers == []


def test_every_git_process_runs_as_the_user(box, upstream):
    box.write("/var/log/git-calls.log", "", mode=0o666)
    box.write(
        "/usr/local/bin/git",
        '#!/bin/sh\necho "$(id -u):$(id -g):$(id -G) $1" >> /var/log/git-calls.log\n'
        'exec /usr/bin/git "$@"\n',
        mode=0o755,
    )
    pusher = upstream.repo("course", {"a.txt": BASE})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    clean_start(box)
    user_write(box, "course/a.txt", BASE.replace("1\n", "mine\n"))
    pusher.publish({"b.txt": "new\n"})
    clean_start(box)
    calls = box.host_view("/var/log/git-calls.log").read_text().splitlines()
    assert len(calls) >= 5
    assert {line.split()[0] for line in calls} == {"1000:100:100"}, calls
    assert owners(home(box)) == {1000}
    assert read(box, "course/a.txt") == BASE.replace("1\n", "mine\n")
    assert read(box, "course/b.txt") == "new\n"


@pytest.mark.parametrize("branch", ["main", "master"])
def test_default_branch_is_the_remotes_head(box, upstream, branch):
    pusher = upstream.repo("course", {"a.txt": "v1\n"}, branch=branch)
    configure(box, [{"url": upstream.url("course")}])
    first = clean_start(box)
    assert f"cloned {upstream.url('course')} into course ({branch})" in messages(first, "INFO")
    pusher.publish({"a.txt": "v2\n"})
    clean_start(box)
    assert read(box, "course/a.txt") == "v2\n"
    assert git_host(home(box, "course"), "branch", "--show-current").strip() == branch


def test_pull_on_a_real_shallow_clone(box, upstream):
    pusher = upstream.repo("course", {"a.txt": BASE})
    for n in range(30):
        pusher.publish({f"old{n}.txt": str(n)})
    configure(box, [{"url": upstream.url("course"), "dest": "course", "depth": 1}])
    clean_start(box)
    clone = home(box, "course")
    assert git_host(clone, "rev-list", "--count", "HEAD").strip() == "1"
    user_write(box, "course/a.txt", BASE.replace("1\n", "mine\n"))
    for n in range(3):
        pusher.publish({"a.txt": BASE.replace("7\n", f"seven{n}\n"), f"new{n}.txt": "x"})
    clean_start(box)
    assert read(box, "course/a.txt") == "mine\n2\n3\n4\n5\n6\nseven2\n"
    assert (clone / ".git" / "shallow").exists()
    # The new commits came down and a few to connect them, not the 31-commit history.
    assert int(git_host(clone, "rev-list", "--count", "HEAD").strip()) <= 12


def _commit_as_user(box, rel):
    as_user(
        box,
        "git",
        "-C",
        f"{HOME}/{rel}",
        "-c",
        "user.name=J",
        "-c",
        "user.email=j@x",
        "commit",
        "-qam",
        "mine",
    )


def _stage_as_user(box, rel, path):
    as_user(box, "git", "-C", f"{HOME}/{rel}", "add", path)


# Each case: what the user does, what upstream does, and the exact files afterwards
# (None: the file must not exist). The nbgitpuller policy, measured case by case.
MATRIX = {
    "upstream-changes-local-untouched": (
        {},
        {"a.txt": BASE.replace("4\n", "four\n")},
        {"a.txt": BASE.replace("4\n", "four\n")},
    ),
    "different-lines-both-kept": (
        {"a.txt": BASE.replace("1\n", "mine\n")},
        {"a.txt": BASE.replace("7\n", "theirs\n")},
        {"a.txt": "mine\n2\n3\n4\n5\n6\ntheirs\n"},
    ),
    "same-line-keeps-users-side-other-hunks-arrive": (
        {"a.txt": BASE.replace("1\n", "mine\n")},
        {"a.txt": BASE.replace("1\n", "theirs\n").replace("7\n", "seven\n")},
        {"a.txt": "mine\n2\n3\n4\n5\n6\nseven\n"},
    ),
    "deleted-locally-comes-back": (
        {"a.txt": None},
        {"c.txt": "c\n"},
        {"a.txt": BASE, "c.txt": "c\n"},
    ),
    "deleted-locally-nothing-upstream": ({"a.txt": None}, None, {"a.txt": BASE}),
    "deleted-locally-changed-upstream-gets-new-copy": (
        {"a.txt": None},
        {"a.txt": BASE + "8\n"},
        {"a.txt": BASE + "8\n"},
    ),
    "deleted-on-both-sides-stays-deleted": (
        {"b.txt": None},
        {"b.txt": None, "c.txt": "c\n"},
        {"b.txt": None, "c.txt": "c\n", "a.txt": BASE},
    ),
    "modified-locally-deleted-upstream-keeps-users-file": (
        {"b.txt": "my b\n"},
        {"b.txt": None},
        {"b.txt": "my b\n"},
    ),
    "untracked-no-clash-left-alone": (
        {"notes.txt": "mine\n"},
        {"c.txt": "c\n"},
        {"notes.txt": "mine\n"},
    ),
}


@pytest.mark.parametrize("case", list(MATRIX))
def test_merge_matrix(box, upstream, case):
    local, remote, expected = MATRIX[case]
    pusher = upstream.repo("course", {"a.txt": BASE, "b.txt": "b\n"})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    clean_start(box)
    for rel, content in local.items():
        if content is None:
            home(box, f"course/{rel}").unlink()
        else:
            user_write(box, f"course/{rel}", content)
    if remote is not None:
        for rel, content in remote.items():
            pusher.delete(rel) if content is None else pusher.write(rel, content)
        pusher.commit()
        pusher.push()
    result = clean_start(box)
    for rel, content in expected.items():
        path = home(box, f"course/{rel}")
        if content is None:
            assert not path.exists(), rel
        else:
            assert path.read_text() == content, rel
    tracked = git_host(home(box, "course"), "ls-files").split()
    assert "notes.txt" not in tracked  # untracked user files are never committed
    assert owners(home(box)) == {1000}
    assert len(messages(result, "INFO")) >= 2


def test_untracked_file_clashing_with_upstream_is_renamed_aside(box, upstream):
    pusher = upstream.repo("course", {"a.txt": BASE})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    clean_start(box)
    user_write(box, "course/new.txt", "my own\n")
    user_write(box, "course/data", "my data file\n")
    pusher.publish({"new.txt": "theirs\n", "data/x.csv": "1,2\n"})
    result = clean_start(box)
    assert read(box, "course/new.txt") == "theirs\n"
    assert read(box, "course/data/x.csv") == "1,2\n"
    aside = sorted(p for p in os.listdir(home(box, "course")) if "__" in p)
    assert len(aside) == 2, aside
    assert (
        re.fullmatch(r"new__\d{14}\.txt", aside[1])
        and read(box, f"course/{aside[1]}") == "my own\n"
    )
    assert (
        re.fullmatch(r"data__\d{14}", aside[0])
        and read(box, f"course/{aside[0]}") == "my data file\n"
    )
    assert any("2 clashing file(s) renamed" in m for m in messages(result, "INFO"))


def test_users_own_commit_and_staged_change_are_merged(box, upstream):
    pusher = upstream.repo("course", {"a.txt": BASE, "b.txt": "b\n"})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    clean_start(box)
    user_write(box, "course/a.txt", BASE.replace("1\n", "committed\n"))
    _commit_as_user(box, "course")
    user_write(box, "course/b.txt", "staged\n")
    _stage_as_user(box, "course", "b.txt")
    pusher.publish({"a.txt": BASE.replace("7\n", "theirs\n")})
    clean_start(box)
    assert read(box, "course/a.txt") == "committed\n2\n3\n4\n5\n6\ntheirs\n"
    assert read(box, "course/b.txt") == "staged\n"
    parents = git_host(home(box, "course"), "log", "-1", "--format=%P").split()
    assert len(parents) == 2


def test_branch_change_switches_when_clean_and_reports_when_not(box, upstream):
    pusher = upstream.repo("course", {"a.txt": "main\n"})
    pusher.switch("dev")
    pusher.publish({"a.txt": "dev\n"})
    configure(box, [{"url": upstream.url("course"), "dest": "course", "branch": "main"}])
    clean_start(box)
    configure(box, [{"url": upstream.url("course"), "dest": "course", "branch": "dev"}])
    result = clean_start(box)
    assert "course: switched from main to dev" in messages(result, "INFO")
    assert read(box, "course/a.txt") == "dev\n"
    user_write(box, "course/a.txt", "my edit\n")
    configure(box, [{"url": upstream.url("course"), "dest": "course", "branch": "main"}])
    result = start(box)
    assert messages(result, "WARNING") == [
        "course: config asks for branch main but dev has local changes: left as is"
    ]
    assert read(box, "course/a.txt") == "my edit\n"


@pytest.mark.parametrize("on_diverge", ["report", "backup"])
def test_force_push(box, upstream, on_diverge):
    pusher = upstream.repo("course", {"a.txt": BASE})
    item = {"url": upstream.url("course"), "dest": "course", "on_diverge": on_diverge}
    configure(box, [item])
    clean_start(box)
    user_write(box, "course/a.txt", "my work\n")
    pusher.rewrite({"z.txt": "rewritten\n"})
    result = start(box)
    assert result.returncode == 0
    warnings = messages(result, "WARNING")
    if on_diverge == "report":
        expected = (
            "course: upstream history was rewritten (force-push); the admin can set "
            "`on_diverge: backup` to back up and clone again: left as is"
        )
        assert warnings == [expected]
        assert read(box, "course/a.txt") == "my work\n"
        assert not home(box, "course/z.txt").exists()
        assert messages(start(box), "WARNING") == [expected]  # reported again, never adopted
    else:
        backups = [p for p in os.listdir(home(box)) if p.startswith("course.backup-")]
        assert len(backups) == 1
        assert re.fullmatch(r"course\.backup-\d{8}-\d{6}", backups[0])
        assert warnings == [
            f"upstream of course was rewritten: your copy is in {backups[0]}, cloned again"
        ]
        assert read(box, f"{backups[0]}/a.txt") == "my work\n"
        assert read(box, "course/z.txt") == "rewritten\n"
        assert not home(box, "course/a.txt").exists()
    assert owners(home(box)) == {1000}


@pytest.mark.parametrize(
    "prepare, words",
    [
        pytest.param(
            lambda b: b.mkdir(f"{HOME}/course", uid=1000, gid=100),
            "exists and is empty (not a clone)",
            id="empty-dir",
        ),
        pytest.param(
            lambda b: (
                b.mkdir(f"{HOME}/course", uid=1000, gid=100),
                user_write(b, "course/x", "x"),
            ),
            "exists and is not a git repository",
            id="not-git",
        ),
        pytest.param(
            lambda b: b.mkdir(f"{HOME}/course"),
            "is not owned by you",
            id="root-owned-dir",
        ),
        pytest.param(
            lambda b: user_write(b, "course", "x"), "exists and is not a directory", id="a-file"
        ),
    ],
)
def test_existing_dest_that_is_not_ours_is_left(box, upstream, prepare, words):
    upstream.repo("course", {"a.txt": BASE})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    prepare(box)
    before = {p: p.read_bytes() if p.is_file() else None for p in home(box).rglob("*")}
    result = start(box)
    assert result.returncode == 0
    assert messages(result, "WARNING") == [f"course: {words}: left as is"]
    assert f"- course: {words}: left as is" in read(box, PROBLEMS)
    after = {
        p: p.read_bytes() if p.is_file() else None
        for p in home(box).rglob("*")
        if ".cache" not in str(p) and p.name != PROBLEMS
    }
    assert after == {p: v for p, v in before.items() if ".cache" not in str(p)}


def test_clone_of_another_origin_is_left(box, upstream):
    upstream.repo("course", {"a.txt": BASE})
    upstream.repo("other", {"o.txt": "o"})
    configure(box, [{"url": upstream.url("other"), "dest": "course"}])
    clean_start(box)
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    result = start(box)
    assert messages(result, "WARNING") == [
        f"course: is a clone of another origin ({upstream.url('other')}): left as is"
    ]
    assert read(box, "course/o.txt") == "o"


def test_git_daemon_and_user_dotfile_repos(box, upstream):
    upstream.repo("course", {"a.txt": BASE})
    upstream.repo("mine", {"m.txt": "m\n"})
    daemon = GitDaemon(upstream.root)
    try:
        configure(
            box,
            [{"url": daemon.url("course"), "dest": "course"}],
            git={"allowed_schemes": ["git", "http"], "allowed_hosts": ["127.0.0.1"]},
            dotfile={
                "repos": [{"url": upstream.url("mine"), "dest": "own/mine", "on_diverge": "backup"}]
            },
        )
        clean_start(box)
    finally:
        daemon.stop()
    assert read(box, "course/a.txt") == BASE
    assert read(box, "own/mine/m.txt") == "m\n"


def test_dry_run_changes_nothing(box, upstream):
    upstream.repo("course", {"a.txt": BASE})
    upstream.repo("two", {"a.txt": BASE})
    configure(
        box, [{"url": upstream.url("course"), "dest": "course"}, {"url": upstream.url("two")}]
    )
    clean_start(box)
    result = box.run(["nbinit", "repos", "sync", "--dry-run"], env={})
    assert result.returncode == 0, result.stderr
    shutil_rm = home(box, "two")
    subprocess.run(["rm", "-rf", str(shutil_rm)], check=True)
    result = box.run(["nbinit", "repos", "sync", "--dry-run"], env={})
    assert "would update course from " + upstream.url("course") in messages(result, "INFO")
    assert f"would clone {upstream.url('two')} into two" in messages(result, "INFO")
    assert not home(box, "two").exists()


def test_repos_sync_in_a_terminal_as_the_user(box, upstream):
    pusher = upstream.repo("course", {"a.txt": BASE})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    clean_start(box)
    pusher.publish({"b.txt": "b\n"})
    result = as_user(box, "nbinit", "repos", "sync")
    assert any(m.startswith("updated course to ") for m in messages(result, "INFO")), result.stderr
    assert read(box, "course/b.txt") == "b\n"


def test_a_live_lock_from_another_pod_is_respected(box, upstream):
    upstream.repo("course", {"a.txt": BASE})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    from nbinit.git import lock as gitlock

    lock = f"{HOME}/.cache/nbinit/locks/{gitlock.lock_name('course')}.lock"
    for d in (f"{HOME}/.cache", f"{HOME}/.cache/nbinit", f"{HOME}/.cache/nbinit/locks", lock):
        box.mkdir(d, mode=0o700, uid=1000, gid=100)
    owner = {"host": "other-pod", "pid": 7, "start": "1", "token": "t"}
    box.write(f"{lock}/owner", json.dumps(owner), uid=1000, gid=100)
    result = clean_start(box)
    assert "course: another nbinit (host other-pod, pid 7) is syncing it" in messages(
        result, "INFO"
    )
    assert not home(box, "course").exists()
    old = time.time() - 3600
    os.utime(box.host_view(f"{lock}/owner"), (old, old))
    clean_start(box)  # the other pod died an hour ago: its lock is stale
    assert read(box, "course/a.txt") == BASE


# -- the bad-URL and bad-dest corpus -----------------------------------------------------------

CANARY = "/var/tmp/nbinit-canary"
SECRET = "s3cr3tTOKEN"

CORPUS = [
    pytest.param(
        {"url": f"ext::sh -c touch% {CANARY}"},
        "url 'ext::sh -c touch% /var/tmp/nbinit-canary': transport 'ext::' is never allowed: use an https:// or ssh:// URL",
        id="ext",
    ),
    pytest.param(
        {"url": "fd::17"},
        "url 'fd::17': transport 'fd::' is never allowed: use an https:// or ssh:// URL",
        id="fd",
    ),
    pytest.param(
        {"url": f"--upload-pack=touch {CANARY}"},
        f"url '--upload-pack=touch {CANARY}' starts with '-' (an option, not a URL): see docs/security.md, 'The git sandbox', for what is allowed",
        id="upload-pack",
    ),
    pytest.param(
        {"url": f"ssh://-oProxyCommand=touch%20{CANARY}/x"},
        f"url 'ssh://-oProxyCommand=touch%20{CANARY}/x': host is missing or starts with '-': see docs/security.md, 'The git sandbox', for what is allowed",
        id="ssh-proxycommand",
    ),
    pytest.param(
        {"url": "file:///etc"},
        "url 'file:///etc': scheme file is not allowed (git.allowed_schemes: http, ssh): use an allowed scheme, or ask the admin to allow it",
        id="file-etc",
    ),
    pytest.param(
        {"url": "URL", "dest": "../../etc/x"},
        "dest '../../etc/x' leaves the home ('..'): give a directory relative to the home, e.g. `dest: notebooks/course`",
        id="dotdot-dest",
    ),
    pytest.param(
        {"url": "URL", "dest": "/etc/x"},
        "dest '/etc/x' is absolute: give a directory relative to the home, e.g. `dest: notebooks/course`",
        id="absolute-dest",
    ),
    pytest.param(
        {"url": "URL", "dest": "planted/x"},
        "dest 'planted/x' resolves outside the home (through a symlink): remove the symlink or choose another dest",
        id="symlinked-dest",
    ),
    pytest.param(
        {"url": "URL", "branch": "--upload-pack=x"},
        "branch '--upload-pack=x' is not a valid branch name: use letters, digits, '.', '_', '-' and '/', not starting with '-'",
        id="dash-branch",
    ),
    pytest.param(
        {"url": f"http://alice:{SECRET}@127.0.0.1:1/course.git"},
        "url 'http://127.0.0.1:1/course.git' carries a password, which would end up in .git/config: drop the user:password@ part and use git.token_env, a credential helper or ~/.netrc",
        id="password-in-url",
    ),
]


@pytest.mark.parametrize("declared_by", ["admin", "user"])
@pytest.mark.parametrize("item, line", CORPUS)
def test_bad_input_is_refused_and_the_server_starts(box, upstream, item, line, declared_by):
    upstream.repo("course", {"a.txt": BASE})
    item = {k: (upstream.url("course") if v == "URL" else v) for k, v in item.items()}
    box.mkdir("/srv/target", mode=0o777)
    box.symlink(f"{HOME}/planted", "/srv/target", uid=1000, gid=100)
    git = {"allowed_schemes": ["http", "ssh"], "allowed_hosts": ["127.0.0.1"]}
    if declared_by == "admin":
        configure(box, [item], git=git)
        where = "repos.0"
    else:
        configure(box, [], git=git, dotfile={"repos": [item]})
        where = "~/.nbinit.yaml repos.0"
    result = start(box, command=("sh", "-c", "echo server started"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "server started\n"
    warnings = messages(result, "WARNING")
    assert warnings == [f"{where}: refused: {line}"]
    assert canaries(box) == []
    assert os.listdir(box.host_view("/srv/target")) == []
    assert not box.host_view("/etc/x").exists()
    status = box.host_view(STATUS).read_text()
    for text in (result.stdout, result.stderr, status):
        assert SECRET not in text
    listed = [p for p in os.listdir(home(box)) if not p.startswith(".") and p != "planted"]
    assert listed == [PROBLEMS]  # it tells the user what was refused, and why
    assert owners(home(box)) == {1000}


# -- faults ------------------------------------------------------------------------------------


def test_hung_server_the_deadline_holds_and_sync_goes_on_in_the_background(box, upstream):
    hang = HangServer()
    upstream.repo("course", {"a.txt": BASE})
    try:
        configure(
            box,
            [
                {"url": upstream.url("course"), "dest": "course"},
                {"url": hang.url("hung"), "dest": "hung"},
            ],
        )
        started = time.monotonic()
        result = start(box, command=("sh", "-c", "echo up"), env={"NBINIT_DEADLINE": "4"})
        wall = time.monotonic() - started
    finally:
        hang.stop()
    assert result.returncode == 0 and result.stdout == "up\n", result.stderr
    ready = float(re.search(r"ready in ([0-9.]+)s", result.stderr).group(1))
    assert ready <= 4 + 0.5, result.stderr
    assert wall <= 4 + 2.5  # includes the container's own setup
    assert read(box, "course/a.txt") == BASE
    assert (
        f"1 repo(s) still syncing, continuing in the background as jovyan after the server "
        f"starts (progress: {HOME}/.cache/nbinit/repos.json)"
    ) in messages(result, "INFO")
    status = json.loads(box.host_view(STATUS).read_text())
    repos = next(s for s in status["steps"] if s["name"] == "repos")
    assert repos["details"]["background"] == ["hung"]
    progress = json.loads(read(box, ".cache/nbinit/repos.json"))
    states = {r["dest"]: r["state"] for r in progress["repos"]}
    assert states == {"course": "done", "hung": "running"}
    shown = box.run(["nbinit", "status"], env={"NBINIT_STATUS_FILE": STATUS})
    assert "hung: running" in shown.stdout, shown.stdout


def test_background_sync_finishes_after_the_server_started(box, tmp_path):
    root = tmp_path / "slow"
    root.mkdir()
    pusher = Pusher(make_bare(root, "big"), tmp_path / "bigwork")
    pusher.publish({"blob.bin": os.urandom(400_000).hex()})
    server = GitHttpProcess(root, throttle=0.05)
    try:
        configure(box, [{"url": server.url("big"), "dest": "big"}])
        result = start(
            box, command=("sh", "-c", "sleep 12; echo done"), env={"NBINIT_DEADLINE": "2"}
        )
    finally:
        server.kill()
    assert result.returncode == 0, result.stderr
    ready = float(re.search(r"ready in ([0-9.]+)s", result.stderr).group(1))
    assert ready <= 2.5
    assert "cloned" in result.stderr and "(background)" in result.stderr, result.stderr
    progress = json.loads(read(box, ".cache/nbinit/repos.json"))
    assert progress["finished"] is True
    assert progress["repos"][0]["outcome"] == "cloned"
    assert len(read(box, "big/blob.bin")) == 800_000


def test_server_killed_mid_clone_then_next_start_recovers(box, tmp_path):
    root = tmp_path / "slow"
    root.mkdir()
    pusher = Pusher(make_bare(root, "big"), tmp_path / "bigwork")
    pusher.publish({"blob.bin": os.urandom(400_000).hex()})
    server = GitHttpProcess(root, throttle=0.05)
    port = server.port
    configure(box, [{"url": server.url("big"), "dest": "big"}])
    threading.Timer(1.5, server.kill).start()
    result = start(box)
    assert result.returncode == 0
    [warning] = messages(result, "WARNING")
    assert warning.startswith("big: git clone failed: "), warning
    assert not home(box, "big").exists()
    assert [p for p in os.listdir(home(box)) if "nbinit-clone" in p] == []
    # The container itself killed mid-clone: its temp dir is left, and the next start cleans up.
    server = GitHttpProcess(root, throttle=0.05, port=port)
    try:
        # Killed once the clone's temp dir exists (a loaded machine takes seconds to get there).
        killed = start(
            box,
            send_signal_after=(0.2, signal.SIGKILL),
            signal_once=lambda: any("nbinit-clone" in p for p in os.listdir(home(box))),
        )
        assert killed.returncode != 0, killed.stderr  # unshare reports its PID 1 killed as 1
        assert [p for p in os.listdir(home(box)) if "nbinit-clone" in p] != []
    finally:
        server.kill()
    server = GitHttpProcess(root, port=port)
    try:
        clean_start(box)
    finally:
        server.kill()
    assert len(read(box, "big/blob.bin")) == 800_000
    assert [p for p in os.listdir(home(box)) if "nbinit-clone" in p] == []


@pytest.mark.parametrize("floor", [0, 500])
def test_full_disk_keeps_the_users_files(box, upstream, floor):
    upstream.repo("course", {"blob.bin": os.urandom(3_000_000).hex()})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}], git={"min_free_mb": floor})
    box.setup.append(
        f"mount -t tmpfs -o size=4m,mode=755 tmpfs $R{HOME} && "
        f"echo precious > $R{HOME}/notes.txt && chown -R 1000:100 $R{HOME}"
    )
    result = start(box, command=("sh", "-c", f"cat {HOME}/notes.txt; ls -A {HOME}"))
    assert result.returncode == 0, result.stderr
    [warning] = messages(result, "WARNING")
    if floor:
        assert warning == (
            "course: only 4 MB free in the home (git.min_free_mb 500): new clone skipped"
        )
    else:
        assert warning.startswith("course: git clone failed: "), warning
    lines = result.stdout.split()
    assert lines[0] == "precious"
    assert "course" not in lines and not any("nbinit-clone" in p for p in lines), lines


# -- hooks, the pod's environment, credentials -------------------------------------------------


def test_no_hook_in_a_clone_ever_runs(box, upstream):
    pusher = upstream.repo("course", {"a.txt": BASE})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    clean_start(box)
    for hook in (
        "post-merge",
        "pre-commit",
        "post-checkout",
        "reference-transaction",
        "pre-merge-commit",
    ):
        box.write(
            f"{HOME}/course/.git/hooks/{hook}",
            f"#!/bin/sh\ntouch {CANARY}-{hook}\n",
            mode=0o755,
            uid=1000,
            gid=100,
        )
    user_write(box, "course/a.txt", BASE.replace("1\n", "mine\n"))
    pusher.publish({"a.txt": BASE.replace("7\n", "theirs\n")})
    clean_start(box)
    assert read(box, "course/a.txt") == "mine\n2\n3\n4\n5\n6\ntheirs\n"
    assert canaries(box) == []


def test_the_pods_git_variables_never_reach_git(box, upstream):
    upstream.repo("course", {"a.txt": BASE})
    configure(
        box,
        [{"url": upstream.url("course"), "dest": "course"}, {"url": "ssh://127.0.0.1:1/x.git"}],
        git={"allowed_schemes": ["http", "ssh"]},
    )
    pod = {
        "GIT_SSH_COMMAND": f"touch {CANARY}-ssh; false",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.fsmonitor",
        "GIT_CONFIG_VALUE_0": f"touch {CANARY}-fsmonitor; false",
        "GIT_DIR": "/etc",
    }
    result = start(box, env=pod)
    assert result.returncode == 0
    [warning] = messages(result, "WARNING")
    assert warning.startswith("x: git clone failed: "), warning
    assert read(box, "course/a.txt") == BASE
    assert canaries(box) == []


def test_token_from_env_never_lands_in_url_config_log_or_status(box, tmp_path):
    root = tmp_path / "private"
    root.mkdir()
    Pusher(make_bare(root, "course"), tmp_path / "pwork").publish({"a.txt": BASE})
    server = GitHttpServer(root, auth=f"x-access-token:{SECRET}").start()
    try:
        configure(
            box,
            [{"url": server.url("course"), "dest": "course"}],
            git={"token_env": "COURSE_TOKEN"},
        )
        denied = start(box)
        assert messages(denied, "WARNING")[0].startswith("course: git clone failed: "), (
            denied.stderr
        )
        result = start(box, env={"COURSE_TOKEN": SECRET})
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert messages(result, "WARNING") == []
    assert read(box, "course/a.txt") == BASE
    texts = [result.stdout, result.stderr, box.host_view(STATUS).read_text()]
    for path in home(box).rglob("*"):
        if path.is_file() and not path.is_symlink():
            texts.append(path.read_bytes().decode("latin-1"))
    assert not [t for t in texts if SECRET in t]
    assert "127.0.0.1" in read(box, "course/.git/config")


def test_poststart_mode_syncs_too(box, upstream):
    upstream.repo("course", {"a.txt": BASE})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    result = box.run(["nbinit", "poststart"], env={"NBINIT_STATUS_FILE": STATUS})
    assert result.returncode == 0, result.stderr
    assert read(box, "course/a.txt") == BASE


def test_parallel_clones_stay_within_git_workers(box, tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    for n in range(6):
        Pusher(make_bare(root, f"r{n}"), tmp_path / "w" / str(n)).publish({"a.txt": "x" * 200_000})
    server = GitHttpProcess(root, throttle=0.01)
    box.write("/var/log/git-calls.log", "", mode=0o666)
    box.write(
        "/usr/local/bin/git",
        "#!/bin/sh\n"
        'case " $* " in *" clone "*) echo "start $(date +%s.%N)" >> /var/log/git-calls.log;; esac\n'
        '/usr/bin/git "$@"; rc=$?\n'
        'case " $* " in *" clone "*) echo "end $(date +%s.%N)" >> /var/log/git-calls.log;; esac\n'
        "exit $rc\n",
        mode=0o755,
    )
    try:
        repos = [{"url": server.url(f"r{n}"), "dest": f"r{n}"} for n in range(6)]
        configure(box, repos, git={"workers": 2})
        clean_start(box)
    finally:
        server.kill()
    events = sorted(
        (float(t), 1 if kind == "start" else -1)
        for kind, t in (
            line.split()
            for line in box.host_view("/var/log/git-calls.log").read_text().splitlines()
        )
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert len(events) == 12
    assert peak == 2


def test_sigterm_during_sync_stops_everything_and_never_starts_the_server(box):
    hang = HangServer()
    try:
        configure(box, [{"url": hang.url("hung"), "dest": "hung"}])
        started = time.monotonic()
        result = start(
            box, command=("sh", "-c", "echo started"), send_signal_after=(1.5, signal.SIGTERM)
        )
        elapsed = time.monotonic() - started
    finally:
        hang.stop()
    assert result.returncode == 143, result.stderr
    assert result.stdout == ""
    assert "terminated by signal before the server started" in result.stderr
    assert elapsed < 5
    assert not home(box, "hung").exists()


def test_repos_sync_in_a_terminal_waits_its_turn_behind_the_background_sync(box, tmp_path):
    root = tmp_path / "slow"
    root.mkdir()
    Pusher(make_bare(root, "big"), tmp_path / "bigwork").publish(
        {"blob.bin": os.urandom(2_000_000).hex()}
    )
    server = GitHttpProcess(root, throttle=0.05)
    try:
        configure(box, [{"url": server.url("big"), "dest": "big"}])
        # The "server" is jovyan's terminal: it syncs while the background clone still runs.
        result = start(
            box,
            command=("sh", "-c", "nbinit repos sync; echo rc=$?; sleep 15"),
            env={"NBINIT_DEADLINE": "2"},
        )
    finally:
        server.kill()
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"INFO\[.*\] nbinit: big: another nbinit \(host \S+, pid \d+\) is syncing it", result.stderr
    ), result.stderr
    assert "rc=0" in result.stdout
    assert len(read(box, "big/blob.bin")) == 4_000_000


def test_deleting_a_file_gives_upstreams_copy_even_after_earlier_edits_were_kept(box, upstream):
    """nbgitpuller#279: there, an earlier auto-commit came back; here delete means reset."""
    pusher = upstream.repo("course", {"a.txt": BASE})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    clean_start(box)
    user_write(box, "course/a.txt", BASE.replace("1\n", "mine\n"))
    pusher.publish({"b.txt": "b\n"})
    clean_start(box)  # the edit is kept (auto-committed)
    assert read(box, "course/a.txt") == BASE.replace("1\n", "mine\n")
    home(box, "course/a.txt").unlink()
    pusher.publish({"a.txt": BASE + "8\n"})
    clean_start(box)
    assert read(box, "course/a.txt") == BASE + "8\n"


def test_a_connection_reset_once_is_retried_not_reported(box, upstream):
    """A proxy that drops one connection: the clone still lands, with no warning."""
    upstream.repo("course", {"a.txt": BASE})
    proxy = ResetOnceProxy(upstream.server.port)
    try:
        configure(box, [{"url": proxy.url("course"), "dest": "course"}])
        clean_start(box)
    finally:
        proxy.stop()
    assert proxy.resets == 1
    assert read(box, "course/a.txt") == BASE


def test_a_busy_server_is_retried_after_its_retry_after(box, upstream):
    """HTTP 503 with Retry-After: 1 twice (a forge busy with a class): the clone waits at
    least that long before each retry, then lands with no warning."""
    upstream.repo("course", {"a.txt": BASE})
    upstream.server.busy[0] = 2
    configure(box, [{"url": upstream.url("course"), "dest": "course"}])
    clean_start(box)
    assert read(box, "course/a.txt") == BASE
    times = upstream.server.request_times
    assert len(times) >= 3
    assert times[1] - times[0] >= 1.0
    assert times[2] - times[1] >= 1.0


def test_a_server_busy_for_longer_than_git_timeout_is_given_up_within_it(box, upstream):
    """Always 503: the retries stop inside git.timeout, and the server still starts."""
    upstream.repo("course", {"a.txt": BASE})
    upstream.server.busy[0] = 1000
    configure(box, [{"url": upstream.url("course"), "dest": "course"}], git={"timeout": 4})
    started = time.monotonic()
    result = start(box)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert [m for m in messages(result, "WARNING") if m.startswith("course: ")] == [
        "course: git clone failed: unable to access "
        f"'{upstream.url('course')}/': The requested URL returned error: 503"
    ]
    times = upstream.server.request_times
    assert 2 <= len(times) <= 4  # retried (Retry-After 1 s, then backoff), never past 4 s
    assert times[-1] - times[0] < 4.0
    assert elapsed < 4.0 + 5.0  # the start itself (nbinit, worker) on a busy machine
    assert not home(box, "course").exists()


# -- git.mirror: clones borrow objects from a read-only mirror -----------------------------

MIRROR = "/srv/git-mirror"
BIG = {"data.txt": "".join(f"{n:08x}{os.urandom(24).hex()}\n" for n in range(20000))}  # ~1 MB


def make_mirror(box, upstream, name):
    """`git clone --mirror` into the mirror volume's layout, root-owned as a ReadOnlyMany
    volume would be (made on the host side of the overlay)."""
    target = box.host_view(f"{MIRROR}/127.0.0.1/{name}.git")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "clone", "-q", "--mirror", upstream.url(name), str(target)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return target


def mirror_warnings(result):
    return [m for m in messages(result, "WARNING") if "mirror" in m]


def test_with_a_fresh_mirror_the_server_sends_almost_nothing(box, upstream):
    upstream.repo("course", BIG)
    configure(box, [{"url": upstream.url("course"), "dest": "plain"}])
    clean_start(box)
    without = upstream.server.bytes_sent[0]
    make_mirror(box, upstream, "course")
    upstream.server.bytes_sent[0] = 0
    configure(box, [{"url": upstream.url("course"), "dest": "course"}], git={"mirror": MIRROR})
    clean_start(box)
    assert read(box, "course/data.txt") == BIG["data.txt"]
    assert upstream.server.bytes_sent[0] <= 0.05 * without, (upstream.server.bytes_sent, without)
    assert not home(box, "course/.git/objects/info/alternates").exists()  # --dissociate


def test_the_clone_works_after_the_mirror_is_deleted(box, upstream):
    upstream.repo("course", BIG)
    mirror = make_mirror(box, upstream, "course")
    configure(box, [{"url": upstream.url("course"), "dest": "course"}], git={"mirror": MIRROR})
    clean_start(box)
    subprocess.run(["rm", "-rf", str(mirror)], check=True)
    checked = as_user(box, "git", "-C", f"{HOME}/course", "fsck", "--full")
    assert "missing" not in checked.stdout + checked.stderr
    logged = as_user(box, "git", "-C", f"{HOME}/course", "show", "HEAD:data.txt")
    assert logged.stdout == BIG["data.txt"]


def test_a_stale_mirror_lends_what_it_has_with_a_warning(box, upstream):
    pusher = upstream.repo("course", BIG)
    make_mirror(box, upstream, "course")
    pusher.publish({"new.txt": "after the mirror was refreshed\n"})
    configure(box, [{"url": upstream.url("course"), "dest": "course"}], git={"mirror": MIRROR})
    result = start(box)
    assert result.returncode == 0, result.stderr
    [warning] = mirror_warnings(result)
    assert warning.startswith("cloned ")
    assert f"; mirror {MIRROR}/127.0.0.1/course.git: stale (lacks upstream's " in warning
    assert read(box, "course/new.txt") == "after the mirror was refreshed\n"
    assert read(box, "course/data.txt") == BIG["data.txt"]


@pytest.mark.parametrize(
    "breakage", ["no-mirror-volume", "repo-not-mirrored", "not-a-repo", "corrupt-pack"]
)
def test_a_broken_mirror_never_fails_the_clone(box, upstream, breakage):
    upstream.repo("course", BIG)
    mirror = box.host_view(f"{MIRROR}/127.0.0.1/course.git")
    if breakage == "repo-not-mirrored":
        mirror.parent.mkdir(parents=True)
    elif breakage == "not-a-repo":
        mirror.mkdir(parents=True)
        (mirror / "README").write_text("not a repository\n")
    elif breakage == "corrupt-pack":
        make_mirror(box, upstream, "course")
        for pack in (mirror / "objects" / "pack").glob("*.pack"):
            pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    configure(box, [{"url": upstream.url("course"), "dest": "course"}], git={"mirror": MIRROR})
    result = start(box)
    assert result.returncode == 0, result.stderr
    [warning] = mirror_warnings(result)
    problem = {
        "no-mirror-volume": "missing (no such directory: is the volume mounted?)",
        "repo-not-mirrored": "missing (no mirror of this repo)",
        "not-a-repo": "not a bare git repository (corrupt?)",
        "corrupt-pack": "corrupt (cannot read ",
    }[breakage]
    assert f"; mirror {MIRROR}/127.0.0.1/course.git: {problem}" in warning, warning
    assert warning.endswith("refresh or fix the mirror (git.mirror)")
    assert read(box, "course/data.txt") == BIG["data.txt"]
    assert not home(box, "course/.git/objects/info/alternates").exists()


def test_a_mirror_that_breaks_the_clone_midway_gives_a_normal_clone_and_loses_nothing(
    box, upstream, tmp_path
):
    """The mirror lists the commit and holds its objects, but the big blob's loose file is
    garbage: git trusts the mirror, fetches nothing for it, and fails in the middle of the
    clone (reading it for --dissociate's repack). nbinit clones again from the server alone."""
    upstream.repo("course", BIG)
    mirror = make_mirror(box, upstream, "course")
    for pack in (mirror / "objects" / "pack").glob("*.pack"):  # loose objects, as a
        moved = tmp_path / pack.name  # `git clone --mirror` of a local path leaves them
        pack.rename(moved)
        pack.with_suffix(".idx").unlink()
        with open(moved, "rb") as objects:
            subprocess.run(
                ["git", "-C", str(mirror), "unpack-objects", "-q"], stdin=objects, check=True
            )
    blob = git_host(mirror, "rev-parse", "HEAD:data.txt").strip()
    (mirror / "objects" / blob[:2] / blob[2:]).write_bytes(b"x\x9c not zlib at all" * 8)
    configure(box, [{"url": upstream.url("course"), "dest": "course"}], git={"mirror": MIRROR})
    result = start(box)
    assert result.returncode == 0, result.stderr
    [warning] = mirror_warnings(result)
    assert warning.startswith(f"cloned {upstream.url('course')} into course (main); mirror ")
    assert f"mirror {MIRROR}/127.0.0.1/course.git: the clone borrowing from it failed (" in warning
    assert warning.endswith("cloned from the server alone; refresh or fix the mirror (git.mirror)")
    assert read(box, "course/data.txt") == BIG["data.txt"]
    assert not home(box, "course/.git/objects/info/alternates").exists()
    assert sorted(os.listdir(home(box))) == [".cache", PROBLEMS, "course"]  # no temp clone
    subprocess.run(["rm", "-rf", str(mirror)], check=True)  # and it needs no mirror
    checked = as_user(box, "git", "-C", f"{HOME}/course", "fsck", "--full")
    assert "missing" not in checked.stdout + checked.stderr
