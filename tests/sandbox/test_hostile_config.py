"""Hostile admin configs, URLs, names, dotfiles and restarts (issue 9, sections 3 to 5).

Each case is a whole `nbinit start` as PID 1 in the sandbox, fetching its admin config from
a real loopback HTTP(S) server through a URL that carries a password and a token, and each
asserts the same five things besides its own: the server is exec'd within the deadline +
0.5 s (or the expected FATAL ends the start), no traceback, nothing under /etc or /root
changed beyond the user's own account files, no secret in the server's environment, a
hook's environment, the log or the status file, and no control character in any output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
from helpers.gitserver import GitHttpServer, Pusher, make_bare
from helpers.sandbox import (
    ACCOUNT_FILES,
    ALICE,
    ALICE_ID,
    CONTROL,
    Result,
    Sandbox,
    changed_between,
)
from helpers.wait import wait_until

pytestmark = pytest.mark.sandbox

DEADLINE = 10
PASSWORD = "pw-canary-7f3a"
TOKEN = "tok-canary-91be"
BEARER = "bearer-canary-5d02"
SECRETS = (PASSWORD, TOKEN, BEARER)
JOVYAN_ID = "uid=1000(jovyan) gid=100(users) groups=100(users)"
STATUS = "/var/lib/nbinit-test/status.json"
CA_PATH = "/etc/nbinit/ca.pem"
# What the server prints: who it is, then its environment.
SHOW = "id; echo ---; env"
FORGED = re.compile(r"^(?:INFO|WARNING|ERROR|FATAL)\[2000-", re.MULTILINE)
NOT_TRUSTED = (
    "ignored: an admin config that is neither served over https:// nor pinned may not "
    "decide who the server runs as or what root does with files"
)


@dataclass
class Case:
    id: str
    admin: str = ""  # the admin config after `version: 1`
    how: str = "http"  # http (unpinned), https (verified), pinned (http + sha256), file
    env: dict[str, str] = field(default_factory=dict)
    marker: bool = True
    arrange: Callable[[Sandbox], None] = lambda box: None
    fatal: str = ""  # the expected FATAL line's message ("" : the server starts)
    warnings: Optional[list[str]] = field(default_factory=list)  # None: not counted
    server_id: str = ALICE_ID
    check: Callable[[Sandbox, Result], None] = lambda box, result: None
    account: bool = True  # the user's own account is created (its files may change)


@dataclass
class Run:
    result: Result
    status: dict
    status_text: str
    env: dict[str, str]


def baked(text: str) -> Callable[[Sandbox], None]:
    return lambda box: box.write("/etc/nbinit/config.yaml", "version: 1\n" + text)


# -- the checks every case shares ----------------------------------------------------------


def _guarded(path: str) -> bool:
    """/etc, /root and what is below them: what no hostile config may change."""
    return path.startswith(("/etc/", "/root/")) or path in ("/etc", "/root")


def _ready_seconds(result: Result) -> float:
    found = [re.search(r"ready in ([0-9.]+)s", line) for line in result.lines("INFO")]
    seconds = [float(m.group(1)) for m in found if m]
    assert seconds, result.stderr
    return seconds[-1]


def run_case(box: Sandbox, http_server, tls_files, case: Case) -> Run:
    box.add_jovyan()
    if case.marker:
        box.mkdir("/s/alice/jupyterhub")
    box.write(STATUS, "", mode=0o644)
    box.host_view(STATUS).unlink()
    case.arrange(box)
    body = ("version: 1\n" + case.admin).encode()
    server = http_server(tls_files.server_context if case.how == "https" else None)
    server.route(body=body)
    url = server.url().replace("://", f"://admin:{PASSWORD}@", 1) + f"?token={TOKEN}&v=1"
    env = {
        **(ALICE if case.marker else {"JUPYTERHUB_USER": "alice"}),
        "NBINIT_DEADLINE": str(DEADLINE),
        "NBINIT_CONFIG_URL": url,
        "NBINIT_CONFIG_TOKEN": BEARER,
        "NBINIT_STATUS_FILE": STATUS,
    }
    if case.how == "https":
        box.write(CA_PATH, tls_files.ca_pem)
        env["REQUESTS_CA_BUNDLE"] = CA_PATH
    elif case.how == "pinned":
        env["NBINIT_CONFIG_SHA256"] = hashlib.sha256(body).hexdigest()
    elif case.how == "file":
        box.write("/etc/nbinit/admin.yaml", body)
        env["NBINIT_CONFIG_URL"] = "file:///etc/nbinit/admin.yaml"
    env.update(case.env)
    before = box.baseline(keep=_guarded)

    began = time.monotonic()
    result = box.run(["nbinit", "start", "--", "sh", "-c", SHOW], env=env, timeout=60)
    elapsed = time.monotonic() - began
    status_text = box.host_view(STATUS).read_text()
    status = json.loads(status_text)

    output = result.stdout + result.stderr
    assert "Traceback" not in output, result.stderr
    if case.fatal:
        assert result.returncode == 1, result.stdout + result.stderr
        messages = [line.split("nbinit: ", 1)[1] for line in result.lines("FATAL")]
        assert messages[0].startswith(case.fatal), messages
        assert elapsed < DEADLINE  # the FATAL ends the start, it does not wait
    else:
        assert result.returncode == 0, result.stderr
        assert _ready_seconds(result) <= DEADLINE + 0.5
        assert result.stdout.split("\n---\n", 1)[0] == case.server_id
    if case.warnings is not None:
        warnings = [line.split("nbinit: ", 1)[1] for line in result.lines("WARNING")]
        assert len(warnings) == len(case.warnings), result.stderr
        for wanted, got in zip(case.warnings, warnings):
            assert wanted in got, (wanted, got)

    # Nothing under /etc or /root changed, beyond the account files of the user's own account.
    changed = changed_between(before, box.snapshot(keep=_guarded))
    allowed = ACCOUNT_FILES if case.account and not case.fatal else set()
    assert changed <= allowed, changed - allowed
    # No secret in the server's environment (stdout), a hook's or the log (stderr), the status.
    for secret in SECRETS:
        assert secret not in output and secret not in status_text, secret
    # No control character nbinit wrote, and no forged log line.
    for text in (result.stderr, status_text, *_strings(status)):
        assert not CONTROL.search(text), repr(CONTROL.search(text))
    assert not FORGED.search(result.stderr)
    case.check(box, result)
    return Run(result, status, status_text, env)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


# -- section 3: the remote admin config cannot give anyone root -----------------------------


def _hook(box: Sandbox, directory: str) -> None:
    box.write(f"{directory}/10-say", "#!/bin/sh\necho HOOK-RAN-FROM-" + directory + " >&2\n", 0o755)


def _no_hook_from_opt(box: Sandbox, result: Result) -> None:
    assert "HOOK-RAN-FROM-/opt/evil" not in result.stderr


def _home_without_root_only_files(box: Sandbox, result: Result) -> None:
    home = box.host_view("/home/alice")
    names = {p.name for p in home.rglob("*")}
    assert not {"shadow", "gshadow", "shadow-", "sudoers"} & names, names
    for path in [home, *home.rglob("*")]:
        info = os.lstat(path)
        assert not stat.S_ISLNK(info.st_mode), path
        assert info.st_uid == 4321, path


UNTRUSTED = [
    Case(
        "http-default-user-root",
        "user:\n  default_user: root\n",
        marker=False,
        warnings=[f"user.default_user {NOT_TRUSTED}"],
        server_id=JOVYAN_ID,
        account=False,
    ),
    Case("http-home-etc", "user:\n  home: /etc\n", warnings=[f"user.home {NOT_TRUSTED}"]),
    Case(
        "http-skeleton-etc",
        "user:\n  skeleton: /etc\n",
        warnings=[f"user.skeleton {NOT_TRUSTED}"],
        check=_home_without_root_only_files,
    ),
    Case(
        "http-extra-groups-shadow-disk",
        "user:\n  extra_groups: [users, shadow, disk]\n  uid_min: 1\n",
        warnings=[f"user.extra_groups, user.uid_min {NOT_TRUSTED}"],
    ),
    Case(
        "http-hooks-dir",
        "hooks:\n  dir: /opt/evil\n",
        arrange=lambda box: _hook(box, "/opt/evil"),
        warnings=[f"hooks.dir {NOT_TRUSTED}"],
        check=_no_hook_from_opt,
    ),
    Case(
        "file-url-home-root",
        "user:\n  home: /root/{user}\n  secret_env: [EXTRA]\n",
        how="file",
        warnings=[f"user.home {NOT_TRUSTED}"],  # secret_env only takes away: kept
    ),
]

TRUSTED_BUT_BOUNDED = [
    Case(
        "https-default-user-root",
        "user:\n  default_user: root\n",
        how="https",
        marker=False,
        fatal="the default user root (user.default_user) does not exist in this image or is "
        "root, and the server never runs as root",
    ),
    Case(
        "pinned-default-user-daemon",
        "user:\n  default_user: daemon\n",
        how="pinned",
        marker=False,
        fatal="daemon has uid 1, outside user.uid_min..user.uid_max (1000..60000)",
    ),
    Case(
        "https-default-user-below-uid-min",
        "user:\n  uid_min: 2000\n",
        how="https",
        marker=False,
        fatal="jovyan has uid 1000, outside user.uid_min..user.uid_max (2000..60000)",
    ),
    *[
        Case(
            f"pinned-home-{name}",
            f"user:\n  home: {home}\n",
            how="pinned",
            fatal=f"home '{home.replace('{user}', 'alice')}' (user.home) is {why}",
        )
        for name, home, why in (
            ("slash", "/", "/ or a top-level directory"),
            ("home-root", "/home", "/ or a top-level directory"),
            ("etc", "/etc/{user}", "under the system directory /etc"),
            ("root", "/root/{user}", "under the system directory /root"),
            ("lib64", "/lib64/{user}", "under the system directory /lib64"),
            ("var", "/var/lib/{user}", "under the system directory /var"),
            ("dotdot", "/home/../etc/{user}", "not a plain absolute path"),
        )
    ],
    Case(
        "https-home-of-jovyan",
        "user:\n  home: /home/jovyan\n",
        how="https",
        fatal="home /home/jovyan exists, belongs to uid 1000 and is not a volume mounted there",
    ),
    Case(
        "https-skeleton-etc",
        "user:\n  skeleton: /etc\n",
        how="https",
        check=_home_without_root_only_files,
    ),
    Case(
        "https-extra-groups-shadow-disk",
        "user:\n  extra_groups: [users, shadow, disk]\n",
        how="https",
        warnings=["user.extra_groups: shadow (gid 42), disk (gid 6) not added"],
    ),
    Case(
        "https-extra-groups-baked-disk-only",
        "user:\n  extra_groups: [users, disk, shadow]\n",
        how="https",
        arrange=baked("user:\n  extra_groups: [users, disk]\n"),
        warnings=["user.extra_groups: shadow (gid 42) not added"],
        server_id="uid=4321(alice) gid=4321(alice) groups=4321(alice),6(disk),100(users)",
    ),
    Case(
        "baked-extra-groups-disk",
        arrange=baked("user:\n  extra_groups: [users, disk]\n"),
        server_id="uid=4321(alice) gid=4321(alice) groups=4321(alice),6(disk),100(users)",
    ),
]


@pytest.mark.parametrize("case", UNTRUSTED, ids=[c.id for c in UNTRUSTED])
def test_untrusted_admin_config_cannot_set_identity_or_root_side_keys(
    sandbox, http_server, tls_files, case
):
    run_case(sandbox, http_server, tls_files, case)


@pytest.mark.parametrize("case", TRUSTED_BUT_BOUNDED, ids=[c.id for c in TRUSTED_BUT_BOUNDED])
def test_no_config_can_break_the_invariants(sandbox, http_server, tls_files, case):
    run_case(sandbox, http_server, tls_files, case)


def test_config_show_says_what_was_ignored_and_from_where(sandbox, http_server):
    sandbox.add_jovyan()
    server = http_server()
    server.route(body=b"version: 1\nuser:\n  home: /etc\nhooks:\n  dir: /opt/x\n")
    result = sandbox.run(
        ["nbinit", "config", "show"], env={"NBINIT_CONFIG_URL": server.url()}, timeout=60
    )
    assert result.returncode == 2, result.stderr
    shown = result.stdout.split("# ignored", 1)[1].splitlines()
    assert shown[1:] == [f"#   hooks.dir: {server.url()}", f"#   user.home: {server.url()}"]
    assert "home: /home/{user}" in result.stdout


# -- section 4: secrets and hostile text ----------------------------------------------------


def _public_url_only(box: Sandbox, result: Result) -> None:
    env = dict(
        line.split("=", 1) for line in result.stdout.split("\n---\n", 1)[1].splitlines() if line
    )
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/config\.yaml\?v=1", env["NBINIT_CONFIG_URL"])
    assert "NBINIT_CONFIG_TOKEN" not in env
    hook_env = [line for line in result.stderr.splitlines() if line.startswith("NBINIT_CONFIG")]
    assert hook_env == [f"NBINIT_CONFIG_URL={env['NBINIT_CONFIG_URL']}"]


def _jovyan_dotfile(text: str) -> Callable[[Sandbox], None]:
    def arrange(box: Sandbox) -> None:
        box.mkdir("/home/jovyan", uid=1000, gid=100)
        box.write("/home/jovyan/.nbinit.yaml", text, uid=1000, gid=100)

    return arrange


HOSTILE_KEY = '"\\e[2J\\e]0;owned\\a\\rWARNING[2000-01-01 00:00:00] nbinit: forged\\n"'

TEXT = [
    Case(
        "url-credentials-and-hook-env",
        arrange=lambda box: box.write("/etc/nbinit/hooks.d/10-env", "#!/bin/sh\nenv >&2\n", 0o755),
        check=_public_url_only,
    ),
    Case(
        "config-key-with-escapes-and-a-forged-line",
        f"{HOSTILE_KEY}: 1\ngpu:\n  require: false\n",
        warnings=["unknown key, ignored"],
    ),
    Case(
        "config-value-with-escapes",
        'repos:\n  - url: "https://git.example.org/\\e[31mx\\r\\n.git"\n    dest: "a\\x07b"\n',
        warnings=None,
    ),
    Case(
        "user-name-with-trailing-newline",
        env={"JUPYTERHUB_USER": "alice\n"},
        arrange=lambda box: box.mkdir("/s/alice\n/jupyterhub"),
        fatal="JUPYTERHUB_USER='alice\\n' is not a valid account name",
    ),
    Case(
        "user-name-with-terminal-escapes",
        env={"JUPYTERHUB_USER": "\x1b]0;owned\x07\x1b[2Jalice"},
        marker=False,
        server_id=JOVYAN_ID,
        account=False,
    ),
    Case(
        "dotfile-keys-and-values-with-escapes",
        marker=False,
        arrange=_jovyan_dotfile(
            f'{HOSTILE_KEY}: 1\nrepos:\n  - url: "https://evil.example/\\e[1m.git"\n'
            '    branch: "main\\n"\n'
        ),
        warnings=None,
        server_id=JOVYAN_ID,
        account=False,
    ),
]


@pytest.mark.parametrize("case", TEXT, ids=[c.id for c in TEXT])
def test_secrets_and_hostile_text_never_reach_a_log_or_the_server(
    sandbox, http_server, tls_files, case
):
    run_case(sandbox, http_server, tls_files, case)


def test_git_never_reads_a_repo_config_in_the_home(sandbox, http_server, tls_files, tmp_path):
    """~/.git/config may say url.insteadOf (to another host) and core.sshCommand: ignored."""
    repos = tmp_path / "srv"
    repos.mkdir()
    Pusher(make_bare(repos, "course"), tmp_path / "work").publish({"a.txt": "1\n"}, "first")
    git = GitHttpServer(repos).start()
    try:
        url = git.url("course")
        home = sandbox.mkdir("/home/jovyan", uid=1000, gid=100)
        subprocess.run(["git", "init", "-q", str(home)], check=True)
        with open(home / ".git" / "config", "a") as handle:
            handle.write(f'[url "http://127.0.0.1:9/"]\n\tinsteadOf = {url}\n')
            handle.write("[core]\n\tsshCommand = touch /home/jovyan/PWNED\n")
        subprocess.run(["chown", "-R", "1000:100", str(home)], check=True)
        case = Case(
            "home-git-config",
            f"git:\n  allowed_schemes: [http]\nrepos:\n  - url: {url}\n    dest: course\n",
            marker=False,
            server_id=JOVYAN_ID,
            account=False,
        )
        run = run_case(sandbox, http_server, tls_files, case)
        assert sandbox.host_view("/home/jovyan/course/a.txt").read_text() == "1\n"
        # The second start updates the clone: ls-remote and fetch, from the same home.
        again = sandbox.run(["nbinit", "start", "--", "true"], env=run.env, timeout=60)
        assert again.returncode == 0, again.stderr
        assert again.lines("WARNING") == []
        assert not sandbox.host_view("/home/jovyan/PWNED").exists()
    finally:
        git.stop()


# -- section 5: homes and restarts ----------------------------------------------------------


def _hard_link_left(box: Sandbox, result: Result) -> None:
    assert os.lstat(box.host_view("/home/alice/notes")).st_uid == 4321
    assert os.lstat(box.host_view("/home/alice/shadow")).st_uid == 0
    assert os.lstat(box.host_view("/etc/nbinit/root-only.key")).st_uid == 0


def _other_file_system_left(box: Sandbox, result: Result) -> None:
    # The tmpfs goes with the container: a hook printed its file's owner after the chown.
    assert "scratch-owner=0" in result.stderr


HOMES = [
    Case(
        "recursive-chown-leaves-hard-links",
        arrange=lambda box: (
            baked("user:\n  chown_home: recursive\n")(box),
            box.mkdir("/home/alice", uid=4321, gid=4321),
            box.write("/home/alice/notes", "n\n"),
            # A root-only file of the image, hard-linked into the home beforehand.
            box.write("/etc/nbinit/root-only.key", "k\n", mode=0o600),
            box.setup.append("ln -f $R/etc/nbinit/root-only.key $R/home/alice/shadow"),
        ),
        warnings=[
            "home /home/alice: recursive chown changed 1 entries to 4321:4321; 1 files with "
            "more than one hard link were left as they are"
        ],
        check=_hard_link_left,
    ),
    Case(
        "recursive-chown-stays-on-its-file-system",
        arrange=lambda box: (
            baked("user:\n  chown_home: recursive\n")(box),
            box.mkdir("/home/alice", uid=4321, gid=4321),
            box.write(
                "/etc/nbinit/hooks.d/10-owner",
                "#!/bin/sh\necho scratch-owner=$(stat -c %u /home/alice/scratch/f) >&2\n",
                0o755,
            ),
            box.setup.append(
                "mkdir -p $R/home/alice/scratch && mount -t tmpfs tmpfs $R/home/alice/scratch "
                "&& echo x > $R/home/alice/scratch/f"
            ),
        ),
        check=_other_file_system_left,
    ),
]


@pytest.mark.parametrize("case", HOMES, ids=[c.id for c in HOMES])
def test_recursive_chown_is_bounded(sandbox, http_server, tls_files, case):
    run_case(sandbox, http_server, tls_files, case)


def _container_init(box: Sandbox) -> Optional[int]:
    """The pid of the `unshare` running this sandbox (its script names the sandbox's root)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"unshare") and any(str(box.root).encode() in a for a in argv):
            return int(entry.name)
    return None


def test_a_start_killed_mid_copy_leaves_nothing_root_owned_after_the_next(
    sandbox, http_server, tls_files
):
    """SIGKILL while a big skeleton is copied; the next start gives a whole home, all the user's."""
    from helpers.sandbox import _signal_pid1

    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    baked("user:\n  skeleton: /opt/skel\n")(sandbox)
    skeleton = sandbox.mkdir("/opt/skel")
    for index in range(100):
        sub = skeleton / f"d{index:03d}"
        sub.mkdir()
        for number in range(200):
            (sub / f"f{number:03d}").write_text("x\n")
    build = sandbox.host_view("/home/.alice.nbinit-new")
    env = {**ALICE, "NBINIT_DEADLINE": "30"}
    first: dict[str, Result] = {}
    runner = threading.Thread(
        target=lambda: first.update(result=sandbox.run(["nbinit", "start", "--", "id"], env=env))
    )
    runner.start()
    wait_until(
        "the copy of the skeleton to be under way",
        lambda: len(os.listdir(build)),  # FileNotFoundError (an OSError) until it exists
        lambda copied: copied > 5,
        timeout=30,
        interval=0.01,
    )
    unshare = _container_init(sandbox)
    assert unshare is not None
    _signal_pid1(unshare, signal.SIGKILL)
    runner.join(30)
    assert first["result"].returncode != 0  # killed, never exec'd
    assert not sandbox.host_view("/home/alice").exists()  # only the build was there

    second = sandbox.run(["nbinit", "start", "--", "id"], env=env, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout == ALICE_ID + "\n"
    assert any(
        "removed /home/.alice.nbinit-new, a home left unfinished by an interrupted start" in line
        for line in second.lines("INFO")
    )
    assert not build.exists()
    home = sandbox.host_view("/home/alice")
    entries = [home, *home.rglob("*")]
    assert len(entries) == 1 + 100 + 100 * 200
    assert [p for p in entries if os.lstat(p).st_uid != 4321] == []


def test_recursive_chown_past_its_budget_reports_the_rest_in_one_warning(tmp_path):
    """In process, as root: a budget already spent leaves everything, said once."""
    import io

    if os.geteuid() != 0:
        pytest.skip("needs root to chown")

    from nbinit import accounts
    from nbinit.context import Identity
    from nbinit.home import ensure_home
    from nbinit.log import Log

    home = tmp_path / "alice"
    (home / "work").mkdir(parents=True)
    (home / "work" / "a.py").write_text("x = 1\n")
    os.link(home / "work" / "a.py", tmp_path / "outside")
    os.chown(home, 4321, 4321)
    policy = accounts.AccountPolicy()
    policy.chown_home = "recursive"
    log = Log(stream=io.StringIO())
    identity = Identity("alice", 4321, 4321, str(home))
    ensure_home(identity, policy, log, lambda: 0.0)
    assert log.warnings == [
        f"home {home}: recursive chown changed 0 entries to 4321:4321; it stopped at the "
        "deadline, the rest keeps its owner; fix those by hand, or set user.chown_home: top"
    ]
    assert os.lstat(home / "work").st_uid == 0

    log = Log(stream=io.StringIO())
    ensure_home(identity, policy, log, lambda: 5.0)
    assert log.warnings == [
        f"home {home}: recursive chown changed 1 entries to 4321:4321; 1 files with more "
        "than one hard link were left as they are; fix those by hand, or set "
        "user.chown_home: top"
    ]
    assert os.lstat(home / "work").st_uid == 4321
    assert os.lstat(tmp_path / "outside").st_uid == 0
