"""One repo's sync (nbinit.git.repo) without a sandbox start: the worker, run as a plain user.

The runner refuses to run git as root, so these tests start the real worker process
(`python -I -m nbinit.git.worker`, the plan as JSON on stdin) as `nobody` when they run as
root, or as the current user otherwise, against the loopback git server; each asserts the
outcome the user would see and the files left in the home.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
from helpers.gitserver import GitHttpServer, Pusher, make_bare

from nbinit import privilege, runtime
from nbinit.context import Identity
from nbinit.git import policy as gitpolicy

NOBODY = Identity("nobody", 65534, 65534, "")
GIT = {"allowed_schemes": ["http"], "min_free_mb": 0}


class Course:
    """A home of its own (owned by the user git runs as) and one upstream repo."""

    def __init__(self, root: Path) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="nbinit-repo-test-"))  # nobody can enter it
        self.user = NOBODY if os.geteuid() == 0 else None
        if self.user:
            os.chown(self.home, self.user.uid, self.user.gid)
        srv = root / "srv"
        srv.mkdir()
        self.upstream = Pusher(make_bare(srv, "course"), root / "work")
        self.upstream.publish({"a.txt": "1\n2\n3\n", "b.txt": "b\n"}, "initial")
        self.server = GitHttpServer(srv).start()

    def user_writes(self, path: str, text: str) -> None:
        target = self.home / "course" / path
        target.write_text(text)
        if self.user:
            os.chown(target, self.user.uid, self.user.gid)

    def sync(self, git: Optional[dict[str, str]] = None, before: str = "") -> dict[str, object]:
        """Run the worker once over this course; its one repo event.

        before: Python run in the worker process before it starts (to stage a race).
        """
        policy = gitpolicy.GitPolicy.from_section({**GIT, **(git or {})})
        plan = gitpolicy.plan_repo({"url": self.server.url("course")}, str(self.home), policy)
        job = {"home": str(self.home), "policy": policy.as_dict(), "repos": [plan._asdict()]}
        command = runtime.module_command("nbinit.git.worker")
        if before:
            main = (
                "from nbinit.git import worker\n"
                "sys.exit(worker.worker_main(sys.stdin.buffer, sys.stdout.buffer))"
            )
            command = [sys.executable, "-I", "-c", f"import sys\n{before}\n{main}"]
        result = privilege.run_as_user(
            Identity("nobody", 65534, 65534, str(self.home)) if self.user else None,
            command,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home)},
            timeout=60,
            cwd=str(self.home),
            stdin_data=json.dumps(job).encode(),
        )
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert result.returncode == 0, (events, result.stderr)
        (repo,) = [e for e in events if e["event"] == "repo"]
        return repo


@pytest.fixture
def course(tmp_path) -> Iterator[Course]:
    made = Course(tmp_path)
    yield made
    made.server.stop()
    shutil.rmtree(made.home)


def test_clone_as_the_user_then_unchanged(course):
    first = course.sync()
    assert (first["outcome"], first["level"]) == ("cloned", "INFO")
    clone = course.home / "course"
    assert (clone / "a.txt").read_text() == "1\n2\n3\n"
    if course.user:
        assert {p.stat().st_uid for p in clone.rglob("*")} == {course.user.uid}
    second = course.sync()
    assert second["outcome"] == "unchanged"
    assert second["message"] == "course: up to date (main)"


def test_update_keeps_the_users_edit(course):
    course.sync()
    course.user_writes("b.txt", "my answer\n")
    course.upstream.publish({"a.txt": "1\n2\n3\n4\n"})
    updated = course.sync()
    assert updated["outcome"] == "updated"
    assert "your changes kept and auto-committed" in updated["message"]
    assert (course.home / "course" / "a.txt").read_text() == "1\n2\n3\n4\n"
    assert (course.home / "course" / "b.txt").read_text() == "my answer\n"


def test_a_user_file_in_the_way_of_a_new_upstream_file_is_renamed_not_lost(course):
    course.sync()
    course.user_writes("c.txt", "mine\n")
    course.upstream.publish({"c.txt": "theirs\n"})
    updated = course.sync()
    assert updated["outcome"] == "updated"
    assert "1 clashing file(s) renamed" in updated["message"]
    texts = {p.name: p.read_text() for p in (course.home / "course").iterdir() if p.is_file()}
    assert texts["c.txt"] == "theirs\n"
    assert "mine\n" in texts.values()


def test_a_missing_upstream_is_one_warning_and_nothing_written(course):
    course.server.stop()
    failed = course.sync()
    assert (failed["outcome"], failed["level"]) == ("failed", "WARNING")
    assert not (course.home / "course").exists()


def test_a_user_who_deleted_a_file_gets_it_back_when_nothing_changed_upstream(course):
    course.sync()
    (course.home / "course" / "b.txt").unlink()
    again = course.sync()
    assert again["outcome"] == "updated"
    assert again["message"] == "course: restored 1 deleted file(s)"
    assert (course.home / "course" / "b.txt").read_text() == "b\n"


# A mirror that vanishes between nbinit's check of it and the clone (the volume unmounted, a
# CronJob replacing it): the real check runs, then the mirror is deleted before git starts.
VANISH_AFTER_CHECK = """
import shutil
from nbinit.git import repo
checked = repo.mirror_repo
def check_then_vanish(mirror, url):
    found = checked(mirror, url)
    shutil.rmtree(mirror)  # the whole volume: unmounted
    return found
