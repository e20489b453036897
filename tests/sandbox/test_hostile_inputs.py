# ruff: noqa: E501 - the corpus below holds exact log lines
"""Hostile inputs at start: nothing a bad config, a user's dotfile or home can hold stops a
server, hangs a start or crashes a step.

Every case runs `nbinit start` as PID 1 in a throwaway container, with one admin repo in the
baked config served by a real git server on loopback, and asserts what any start must give:
the server is exec'd within the deadline + 0.5 s (measured from PID 1's own start time,
interpreter start-up included), the expected WARNING and no other, no traceback, nothing
under /etc or /root changed, no control character in any output or the status file, and
the admin's repo synced whatever the user's dotfile says.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from helpers.gitserver import GitHttpServer, Pusher, make_bare
from helpers.sandbox import ACCOUNT_FILES, ALICE, CONTROL, changed_between

pytestmark = pytest.mark.sandbox

DEADLINE = 5.0
HOME = "/home/jovyan"
STATUS = "/var/lib/nbinit-test/status.json"  # on the overlay, unlike /run
DOTFILE = f"{HOME}/.nbinit.yaml"
# The server: says it started and how long after PID 1 (nbinit, now tini) it runs, then
# gives a sync that went on in the background (a loaded machine) up to 30 s to land.
SERVER = (
    "sh",
    "-c",
    "echo server started; start=$(cut -d' ' -f22 /proc/1/stat); "
    "awk -v s=$start -v t=$(getconf CLK_TCK) '{printf \"exec after %.3f\\n\", $1 - s / t}' "
    "/proc/uptime; "
    'for i in $(seq 300); do [ -e "$HOME/course/a.txt" ] && break; sleep 0.1; done',
)
KEEP_BAKED = "; using the baked default config (no last good copy)"


@pytest.fixture
def course(tmp_path):
    """One admin repo, served over smart HTTP on loopback."""
    root = tmp_path / "srv"
    root.mkdir()
    Pusher(make_bare(root, "course", "main"), tmp_path / "work", "main").publish(
        {"a.txt": "a\n"}, "initial"
    )
    server = GitHttpServer(root).start()
    yield server.url("course")
    server.stop()


@pytest.fixture
def box(sandbox, course):
    sandbox.add_jovyan()
    sandbox.mkdir(HOME, mode=0o755, uid=1000, gid=100)
    sandbox.mkdir(os.path.dirname(STATUS))
    sandbox.course_url = course
    baked(sandbox)
    return sandbox


def baked(box, user=None):
    """The image's config: the admin's repo for everyone, git from the loopback server."""
    document = {
        "version": 1,
        "git": {"allowed_schemes": ["http"], "allowed_hosts": ["127.0.0.1"], "min_free_mb": 0},
        "repos": [{"url": box.course_url, "dest": "course"}],
    }
    if user:
        document["user"] = user
    box.write("/etc/nbinit/config.yaml", yaml.safe_dump(document))


SYSTEM = ("/etc", "/root")  # what no hostile input may change (the walk stays out of /home)


def start(box, env=None, allowed_system_changes=frozenset()):
    """Run the start; assert everything every hostile start must give; return the result."""
    # The container's own setup (jovyan) is not nbinit's doing.
    before = box.baseline(below=SYSTEM)
    result = box.run(
        ["nbinit", "start", "--", *SERVER],
        env={"NBINIT_DEADLINE": str(DEADLINE), "NBINIT_STATUS_FILE": STATUS, **(env or {})},
        timeout=60,
    )
    status = box.host_view(STATUS).read_text()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "server started", result.stderr
    assert float(lines[1].split()[-1]) <= DEADLINE + 0.5, result.stderr
    for text in (result.stdout, result.stderr, status):
        assert "Traceback" not in text
        assert not CONTROL.search(text.replace("\n", "")), CONTROL.search(text.replace("\n", ""))
    # With times: rewriting a file with the same bytes is a change here too.
    changed = changed_between(before, box.snapshot(below=SYSTEM), times=True)
    assert changed <= set(allowed_system_changes), changed
    assert json.loads(status)["finished"] is True
    return result


def warnings(result) -> list[str]:
    return [line.split("nbinit: ", 1)[1] for line in result.lines("WARNING")]


def course_synced(box, home=HOME) -> bool:
    return box.host_view(f"{home}/course/a.txt").read_text() == "a\n"


@pytest.fixture
def nested(request):
    """nested(base, depth): directories that deep under base (longer than PATH_MAX: made by
    fd), removed afterwards by rm, which walks them without recursing (pytest would not)."""
    made = []
    yield lambda base, depth: (made.append(base), _nest(base, depth))
    for base in made:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _nest(base, depth: int, name: str = "d") -> None:
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            os.chown(name, 1000, 100, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
    finally:
        os.close(fd)


def alias_bomb(key: str) -> bytes:
    """Under the 20-alias cap, yet 11 copies of a 1000-value list: over 10,000 values."""
    items = ", ".join(["x"] * 999)
    return (f"{key}: &a [{items}]\n" + "".join(f"k{i}: *a\n" for i in range(11))).encode()


# -- section 2: a served admin config the loader cannot build is a failed config -------------

ADMIN = [
    pytest.param(b"version: 1\ndeadline: !!float soon\n", '"soon" is not a valid !!float', id="float-tag-on-a-word"),
    pytest.param(b"version: !!int one\n", '"one" is not a valid !!int', id="int-tag-on-a-word"),
    pytest.param(b"version: 1\n? [a, b]\n: 1\n", "a mapping key must be a plain value", id="list-as-mapping-key"),
    pytest.param(b"version: 1\n{a: 1}: 2\n", "a mapping key must be a plain value", id="mapping-as-mapping-key"),
    pytest.param(
        b"version: 1\nx: !!python/object/apply:os.system ['touch /etc/pwned']\n",
        "the tag !!python/object/apply:os.system is not allowed",
        id="python-tag",
    ),
    pytest.param(b"version: 1\nx: !!timestamp never\n", "the tag !!timestamp is not allowed", id="timestamp-tag"),
    pytest.param(b"version: 1\ndeadline: " + b"9" * 5000 + b"\n", "a value is 5000 characters", id="5000-digit-int"),
    pytest.param(b"version: 1\ndeadline: " + b"9" * 40 + b"\n", "a number has more than 30 digits", id="40-digit-int"),
    pytest.param(b"version: 1\ndeadline: !!float .nan\n", "deadline: expected a finite number", id="nan-deadline"),
    pytest.param(b"[" * 200_000 + b"]" * 200_000, "nested deeper than 32 levels", id="json-200000-deep"),
    pytest.param(b"version: 1\nx: \xff\xfe\n", "config is not UTF-8", id="not-utf8"),
    pytest.param(b"version: 1\nx: a\x00b\n", "special character U+0000", id="nul-byte"),
    pytest.param(b'version: 1\nrepos: [{url: "a\\0b"}]\n', "a value contains a NUL character", id="nul-escape"),
    pytest.param(b"version: 1\n" + alias_bomb("x"), "more than 10000 values (aliases expanded)", id="alias-expansion"),
    pytest.param(b"version: 1\nx:\n" + b"- a\n" * 260_000, "more than 1000 entries", id="flat-list-1-MiB"),
    pytest.param(b"version: 1\nx: &a [*a]\n", "alias *a is undefined", id="self-referencing-alias"),
    pytest.param(b"version: 1\n---\nversion: 1\n", "more than one document", id="two-documents"),
]  # fmt: skip


@pytest.mark.parametrize("body, problem", ADMIN)
def test_served_admin_config_that_cannot_be_built_is_a_failed_fetch(
    box, http_server, body, problem
):
    server = http_server()
    server.route(body=body)
    result = start(box, env={"NBINIT_CONFIG_URL": server.url()})
    [warning] = warnings(result)
    assert warning.startswith(server.url() + ": ") and problem in warning, warning
    assert warning.endswith(KEEP_BAKED), warning
    assert course_synced(box)


# -- sections 1 and 2: the user's dotfile is read as the user, bounded, and never fatal ------

SKIPPED = "your repos are skipped: ~/.nbinit.yaml"


def _symlink_to_shadow(box):
    box.symlink(DOTFILE, "/etc/shadow", uid=1000, gid=100)


def _fifo(box):
    box.mkdir(HOME, mode=0o755, uid=1000, gid=100)
    os.mkfifo(box.host_view(DOTFILE))
    os.chown(box.host_view(DOTFILE), 1000, 100)


def _directory(box):
    box.mkdir(DOTFILE, uid=1000, gid=100)


DOTFILES = [
    pytest.param(b"repos: !!float x\n", f'{SKIPPED}: invalid YAML at line 1, column 8: "x" is not a valid !!float', id="float-tag"),
    pytest.param(b"? [repos]\n: []\n", f"{SKIPPED}: invalid YAML at line 1, column 9: a mapping key must be a plain value", id="list-as-key"),
    pytest.param(b"repos:\n" + b"- a\n" * 262_144, f"{SKIPPED}: larger than 65536 bytes", id="flat-list-1-MiB"),
    pytest.param(b"repos:\n" + b"- a\n" * 15_000, f"{SKIPPED}: a list or mapping has more than 1000 entries", id="flat-list-60-KiB"),
    pytest.param(alias_bomb("repos"), f"{SKIPPED}: more than 10000 values (aliases expanded)", id="alias-expansion"),
    pytest.param(b"[" * 30_000, f"{SKIPPED}: nested deeper than 32 levels", id="json-30000-deep"),
    pytest.param(bytes(range(256)) * 8, f"{SKIPPED}: config is not UTF-8", id="binary"),
    pytest.param(b"repos: [{url: " + b"9" * 4400 + b"}]\n", f"{SKIPPED}: invalid YAML at line 1, column 15: a value is 4400 characters", id="4400-digit-int"),
    pytest.param(_symlink_to_shadow, f"your repos are skipped: cannot read {DOTFILE}: a symlink", id="symlink-to-shadow"),
    pytest.param(_fifo, f"your repos are skipped: {DOTFILE} is not a regular file", id="fifo"),
    pytest.param(_directory, f"your repos are skipped: {DOTFILE} is not a regular file", id="directory"),
]  # fmt: skip


@pytest.mark.parametrize("content, problem", DOTFILES)
def test_broken_dotfile_is_one_warning_and_the_admin_repos_still_sync(box, content, problem):
    if callable(content):
        content(box)
    else:
        box.write(DOTFILE, content, uid=1000, gid=100)
    result = start(box)
    [warning] = warnings(result)
    assert warning.startswith(problem), warning
    assert course_synced(box)


# -- section 1: dest is capped before any file system call; links are the kernel's -----------


def _dest_dotfile(box, dest: str) -> None:
    document = {"repos": [{"url": box.course_url, "dest": dest}]}
    box.write(DOTFILE, yaml.safe_dump(document), uid=1000, gid=100)


def test_dest_of_2000_parts_is_refused_before_any_file_system_call(box):
    _dest_dotfile(box, "a/" * 2000)
    result = start(box)
    [warning] = warnings(result)
    assert warning.startswith("~/.nbinit.yaml repos.0: refused: dest 'a/a/a/"), warning
    assert "is longer than 1024 characters or 16 directories deep" in warning
    assert course_synced(box)


def test_dest_through_a_chain_of_1000_symlinks_is_refused(box):
    for i in range(1000):  # os.path.realpath recursed once per link: RecursionError in root
        box.symlink(f"{HOME}/chain{i}", f"chain{i + 1}", uid=1000, gid=100)
    box.mkdir(f"{HOME}/chain1000", uid=1000, gid=100)
    _dest_dotfile(box, "chain0/x")
    result = start(box)
    [warning] = warnings(result)
    assert warning == (
        f"~/.nbinit.yaml repos.0: refused: {HOME}/chain0/x cannot be resolved: Too many levels "
        "of symbolic links: remove the symlinks in the way"
    )
    assert course_synced(box)


# -- section 1: walks over user-controlled trees are iterative and bounded --------------------


def test_home_nested_3000_deep_with_recursive_chown(box, nested):
    box.add_jovyan()
    box.mkdir("/s/alice/jupyterhub")
    baked(box, user={"chown_home": "recursive"})
    box.mkdir("/home/alice", mode=0o755, uid=4321, gid=4321)  # hers: kept, contents re-owned
    box.mkdir("/home/alice/deep", mode=0o755, uid=0, gid=0)
    nested(box.host_view("/home/alice/deep"), 3000)  # os.fwalk raised RecursionError in root
    result = start(
        box,
        env=ALICE,
        allowed_system_changes=ACCOUNT_FILES,
    )
    assert warnings(result) == [
        "home /home/alice: recursive chown stopped: directories nested deeper than 128 levels; "
        "continuing"
    ]
    assert course_synced(box, "/home/alice")


def test_clone_leftover_nested_3000_deep_is_removed_as_far_as_bounded(box, nested):
    leftover = box.mkdir(f"{HOME}/.course.nbinit-clone-old", uid=1000, gid=100)
    nested(leftover, 3000)  # shutil.rmtree raised RecursionError in the worker
    result = start(box)
    assert warnings(result) == []
    assert course_synced(box)
