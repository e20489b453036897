"""A throwaway container for tests: an overlay of the host's / in new mount and PID namespaces.

Inside it the command runs as PID 1 under chroot, so useradd, chown, setuid, tini and
signal handling are real, and every change lands in `upper`, which the test can read
afterwards and which is thrown away with it. The host's root filesystem never changes.
See tests/README.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import pytest

from helpers.wait import WaitTimeout, wait_until

PROJECT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
VENV_BIN = VENV / "bin"
BASE_PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The user most starts are for, as the hub's pre_spawn_hook gives her, and what `id` then
# says as her server (the image's jovyan is 1000:100, group users).
ALICE = {"JUPYTERHUB_USER": "alice", "NB_UID": "4321", "NB_GID": "4321"}
ALICE_ID = "uid=4321(alice) gid=4321(alice) groups=4321(alice),100(users)"
# What creating an account may change: the account files, shadow-utils' `-` backups and lock.
ACCOUNT_FILES = frozenset(
    {
        f"/etc/{name}{suffix}"
        for name in ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")
        for suffix in ("", "-")
    }
    | {"/etc/.pwd.lock", "/etc"}
)
# C0 (but newline and tab, which separate lines and `env` output) and C1 controls, DEL.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class PathState(NamedTuple):
    """One changed path as the container left it."""

    kind: int  # stat.S_IFMT
    mode: int
    uid: int
    gid: int
    content: Optional[str]  # a file's sha256, a symlink's target, None for the rest
    mtime_ns: int


def changed_between(
    before: dict[str, PathState], after: dict[str, PathState], times: bool = False
) -> set[str]:
    """Paths created, removed or different; times=True counts a new mtime (a rewrite of the
    same bytes) as a change too."""

    def seen(state: Optional[PathState]) -> Optional[tuple]:
        return state if state is None or times else state[:-1]

    return {p for p in set(before) | set(after) if seen(before.get(p)) != seen(after.get(p))}


def sandbox_owns(path: str) -> bool:
    """Paths the sandbox itself touches: the project's and venv's ancestors (opened with
    chmod o+rx) and what is below them (bytecode)."""
    return any(path == str(p) or path.startswith(str(p) + "/") for p in (PROJECT, VENV)) or any(
        path == str(p) for d in (PROJECT, VENV) for p in d.parents
    )


# The sandbox's lower layer is the machine's own /. A few tests assert what a plain Debian
# host (CI) lacks: no jovyan of its own, no jupyterhub on PATH. Dockerfile.test's image is a
# docker-stacks image (NBINIT_TEST_IMAGE=1) and has both, so those tests skip there.
needs_plain_host = pytest.mark.skipif(
    bool(os.environ.get("NBINIT_TEST_IMAGE")),
    reason="assumes a plain Debian host (no jovyan or jupyterhub of its own); "
    "this is Dockerfile.test's docker-stacks image",
)


def available() -> Optional[str]:
    """None when sandboxes can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("unshare"):
        return "needs util-linux unshare"
    if not Path("/usr/bin/python3").exists():
        return "needs Debian's /usr/bin/python3"
    return None


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def lines(self, level: str) -> list[str]:
        """The log lines of one level (INFO, WARNING, ERROR, FATAL) on stderr."""
        return [line for line in self.stderr.splitlines() if line.startswith(level + "[")]


