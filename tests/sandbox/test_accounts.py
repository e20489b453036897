"""The user's own account beside jovyan: docker-stacks' start.sh scenarios and every bad input.

Each case runs `nbinit start` as PID 1 in a throwaway container with real useradd, chown
and setuid, and asserts the exit code, the exact log line, and what changed on disk.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from helpers.sandbox import (
    ACCOUNT_FILES,
    ALICE,
    ALICE_ID,
    VENV,
    PathState,
    changed_between,
    needs_plain_host,
    sandbox_owns,
)

pytestmark = pytest.mark.sandbox

SHOW = [
    "sh",
    "-c",
    'id; echo "HOME=$HOME USER=$USER LOGNAME=$LOGNAME SHELL=$SHELL PWD=$(pwd)"; cat /proc/1/comm',
]


# -- helpers ------------------------------------------------------------------------------


def snapshot(box) -> dict[str, PathState]:
    return box.snapshot(keep=lambda path: not sandbox_owns(path))


def prepared(box) -> dict[str, PathState]:
    """Apply the sandbox's setup once without nbinit; the state a run is compared to."""
    return box.baseline(keep=lambda path: not sandbox_owns(path))


def changes_since(box, before: dict[str, PathState]) -> set[str]:
    return changed_between(before, snapshot(box))


def baked(box, text: str) -> None:
    box.write("/etc/nbinit/config.yaml", "version: 1\n" + text)


def owner(box, path: str) -> tuple[int, int]:
    """The owner as the container left it (upper layer if changed there, else the host's)."""
    changed = box.host_view(path)
    info = os.lstat(changed if os.path.lexists(changed) else path)
    return info.st_uid, info.st_gid


def passwd_line(box, name: str) -> str:
    lines = [line for line in box.read("/etc/passwd").splitlines() if line.startswith(name + ":")]
    assert len(lines) == 1, lines
    return lines[0]


# -- the happy path (docker-stacks start.sh scenarios) ------------------------------------


