"""Everything done as root or on behalf of another user, in one place.

Steps never call os.setuid, os.chown or subprocess with user= themselves: they call this
module, which clears supplementary groups (root's 0, 6 and 27 otherwise survive setgid and
setuid), builds a clean environment, enforces a timeout on the whole process group, and
never follows a symlink the user could have planted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import Optional

from nbinit.context import Identity
from nbinit.errors import NbinitError, Terminated

# Kept from nbinit's own environment for every process run as the user: the image's paths.
KEPT_VARIABLES = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ")
# Never handed to the user's processes or the server.
SECRET_VARIABLES = ("NBINIT_CONFIG_TOKEN",)

_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()
_terminating = threading.Event()


def groups_for(identity: Identity) -> list[int]:
    """The supplementary groups the user would get at login (e.g. `users`), never gid 0."""
    try:
        groups = os.getgrouplist(identity.name, identity.gid)
    except (KeyError, OSError):
        groups = [identity.gid]
    return sorted({g for g in groups if g != 0} | {identity.gid})


def switches_user(identity: Optional[Identity]) -> bool:
    return identity is not None and os.geteuid() == 0 and identity.uid != 0


def user_environment(
    identity: Optional[Identity], base: dict[str, str], remove: tuple[str, ...] = ()
) -> dict[str, str]:
    """The server's environment: the pod's, with the user's identity and no secrets."""
    env = {k: v for k, v in base.items() if k not in SECRET_VARIABLES and k not in remove}
    if identity is not None:
        env.update(
            HOME=identity.home,
            USER=identity.name,
            LOGNAME=identity.name,
            SHELL=identity.shell,
        )
    return env


def clean_environment(identity: Optional[Identity], base: dict[str, str]) -> dict[str, str]:
    """A minimal built environment for helper processes (git, probes): nothing else leaks in."""
    env = {k: base[k] for k in KEPT_VARIABLES if k in base}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if identity is not None:
        env.update(HOME=identity.home, USER=identity.name, LOGNAME=identity.name)
    return env


def run_as_user(
    identity: Optional[Identity],
    argv: list[str],
    *,
    env: dict[str, str],
    timeout: float,
    cwd: Optional[str] = None,
    umask: int = 0o022,
    capture: bool = True,
    stdin_data: Optional[bytes] = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv as the user (when root) with a hard timeout on its whole process group.

    Raises subprocess.TimeoutExpired after killing the group, so a hung git or nvidia-smi
    can never keep a pod from starting.
    """
    if _terminating.is_set():
        raise Terminated()
    user = group = extra_groups = None
    if identity is not None and switches_user(identity):
        # extra_groups: without it the child keeps root's supplementary groups.
        user, group, extra_groups = identity.uid, identity.gid, groups_for(identity)
    process = subprocess.Popen(  # noqa: S603
        argv,
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        # Uncaptured output goes to stderr: stdout belongs to the notebook server.
        stdout=subprocess.PIPE if capture else sys.stderr.fileno(),
        stderr=subprocess.PIPE if capture else None,
        env=env,
        cwd=cwd,
        umask=umask,
        start_new_session=True,  # its own process group, so the timeout kills grandchildren
        user=user,
        group=group,
        extra_groups=extra_groups,
    )
    with _children_lock:
        _children.add(process)
    try:
        stdout, stderr = process.communicate(stdin_data, timeout=max(timeout, 0.01))
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.communicate()
        raise
    finally:
        with _children_lock:
            _children.discard(process)
    if _terminating.is_set():
        raise Terminated()
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def kill_children() -> None:
    """On SIGTERM before exec: stop every helper process group, leave no orphans."""
    _terminating.set()
    with _children_lock:
        for process in list(_children):
            _kill_group(process)


def drop_privileges(identity: Identity) -> None:
    """setgroups, setgid, setuid — in that order — then prove root cannot come back."""
    if os.geteuid() != 0:
        return
    if identity.uid == 0 or identity.gid == 0:
        raise NbinitError(
            "refusing to run the server as root (uid or gid 0)",
            "set NB_UID/NB_GID to the user's own ids",
        )
    groups = groups_for(identity)
    os.setgroups(groups)
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    if os.getuid() != identity.uid or os.getgid() != identity.gid or 0 in os.getgroups():
        raise NbinitError("privilege drop did not take effect", "report this as a bug in nbinit")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise NbinitError("privilege drop is reversible (setuid(0) worked)", "report this as a bug")


def open_directory_nofollow(path: str) -> int:
    """An fd for a real directory at path; a symlink at the last component is refused."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return fd


def read_file_as_user(
    identity: Optional[Identity], path: str, *, limit: int, timeout: float
) -> Optional[bytes]:
    """Read a user-controlled file with the user's rights, no symlinks, at most limit bytes.

    Returns None when the file does not exist. Reading as the user means a dotfile that
    links to /etc/shadow is unreadable, not parsed and echoed into a log.
    """
    code = (
        "import os,sys\n"
        "p,n=sys.argv[1],int(sys.argv[2])\n"
        "try:\n"
        " fd=os.open(p,os.O_RDONLY|os.O_NOFOLLOW|os.O_NONBLOCK)\n"
        "except FileNotFoundError:\n"
        " sys.exit(3)\n"
        "except OSError as e:\n"
        " sys.stderr.write(e.strerror or str(e)); sys.exit(4)\n"
        "import stat\n"
        "if not stat.S_ISREG(os.fstat(fd).st_mode):\n"
        " sys.stderr.write('not a regular file'); sys.exit(4)\n"
        "d=os.read(fd,n+1)\n"
        "if len(d)>n:\n"
        " sys.stderr.write('larger than %d bytes'%n); sys.exit(4)\n"
        "sys.stdout.buffer.write(d)\n"
    )
    result = run_as_user(
        identity,
        [sys.executable, "-I", "-S", "-c", code, path, str(limit)],
        env=clean_environment(identity, dict(os.environ)),
        timeout=timeout,
        cwd="/",
    )
    if result.returncode == 3:
        return None
    if result.returncode != 0:
        reason = result.stderr.decode("utf-8", "replace").strip()[:120] or "unreadable"
        raise NbinitError(f"cannot read {path}: {reason}", "make it a plain file you own")
    return result.stdout


def exec_command(argv: list[str], env: dict[str, str], cwd: Optional[str] = None) -> None:
    """Replace this process with argv (same PID, so tini stays the server's parent)."""
    if cwd:
        try:
            os.chdir(cwd)
        except OSError:
            os.chdir("/")
    os.execvpe(argv[0], argv, env)