@dataclass
class Sandbox:
    """One container; several runs in it share its filesystem (restarts, idempotency)."""

    base: Path
    # Shell lines run inside the namespace before chroot; $R is the new root.
    setup: list[str] = field(default_factory=list)
    # Its own UTS namespace with this hostname (as each pod has its own); None: the host's.
    hostname: Optional[str] = None

    def __post_init__(self) -> None:
        self.upper = self.base / "upper"
        self.work = self.base / "work"
        self.root = self.base / "root"
        for path in (self.upper, self.work, self.root):
            path.mkdir(parents=True, exist_ok=True)

    # -- preparing the filesystem -------------------------------------------------------
    def host_view(self, path: str) -> Path:
        """Where a path of the container lives in upper (it may not exist yet)."""
        return self.upper / path.lstrip("/")

    def _make_parents(self, path: str) -> None:
        """Create missing parents in upper with the lower layer's owner and mode."""
        parts = Path(path.lstrip("/")).parts[:-1]
        current = Path("/")
        for part in parts:
            current = current / part
            target = self.upper / current.relative_to("/")
            if target.exists() or target.is_symlink():
                continue
            target.mkdir()
            if current.is_dir() and not current.is_symlink():
                st = current.stat()
                os.chown(target, st.st_uid, st.st_gid)
                os.chmod(target, st.st_mode & 0o7777)

    def write(
        self, path: str, content: str | bytes = "", mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> Path:
        self._make_parents(path)
        target = self.host_view(path)
        data = content.encode() if isinstance(content, str) else content
        target.write_bytes(data)
        os.chown(target, uid, gid)
        os.chmod(target, mode)
        return target

    def mkdir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
        self._make_parents(path)
        target = self.host_view(path)
        target.mkdir(exist_ok=True)
        os.chown(target, uid, gid)
        os.chmod(target, mode)
        return target

    def symlink(self, path: str, points_to: str, uid: int = 0, gid: int = 0) -> Path:
        self._make_parents(path)
        target = self.host_view(path)
        target.symlink_to(points_to)
        os.lchown(target, uid, gid)
        return target

    def read(self, path: str) -> str:
        """A file as the container left it (upper if changed, else the host's)."""
        changed = self.host_view(path)
        return (changed if changed.exists() else Path(path)).read_text()

    def changed_paths(self, below: str = "/") -> set[str]:
        """Every path the container created or modified below `below` (relative to its /)."""
        return {"/" + str(p.relative_to(self.upper)) for p in self.host_view(below).rglob("*")}

    def snapshot(
        self, keep: Callable[[str], bool] = lambda path: True, below: tuple[str, ...] = ("/",)
    ) -> dict[str, PathState]:
        """The state of every changed path that keep accepts (type, mode, owner, content).
        `below` limits the walk (a tree nested thousands deep elsewhere is not walked)."""
        found = {}
        for path in set().union(*(self.changed_paths(top) for top in below)):
            if not keep(path):
                continue
            target = self.host_view(path)
            info = os.lstat(target)
            if stat.S_ISREG(info.st_mode):
                content: Optional[str] = hashlib.sha256(target.read_bytes()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                content = os.readlink(target)
            else:
                content = None
            found[path] = PathState(
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                content,
                info.st_mtime_ns,
            )
        return found

    def baseline(
        self, keep: Callable[[str], bool] = lambda path: True, below: tuple[str, ...] = ("/",)
    ) -> dict[str, PathState]:
        """Apply the setup once without nbinit (`true`): the snapshot a run is compared to."""
        result = self.run(["true"])
        assert result.returncode == 0, result.stderr
        return self.snapshot(keep, below)

    def add_jovyan(self) -> None:
        """Lay the container out like a docker-stacks image: jovyan (1000), group users (100)."""
        # The host may have its own uid 1000 (a cloud agent's user): the image would not.
        self.setup.append(
            "old=$(chroot $R getent passwd 1000 | cut -d: -f1); "
            'if [ -n "$old" ] && [ "$old" != jovyan ]; then chroot $R userdel "$old"; fi; '
            "grep -q '^jovyan:' $R/etc/passwd || chroot $R useradd --no-log-init -m "
            "-u 1000 -g 100 -s /bin/bash jovyan"
        )

    def _carry_hidden_trees(self) -> list[str]:
        """Shell lines that bring the project and venv back when /tmp or /run hid them.

        CI may clone the project under /tmp, which the container's fresh tmpfs covers. Each
        such tree gets an overlay of its own (changes land here, never in the host's tree).
        """
        lines = []
        trees = sorted({str(PROJECT), str(VENV)})
        for index, tree in enumerate(trees):
            if any(tree.startswith(other + "/") for other in trees):
                continue  # the venv inside the project comes with it
            if not tree.startswith(("/tmp/", "/run/")):
                continue
            upper, work = self.base / f"carry{index}-upper", self.base / f"carry{index}-work"
            upper.mkdir(exist_ok=True)
            work.mkdir(exist_ok=True)
            target = shlex.quote(tree)
            lines += [
                f'mkdir -p "$R"{target}',
                f"mount -t overlay overlay -o lowerdir={target},upperdir={upper},"
                f'workdir={work} "$R"{target}',
            ]
        return lines

    # -- running --------------------------------------------------------------------------
    def run(
        self,
        argv: list[str],
        env: Optional[dict[str, str]] = None,
        timeout: float = 60,
        net: bool = False,
        pid1: bool = True,
        send_signal_after: Optional[tuple[float, int]] = None,
        signal_once: Optional[Callable[[], bool]] = None,
    ) -> Result:
        """Run argv as PID 1 in the container with exactly env (plus PATH).

        send_signal_after=(delay, signum) signals PID 1 after delay seconds, counted from
        when signal_once() first holds if given (a loaded machine may take seconds to reach
        the moment a test means: wait for its evidence, not for a guessed time).
        """
        environment = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
        environment.update(env or {})
        assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in environment.items())
        # A user who dropped root must reach the project and its venv: open the path to
        # them inside the overlay only (chmod copies up; the host keeps its modes).
        reachable = sorted({str(p) for d in (PROJECT, VENV) for p in [d, *d.parents]})
        script = [
            "set -e",
            f"R={shlex.quote(str(self.root))}",
            f"mount -t overlay overlay -o lowerdir=/,upperdir={self.upper},workdir={self.work} $R",
            "mount -t proc proc $R/proc",
            "mount --rbind /dev $R/dev",
            "mount --rbind -o ro /sys $R/sys 2>/dev/null || mount --bind /sys $R/sys",
            "mount -t tmpfs -o mode=1777 tmpfs $R/tmp",
            "mount -t tmpfs -o mode=755 tmpfs $R/run",
            *self._carry_hidden_trees(),
            "for d in "
            + " ".join(shlex.quote(p) for p in reachable)
            + '; do chmod o+rx "$R$d" 2>/dev/null || true; done',
        ]
        if net:
            script.append("ip link set lo up")
        if self.hostname:  # only ever inside the --uts namespace added below
            script.append(f"hostname {shlex.quote(self.hostname)}")
        script += self.setup
        command = shlex.join(argv)
        if pid1:
            script.append(f"exec chroot $R /usr/bin/env -i {assignments} {command}")
        else:
            script.append(f"chroot $R /usr/bin/env -i {assignments} {command}")
        flags = ["--mount", "--pid", "--fork", "--propagation", "private", "--kill-child"]
        if net:
            flags.append("--net")
        if self.hostname:
            flags.append("--uts")
        process = subprocess.Popen(
            ["unshare", *flags, "sh", "-c", "\n".join(script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if send_signal_after is not None:
            delay, signum = send_signal_after
            if signal_once is not None:
                # Counted from its evidence; PID 1 ending first or none by the timeout leaves
                # communicate() below to tell what happened.
                with contextlib.suppress(WaitTimeout):
                    wait_until(
                        "the moment to signal PID 1",
                        signal_once,
                        timeout=timeout,
                        interval=0.05,
                        ignore=(),
                        alive=lambda: process.poll() is None,
                    )
            try:
                out, err = process.communicate(timeout=delay)
            except subprocess.TimeoutExpired:
                _signal_pid1(process.pid, signum)
            else:
                return Result(process.returncode, out.decode(), err.decode())
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            return Result(-9, out.decode(), err.decode() + "\n[sandbox: timed out]")
        return Result(process.returncode, out.decode(), err.decode())


def _signal_pid1(unshare_pid: int, signum: int) -> None:
    """Send a signal to the container's PID 1 (unshare's child), as the kubelet would."""
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children")
    try:
        for pid in children.read_text().split():
            os.kill(int(pid), signum)
    except (OSError, ValueError):
        pass