repo.mirror_repo = check_then_vanish
"""


def test_a_mirror_gone_between_check_and_clone_is_a_warning_and_a_normal_clone(course):
    mirror_root = Path(tempfile.mkdtemp(prefix="nbinit-mirror-"))
    try:
        mirror = mirror_root / "127.0.0.1" / "course.git"
        subprocess.run(
            ["git", "clone", "-q", "--mirror", course.server.url("course"), str(mirror)],
            check=True,
            capture_output=True,
        )
        if course.user:  # the user's worker deletes it: the user must own it
            for path in [mirror_root, *mirror_root.rglob("*")]:
                os.lchown(path, course.user.uid, course.user.gid)
        event = course.sync({"mirror": str(mirror_root)}, before=VANISH_AFTER_CHECK)
        assert not mirror.exists()  # the race really happened
        assert (event["outcome"], event["level"]) == ("cloned", "WARNING")
        assert str(event["message"]).endswith(
            f"; mirror {mirror}: gone while cloning (unmounted or replaced?): "
            "cloned from the server alone; refresh or fix the mirror (git.mirror)"
        )
        clone = course.home / "course"
        assert (clone / "a.txt").read_text() == "1\n2\n3\n"
        assert not (clone / ".git" / "objects" / "info" / "alternates").exists()
        assert sorted(p.name for p in course.home.iterdir()) == [".cache", "course"]
    finally:
        shutil.rmtree(mirror_root, ignore_errors=True)  # gone already, unless the test failed


# -- what a restart reads from .git's files instead of starting git --------------------------


def git(repo: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=False
    ).stdout


CONFIGS = {
    "plain": ('[remote "origin"]\n\turl = https://h/a.git\n', "https://h/a.git"),
    "section-case": ('[Remote "origin"]\n\tURL = https://h/a.git\n', "https://h/a.git"),
    "other-remote-first": (
        '[remote "up"]\n\turl = https://h/up.git\n[remote "origin"]\n\turl = https://h/a.git\n',
        "https://h/a.git",
    ),
    "two-urls": ('[remote "origin"]\n\turl = https://h/a.git\n\turl = https://h/b.git\n', None),
    "quoted": ('[remote "origin"]\n\turl = "https://h/a.git"\n', None),
    "comment-after": ('[remote "origin"]\n\turl = https://h/a.git ; or b\n', None),
    "continued": ('[remote "origin"]\n\turl = https://h/a\\\n.git\n', None),
    "key-on-header": ('[remote "origin"] url = https://h/a.git\n', None),
    "old-style": ("[remote.origin]\n\turl = https://h/a.git\n", None),
    "include": ('[include]\n\tpath = other\n[remote "origin"]\n\turl = https://h/a.git\n', None),
    "no-origin": ('[remote "up"]\n\turl = https://h/up.git\n', None),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_the_origin_is_read_from_the_file_only_when_it_says_what_git_says(tmp_path, case):
    from nbinit.git.gitdir import read_origin_url

    text, expected = CONFIGS[case]
    git(tmp_path, "init", "-q")
    with open(tmp_path / ".git" / "config", "a") as handle:
        handle.write(text)
    found = read_origin_url(str(tmp_path / ".git"))
    assert found == expected
    if found is not None:  # whenever the file is read, git reads the same
        assert found == git(tmp_path, "config", "--local", "--get", "remote.origin.url").strip()


def test_the_index_lists_what_git_ls_files_lists(tmp_path):
    from nbinit.git.gitdir import index_paths

    names = ["a.txt", "dir/b.txt", "dir/sub/c with space.txt", "x" * 120, "ünï.txt"]
    git(tmp_path, "init", "-q")
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    git(tmp_path, "rm", "-q", "--cached", "a.txt")  # the index now differs from HEAD
    listed = git(tmp_path, "-c", "core.quotePath=false", "ls-files", "-z").split("\0")[:-1]
    assert index_paths(str(tmp_path / ".git")) == listed
    assert len(listed) == len(names) - 1


@pytest.mark.parametrize("case", ["version-4", "skip-worktree", "truncated", "not-an-index"])
def test_an_index_this_reader_is_not_sure_of_is_left_to_git(tmp_path, case):
    from nbinit.git.gitdir import index_paths

    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git(tmp_path, "add", "a.txt")
    index = tmp_path / ".git" / "index"
    if case == "version-4":
        git(tmp_path, "update-index", "--index-version", "4")
    elif case == "skip-worktree":
        git(tmp_path, "update-index", "--skip-worktree", "a.txt")
    elif case == "truncated":
        index.write_bytes(index.read_bytes()[:-25])
    else:
        index.write_bytes(b"DIRC\0\0\0\2\0\0\0\5" + bytes(40))  # 5 entries, none there
    assert index_paths(str(tmp_path / ".git")) is None