@needs_plain_host
def test_own_account_beside_jovyan(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    baked(sandbox, "user:\n  secret_env: [MY_SECRET]\ngit:\n  token_env: MY_GIT_TOKEN\n")
    before = prepared(sandbox)
    env = {**ALICE, "NBINIT_CONFIG_TOKEN": "tok-canary-1", "MY_SECRET": "sec-canary-2"}
    env["MY_GIT_TOKEN"] = "git-canary-3"  # the repos' token is git's, never the server's
    env["PYTHONPATH"] = "/opt/extra"
    env["LD_LIBRARY_PATH"] = "/opt/lib"
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", SHOW[2] + "; env"], env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == ALICE_ID
    assert out[1] == "HOME=/home/alice USER=alice LOGNAME=alice SHELL=/bin/bash PWD=/home/alice"
    assert out[2] == "tini"
    environment = dict(line.split("=", 1) for line in out[3:] if "=" in line)
    assert "NBINIT_CONFIG_TOKEN" not in environment and "MY_SECRET" not in environment
    assert "MY_GIT_TOKEN" not in environment
    assert "canary" not in result.stdout + result.stderr
    assert environment["PYTHONPATH"] == "/opt/extra"
    assert environment["LD_LIBRARY_PATH"] == "/opt/lib"
    assert environment["PATH"].startswith(str(VENV / "bin"))
    # Logs only on stderr, every line INFO, exactly zero warnings.
    assert result.lines("WARNING") == [] and result.lines("ERROR") == []
    assert all(line.startswith("INFO[") for line in result.stderr.splitlines())
    assert any(
        line.endswith(
            "nbinit: created user alice (uid 4321, gid 4321 alice, groups users, home /home/alice)"
        )
        for line in result.lines("INFO")
    )
    # jovyan is still there, untouched; alice is a new line beside it.
    assert passwd_line(sandbox, "jovyan").startswith("jovyan:x:1000:100:")
    assert passwd_line(sandbox, "alice") == "alice:x:4321:4321::/home/alice:/bin/bash"
    assert owner(sandbox, "/home/alice") == (4321, 4321)
    assert owner(sandbox, "/home/alice/.bashrc") == (4321, 4321)
    assert stat.S_IMODE(os.lstat(sandbox.host_view("/home/alice")).st_mode) == 0o755
    changed = changes_since(sandbox, before)
    assert {p for p in changed if not p.startswith("/home/alice")} <= ACCOUNT_FILES
    assert {p for p in changed if p.startswith("/home/alice")} == {
        "/home/alice",
        "/home/alice/.bashrc",
        "/home/alice/.profile",
        "/home/alice/.bash_logout",
    }


def test_restart_is_idempotent(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    first = sandbox.run(["nbinit", "start", "--", "id"], env=ALICE)
    assert first.returncode == 0, first.stderr
    files = {p: sandbox.read(p) for p in ("/etc/passwd", "/etc/group", "/etc/shadow")}
    before = snapshot(sandbox)
    second = sandbox.run(["nbinit", "start", "--", "id"], env=ALICE)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout == ALICE_ID + "\n"
    assert {p: sandbox.read(p) for p in files} == files
    assert second.lines("WARNING") == []
    assert any(
        "account alice (uid 4321, gid 4321) exists: nothing to do" in line
        for line in second.lines("INFO")
    )
    assert any("home /home/alice exists (owner 4321:4321): kept" in x for x in second.lines("INFO"))
    assert {p for p in changes_since(sandbox, before) if not p.startswith("/etc/.pwd")} == set()


def test_gid_defaults_to_uid(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    env = {"JUPYTERHUB_USER": "alice", "NB_UID": "4321"}
    result = sandbox.run(["nbinit", "start", "--", "id"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ALICE_ID + "\n"
    assert any("NB_GID is not set: using NB_UID 4321 as the gid" in x for x in result.lines("INFO"))


def test_no_marker_runs_as_jovyan(sandbox):
    sandbox.add_jovyan()
    before = prepared(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "id", "-un"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "jovyan\n"
    # start.sh would have given jovyan NB_UID; nbinit never changes jovyan and says so once.
    [warning] = result.lines("WARNING")
    assert "NB_UID='4321' is not honoured without a marker" in warning
    # jovyan's account is untouched; the one problem is told in the home, where the user looks.
    problems = sandbox.read("/home/jovyan/STARTUP-PROBLEMS.txt")
    assert "NB_UID='4321' is not honoured without a marker" in problems
    assert {p for p in changes_since(sandbox, before) if not p.startswith("/home/jovyan/")} == set()


def test_no_marker_and_no_nb_uid_is_a_clean_start_as_jovyan(sandbox):
    sandbox.add_jovyan()
    env = {"JUPYTERHUB_USER": "alice", "NB_UID": "1000"}  # jovyan's own uid: nothing lost
    result = sandbox.run(["nbinit", "start", "--", "id", "-un"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "jovyan\n"
    assert result.lines("WARNING") == []


def test_data_bind_mounted_under_home_left_intact(sandbox, tmp_path):
    """docker-stacks test_container_not_delete_bind_mount: the volume's files stay as they were."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "results.csv").write_text("1,2,3\n")
    os.chown(data / "results.csv", 1234, 1234)
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    sandbox.setup.append(f"mkdir -p $R/home/alice/data && mount --bind {data} $R/home/alice/data")
    result = sandbox.run(["nbinit", "start", "--", "ls", "-A", "/home/alice/data"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "results.csv\n"
    assert sorted(os.listdir(data)) == ["results.csv"]
    assert (data / "results.csv").read_text() == "1,2,3\n"
    assert os.lstat(data / "results.csv").st_uid == 1234
    assert owner(sandbox, "/home/alice") == (4321, 4321)  # the existing top, fixed
    assert result.lines("WARNING") == []


def test_existing_home_kept_and_only_top_reowned(sandbox):
    """A root-owned volume mounted at the home (a fresh PVC) is handed over at its top."""
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    sandbox.setup.append(
        "mkdir -p $R/home/alice && mount -t tmpfs -o mode=750 tmpfs $R/home/alice && "
        "echo '{}' > $R/home/alice/notes.ipynb && ln -s /etc/shadow $R/home/alice/evil"
    )
    script = "id -u; stat -c '%u:%g %a' /home/alice /home/alice/notes.ipynb"
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", script], env=ALICE)
    assert result.returncode == 0, result.stderr
    # The top changed, the contents kept their owner: never recursive by default.
    assert result.stdout == "4321\n4321:4321 750\n0:0 644\n"
    assert owner(sandbox, "/etc/shadow")[0] == 0
    assert any(
        "home /home/alice exists: owner changed from 0:0 to 4321:4321, contents kept" in x
        for x in result.lines("INFO")
    )
    assert result.lines("WARNING") == []


@needs_plain_host
def test_recursive_chown_never_follows_planted_symlinks(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    baked(sandbox, "user:\n  chown_home: recursive\n")
    sandbox.mkdir("/home/alice", uid=4321, gid=4321)  # the user's already: contents fixed
    sandbox.mkdir("/home/alice/work")
    sandbox.write("/home/alice/work/a.py", "x = 1\n")
    sandbox.symlink("/home/alice/work/passwd", "/etc/passwd")
    sandbox.symlink("/home/alice/etc", "/etc")
    result = sandbox.run(["nbinit", "start", "--", "true"], env=ALICE)
    assert result.returncode == 0, result.stderr
    for path in ("/home/alice", "/home/alice/work", "/home/alice/work/a.py"):
        assert owner(sandbox, path) == (4321, 4321), path
    assert owner(sandbox, "/home/alice/work/passwd") == (4321, 4321)  # the link itself
    assert owner(sandbox, "/etc/passwd") == (0, 0)
    assert owner(sandbox, "/etc") == (0, 0)
    assert result.lines("WARNING") == []


def test_alias_policy_shares_jovyans_uid(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    baked(sandbox, "user:\n  on_uid_taken: alias\n")
    env = {"JUPYTERHUB_USER": "alice", "NB_UID": "1000", "NB_GID": "4321"}
    result = sandbox.run(["nbinit", "start", "--", "id", "-u"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1000\n"
    assert passwd_line(sandbox, "alice") == "alice:x:1000:4321::/home/alice:/bin/bash"
    assert passwd_line(sandbox, "jovyan").startswith("jovyan:x:1000:100:")
    assert any(
        "uid 1000 belongs to jovyan: alice becomes a second name for it "
        "(user.on_uid_taken: alias)" in x
        for x in result.lines("INFO")
    )
    assert result.lines("WARNING") == []


def test_use_existing_policy_keeps_the_account(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    sandbox.setup.append(
        "grep -q '^alice:' $R/etc/passwd || chroot $R useradd --no-log-init -M -U -u 2000 alice"
    )
    baked(sandbox, "user:\n  on_uid_mismatch: use_existing\n")
    result = sandbox.run(["nbinit", "start", "--", "id", "-u"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2000\n"
    assert any("(user.on_uid_mismatch: use_existing)" in x for x in result.lines("INFO"))


# -- bad inputs: FATAL, nothing changed ---------------------------------------------------

FATAL_CASES = [
    pytest.param(
        {"NB_UID": "0"},
        "NB_UID=0 is never allowed (0, 65534, 65535, 4294967295 and >= 2^31 are reserved): "
        "give the user an id inside user.uid_min..user.uid_max (1000..60000)",
        id="uid-zero",
    ),
    pytest.param(
        {"NB_UID": "65534"},
        "NB_UID=65534 is never allowed",
        id="uid-nobody",
    ),
    pytest.param(
        {"NB_UID": "4294967295"},
        "NB_UID=4294967295 is never allowed",
        id="uid-minus-one",
    ),
    pytest.param(
        {"NB_UID": "70000"},
        "NB_UID=70000 is outside user.uid_min..user.uid_max (1000..60000): fix the uid "
        "annotation of the user's namespace, or widen user.uid_min / user.uid_max",
        id="uid-out-of-range",
    ),
    pytest.param({"NB_UID": "-5"}, "NB_UID='-5' is not an integer", id="uid-negative"),
    pytest.param({"NB_UID": "43 21"}, "NB_UID='43 21' is not an integer", id="uid-not-integer"),
    pytest.param({"NB_GID": "0"}, "NB_GID=0 is never allowed", id="gid-zero"),
    pytest.param(
        {"NB_UID": ""},
        "NB_UID is not set, but the marker /s/alice/jupyterhub asks for alice's own account: "
        "set NB_UID (and NB_GID) in the spawner's environment: a hub pre_spawn_hook that reads "
        "the `uid` annotation of the user's namespace into spawner.environment (KubeSpawner), "
        "or remove the marker",
        id="uid-missing",
    ),
    pytest.param(
        {"NB_UID": "1000"},
        "uid 1000 already belongs to jovyan: give alice another uid, or set "
        "user.on_uid_taken: alias to make alice a second name for uid 1000",
        id="uid-taken-by-jovyan",
    ),
    pytest.param(
        {"JUPYTERHUB_USER": "../root"},
        "JUPYTERHUB_USER='../root' is not a valid account name (^[a-z_][a-z0-9_-]{0,31}$)",
        id="name-dotdot-root",
    ),
    pytest.param(
        {"JUPYTERHUB_USER": "x/../../etc"},
        "JUPYTERHUB_USER='x/../../etc' is not a valid account name",
        id="name-traversal",
    ),
    pytest.param(
        {"JUPYTERHUB_USER": "root"},
        "root is a system account of this image (uid 0), never a user's own: remove the "
        "marker /s/root/jupyterhub",
        id="name-root",
    ),
    pytest.param(
        {"JUPYTERHUB_USER": "daemon"},
        "daemon is a system account of this image (uid 1)",
        id="name-system-account",
    ),
    pytest.param(
        {"JUPYTERHUB_USER": "Alice"},
        "JUPYTERHUB_USER='Alice' is not a valid account name",
        id="name-upper-case",
    ),
    pytest.param(
        {"JUPYTERHUB_USER": "a" * 33},
        f"JUPYTERHUB_USER='{'a' * 33}' is not a valid account name",
        id="name-33-chars",
    ),
    pytest.param(
        {"JUPYTERHUB_USER": "1234"},
        "JUPYTERHUB_USER='1234' is not a valid account name",
        id="name-all-digits",
    ),
]


@pytest.mark.parametrize("overrides, fatal", FATAL_CASES)
def test_bad_identity_is_fatal_and_changes_nothing(sandbox, overrides, fatal):
    env = {**ALICE, **overrides}
    env = {k: v for k, v in env.items() if v != ""}
    name = env["JUPYTERHUB_USER"]
    sandbox.add_jovyan()
    if "/" not in name:
        sandbox.mkdir(f"/s/{name}/jupyterhub")
    before = prepared(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "id"], env=env)
    assert result.returncode == 1
    assert result.stdout == ""  # the server never started
    fatals = [line.split("nbinit: ", 1)[1] for line in result.lines("FATAL")]
    assert fatals[0].startswith(fatal), fatals
    assert fatals[1] == "not starting the server: fix the problem above and restart"
    assert changes_since(sandbox, before) == set()


COLLISION_CASES = [
    pytest.param(
        "chroot $R useradd --no-log-init -M -U -u 2000 alice",
        "account alice exists with uid 2000 gid 2000, not NB_UID=4321 NB_GID=4321: fix the "
        "uid annotation, or set user.on_uid_mismatch: use_existing to keep the existing account",
        id="name-exists-with-other-uid",
    ),
    pytest.param(
        "chroot $R groupadd -g 3000 alice",
        "group name alice exists with gid 3000, not NB_GID=4321: set user.group to another "
        "name in the admin config, or fix NB_GID",
        id="group-name-taken",
    ),
]


@pytest.mark.parametrize("setup, fatal", COLLISION_CASES)
def test_collision_is_fatal_by_default(sandbox, setup, fatal):
    sandbox.add_jovyan()
    sandbox.setup.append(f"grep -q '^alice:' $R/etc/group || {setup}")
    sandbox.mkdir("/s/alice/jupyterhub")
    before = prepared(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "id"], env=ALICE)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.lines("FATAL")[0].split("nbinit: ", 1)[1] == fatal
    assert changes_since(sandbox, before) == set()


HOME_CASES = [
    pytest.param(
        lambda box: box.symlink("/home/alice", "/etc"),
        "home /home/alice is a symlink (to '/etc'), not a directory: remove the symlink; the "
        "home must be a real directory or a volume mounted there",
        id="home-symlink-to-etc",
    ),
    pytest.param(
        lambda box: box.write("/home/alice", "not a directory"),
        "home /home/alice is not a directory: remove it, or mount the home volume there",
        id="home-is-a-file",
    ),
    pytest.param(
        lambda box: box.setup.append("mount -t tmpfs -o ro,mode=755 tmpfs $R/home"),
        "cannot create home /home/alice: /home is on a read-only file system: mount a "
        "writable volume at /home/alice, or make /home writable",
        id="home-parent-read-only",
    ),
    pytest.param(
        lambda box: box.mkdir("/home", mode=0o777),
        "cannot create home /home/alice safely: /home is not root-owned or is writable by group "
        "or others",
        id="home-parent-world-writable",
    ),
]


@pytest.mark.parametrize("arrange, fatal", HOME_CASES)
def test_bad_home_is_fatal_before_any_change(sandbox, arrange, fatal):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    arrange(sandbox)
    before = prepared(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "id"], env=ALICE)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.lines("FATAL")[0].split("nbinit: ", 1)[1].startswith(fatal)
    assert changes_since(sandbox, before) == set()
    assert os.lstat("/etc").st_uid == 0


MARKER_CASES = [
    pytest.param(
        lambda box: box.symlink("/s/alice/jupyterhub", "/etc"),
        "marker ignored: /s/alice/jupyterhub is a symlink; running as jovyan (uid 1000)",
        id="marker-symlink-to-etc",
    ),
    pytest.param(
        lambda box: box.symlink("/s/alice", "/etc"),
        "marker ignored: /s/alice is a symlink; running as jovyan (uid 1000)",
        id="marker-parent-symlink",
    ),
    pytest.param(
        lambda box: box.write("/s/alice/jupyterhub", ""),
        "marker ignored: /s/alice/jupyterhub is not a directory; running as jovyan (uid 1000)",
        id="marker-is-a-file",
    ),
]


@pytest.mark.parametrize("arrange, warning", MARKER_CASES)
def test_untrusted_marker_is_ignored(sandbox, arrange, warning):
    sandbox.add_jovyan()
    sandbox.mkdir("/etc/jupyterhub")  # so a followed link would find a directory
    arrange(sandbox)
    before = prepared(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "id", "-un"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "jovyan\n"
    assert [line.split("nbinit: ", 1)[1] for line in result.lines("WARNING")] == [warning]
    # Only the problems file that tells jovyan about it (and its state in ~/.cache/nbinit).
    assert changes_since(sandbox, before) == {
        "/home/jovyan/STARTUP-PROBLEMS.txt",
        "/home/jovyan/.cache",
        "/home/jovyan/.cache/nbinit",
        "/home/jovyan/.cache/nbinit/problems.json",
        "/home/jovyan/.cache/nbinit/problems.json.lock",
    }
    assert warning in sandbox.read("/home/jovyan/STARTUP-PROBLEMS.txt")


# -- homes the server can live with: one WARNING, continue -------------------------------


def test_read_only_home_warns_once_and_starts(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    sandbox.setup.append(
        "mkdir -p $R/home/alice && mount -t tmpfs -o ro,mode=755 tmpfs $R/home/alice"
    )
    result = sandbox.run(["nbinit", "start", "--", "id", "-u"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "4321\n"
    assert [line.split("nbinit: ", 1)[1] for line in result.lines("WARNING")] == [
        "home /home/alice is on a read-only file system (owner 0:0): notebooks cannot be "
        "saved there; mount it read-write"
    ]


def test_root_squashed_home_warns_once_and_starts(sandbox):
    """chown gives EPERM for real: an immutable home (as NFS root squash refuses root's chown)."""
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    sandbox.setup.append(
        "mkdir -p $R/home/alice && mount -t tmpfs -o mode=755 tmpfs $R/home/alice && "
        "chattr +i $R/home/alice"
    )
    result = sandbox.run(["nbinit", "start", "--", "id", "-u"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "4321\n"
    assert [line.split("nbinit: ", 1)[1] for line in result.lines("WARNING")] == [
        "cannot change the owner of home /home/alice from 0:0 to 4321:4321: Operation not "
        "permitted (e.g. an NFS volume with root squash); continuing. Provision the volume "
        "owned by the user's uid"
    ]


@needs_plain_host
def test_not_root_skips_account_work_with_one_warning(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    before = prepared(sandbox)
    argv = ["setpriv", "--reuid=1000", "--regid=100", "--clear-groups", "nbinit", "start"]
    result = sandbox.run([*argv, "--", "sh", "-c", "id -un; echo $HOME"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "jovyan\n/home/jovyan\n"
    assert [line.split("nbinit: ", 1)[1] for line in result.lines("WARNING")] == [
        "running as uid 1000, not root: cannot create alice's own account (marker "
        "/s/alice/jupyterhub); start the container as root (z2jh singleuser.uid: 0; "
        "KubeSpawner uid=0 / securityContext runAsUser: 0) so nbinit can create the account "
        "and then drop to NB_UID"
    ]
    assert {p for p in changes_since(sandbox, before) if not p.startswith("/home/jovyan")} == set()


def test_no_default_command_is_fatal(sandbox):
    sandbox.add_jovyan()
    nbinit = str(VENV / "bin" / "nbinit")
    result = sandbox.run([nbinit, "start"], env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert [line.split("nbinit: ", 1)[1] for line in result.lines("FATAL")] == [
        "none of start-singleuser.sh, start-singleuser.py, jupyterhub-singleuser is on PATH: "
        "install jupyterhub in the image (pip install jupyterhub) or pass the command after "
        "`--`; run `nbinit check` when building the image",
        "not starting the server: fix the problem above and restart",
    ]


def test_account_helpers_are_not_importing_network_libraries():
    """`nbinit start` with the user step alone never imports requests or git."""
    import subprocess
    import sys

    code = (
        "import sys, nbinit.accounts, nbinit.steps.user, nbinit.launch;"
        "print(sorted(m for m in ('requests','git') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@needs_plain_host
def test_skeleton_copies_only_what_the_user_could_read_anyway(sandbox, tmp_path):
    """Root-owned, world-readable files and dirs only: no link, fifo, volume, root-only or
    user-owned file, and no setuid bit."""
    data = tmp_path / "skel-data"
    data.mkdir()
    (data / "big.h5").write_text("a volume's data\n")
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    baked(sandbox, "user:\n  skeleton: /opt/skel\n")
    sandbox.mkdir("/opt/skel/.jupyter")
    sandbox.write("/opt/skel/.jupyter/jupyter_server_config.py", "c = 1\n")
    sandbox.write("/opt/skel/tool", "#!/bin/sh\n", mode=0o4755)
    sandbox.write("/opt/skel/root-only", "secret\n", mode=0o600)
    sandbox.write("/opt/skel/jovyans", "planted\n", mode=0o644, uid=1000, gid=100)
    sandbox.mkdir("/opt/skel/private", mode=0o700)
    sandbox.write("/opt/skel/private/key", "k\n", mode=0o644)
    sandbox.mkdir("/opt/skel/open", mode=0o777)
    sandbox.symlink("/opt/skel/secrets", "/etc/shadow")
    sandbox.setup.append(
        "mkfifo $R/opt/skel/pipe; mkdir -p $R/opt/skel/data && "
        f"mount --bind {data} $R/opt/skel/data"
    )
    result = sandbox.run(["nbinit", "start", "--", "ls", "-A", "/home/alice"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == [".jupyter", "tool"]
    home = sandbox.host_view("/home/alice")
    assert (home / ".jupyter" / "jupyter_server_config.py").read_text() == "c = 1\n"
    assert owner(sandbox, "/home/alice/.jupyter/jupyter_server_config.py") == (4321, 4321)
    assert stat.S_IMODE(os.lstat(home / "tool").st_mode) == 0o755  # no setuid copied
    assert sorted(os.listdir(data)) == ["big.h5"]  # the volume is untouched
    assert result.lines("WARNING") == []


NOT_PUBLIC = "is not a root-owned directory readable by everyone and writable by root only"


@pytest.mark.parametrize(
    "arrange, skeleton, why",
    [
        (lambda box: box.symlink("/opt/skel", "/etc"), "/opt/skel", "is not a directory"),
        (lambda box: box.mkdir("/opt/skel", uid=1000, gid=100), "/opt/skel", NOT_PUBLIC),
        (lambda box: box.mkdir("/opt/skel", mode=0o700), "/opt/skel", NOT_PUBLIC),
        (
            lambda box: (box.mkdir("/opt/open", mode=0o777), box.mkdir("/opt/open/skel")),
            "/opt/open/skel",
            "is under /opt/open, which is not root's alone or not open to everyone",
        ),
        (
            lambda box: (box.mkdir("/opt/closed", mode=0o700), box.mkdir("/opt/closed/skel")),
            "/opt/closed/skel",
            "is under /opt/closed, which is not root's alone or not open to everyone",
        ),
    ],
    ids=["link-to-etc", "jovyans-directory", "root-only-directory", "under-open", "under-closed"],
)
def test_unsafe_skeleton_gives_an_empty_home_and_one_warning(sandbox, arrange, skeleton, why):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    arrange(sandbox)
    baked(sandbox, f"user:\n  skeleton: {skeleton}\n")
    result = sandbox.run(["nbinit", "start", "--", "ls", "-A", "/home/alice"], env=ALICE)
    assert result.returncode == 0, result.stderr
    # Nothing from the skeleton: only the problems file telling alice why (and its state).
    assert result.stdout.split() == [".cache", "STARTUP-PROBLEMS.txt"]
    assert [line.split("nbinit: ", 1)[1] for line in result.lines("WARNING")] == [
        f"skeleton {skeleton} (user.skeleton) {why}: home empty"
    ]


def test_chown_home_never_leaves_the_owner(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    sandbox.mkdir("/home/alice", uid=0, gid=0, mode=0o777)
    baked(sandbox, "user:\n  chown_home: never\n")
    result = sandbox.run(["nbinit", "start", "--", "id", "-u"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert owner(sandbox, "/home/alice") == (0, 0)
    assert any(
        "home /home/alice is owned by 0:0, not 4321:4321: left (chown_home: never)" in x
        for x in result.lines("INFO")
    )


def test_marker_template_is_configurable(sandbox):
    sandbox.add_jovyan()
    baked(sandbox, "user:\n  marker: /srv/share/u-{user}/hub\n")
    sandbox.mkdir("/srv/share/u-alice/hub")
    result = sandbox.run(["nbinit", "start", "--", "id", "-un"], env=ALICE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alice\n"
    sandbox.symlink("/srv/share/u-bob", "/srv/share/u-alice")
    bob = {**ALICE, "JUPYTERHUB_USER": "bob", "NB_UID": "4322", "NB_GID": "4322"}
    result = sandbox.run(["nbinit", "start", "--", "id", "-un"], env=bob)
    assert result.stdout == "jovyan\n"
    assert [line.split("nbinit: ", 1)[1] for line in result.lines("WARNING")] == [
        "marker ignored: /srv/share/u-bob is a symlink; running as jovyan (uid 1000)"
    ]


def test_poststart_uses_the_account_start_made_and_never_creates_one(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    env = {**ALICE, "NBINIT_STATUS_FILE": "/var/tmp/nbinit-status.json"}
    early = sandbox.run(["nbinit", "poststart"], env=env)
    assert early.returncode == 0, early.stderr
    assert "alice:" not in sandbox.read("/etc/passwd")
    steps = {s["name"]: s for s in json.loads(sandbox.read("/var/tmp/nbinit-status.json"))["steps"]}
    assert (
        steps["user"]["reason"] == "account alice is not created yet: running as jovyan (uid 1000)"
    )
    assert sandbox.run(["nbinit", "start", "--", "true"], env=ALICE).returncode == 0
    later = sandbox.run(["nbinit", "poststart"], env=env)
    assert later.returncode == 0, later.stderr
    steps = {s["name"]: s for s in json.loads(sandbox.read("/var/tmp/nbinit-status.json"))["steps"]}
    assert steps["user"]["reason"] == "running as alice (uid 4321)"
    assert later.lines("WARNING") == []
