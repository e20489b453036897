"""Everything done as root or on behalf of another user, in one place.

Steps never call os.setuid, os.chown or subprocess with user= themselves: they call this
module, which clears supplementary groups (root's 0, 6 and 27 otherwise survive setgid and
setuid), builds a clean environment, enforces a timeout on the whole process group, and
never follows a symlink the user could have planted. Walks over a whole tree (re-own a
home, copy the skeleton, remove a leftover) are its helper module `fdwalk`, built on the
no-follow opens here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
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


def _credentials(
    identity: Optional[Identity],
) -> tuple[Optional[int], Optional[int], Optional[list[int]]]:
    """subprocess's user, group and extra_groups for a child run as identity (or unchanged).

    extra_groups is never left out: without it the child keeps root's supplementary groups.
    """
    if identity is None or not switches_user(identity):
        return None, None, None
    return identity.uid, identity.gid, groups_for(identity)


def user_environment(
    identity: Optional[Identity], base: dict[str, str], remove: tuple[str, ...] = ()
) -> dict[str, str]:
    """The server's environment: the pod's, with the user's identity and no secrets."""
    env = {k: v for k, v in base.items() if k not in SECRET_VARIABLES and k not in remove}
    if env.get("NBINIT_CONFIG_URL"):
        from nbinit.urls import public_url  # only when there is a URL to clean

        # user:password@ or ?token= in the admin config's URL is the admin's, not the user's.
        env["NBINIT_CONFIG_URL"] = public_url(env["NBINIT_CONFIG_URL"])
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
    user, group, extra_groups = _credentials(identity)
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
        # A process stuck in D-state (a hung NFS stat) survives SIGKILL: do not wait forever.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=2)
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
        for pgid in list(_detached):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)  # the git worker stops its own git groups


# Process groups of detached user workers still owned by this run (killed on SIGTERM
# before exec; forgotten once handed over to run on after exec).
_detached: set[int] = set()


def spawn_detached_as_user(
    identity: Optional[Identity],
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str = "/",
    umask: int = 0o022,
    stdin_data: bytes = b"",
    timeout: float = 10.0,
) -> tuple[int, int]:
    """Start argv as the user, detached; returns (its process group, fd of its stdout).

    A double fork: the middle process exits at once, so the worker is not our child and,
    after nbinit has exec'd the server, is reaped by PID 1 (tini), never left a zombie of
    the server. stdin_data is written to its stdin (keep it under the 64 KiB pipe buffer).
    """
    if _terminating.is_set():
        raise Terminated()
    user, group, extra_groups = _credentials(identity)
    from nbinit.runtime import package_location

    middle_program = f"{package_location()}/nbinit/detach"  # forks, exits, the child execs
    read_out, write_out = os.pipe()
    read_in, write_in = os.pipe()
    try:
        middle = subprocess.Popen(  # noqa: S603
            [sys.executable, "-I", "-S", middle_program, *argv],
            stdin=read_in,
            stdout=write_out,
            env=env,
            cwd=cwd,
            umask=umask,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
    finally:
        os.close(read_in)
        os.close(write_out)
    with _children_lock:
        _detached.add(middle.pid)
    try:
        middle.wait(timeout=max(timeout, 0.01))
    except subprocess.TimeoutExpired:
        _kill_group(middle)
        forget_detached(middle.pid)
        os.close(write_in)
        os.close(read_out)
        raise
    with os.fdopen(write_in, "wb") as handle, contextlib.suppress(BrokenPipeError):
        handle.write(stdin_data)
    return middle.pid, read_out


def forget_detached(pgid: int) -> None:
    """The worker ended, or goes on after exec: a later SIGTERM must not kill it."""
    with _children_lock:
        _detached.discard(pgid)


def drop_privileges(identity: Identity) -> None:
    """setgroups, setgid, setuid — in that order — then prove root cannot come back.

    Without setgroups root's supplementary groups (0, 6 disk, 27 sudo) survive the drop.
    """
    if os.geteuid() != 0:
        return
    if identity.uid == 0 or identity.gid == 0:
        raise NbinitError(
            "refusing to run the server as root (uid or gid 0)",
            "set NB_UID/NB_GID to the user's own ids",
        )
    groups = groups_for(identity)
    try:
        os.setgroups(groups)
        os.setgid(identity.gid)
        os.setuid(identity.uid)
    except OSError as exc:
        raise NbinitError(
            f"cannot drop root to uid {identity.uid} gid {identity.gid}: {exc.strerror}",
            "the container needs CAP_SETUID and CAP_SETGID (do not drop them in the pod's "
            "securityContext)",
        ) from None
    ids = (os.getuid(), os.geteuid(), os.getgid(), os.getegid())
    if ids != (identity.uid, identity.uid, identity.gid, identity.gid) or set(os.getgroups()) - set(
        groups
    ):
        raise NbinitError("privilege drop did not take effect", "report this as a bug in nbinit")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise NbinitError("privilege drop is reversible (setuid(0) worked)", "report this as a bug")


def open_directory_nofollow(path: str, dir_fd: Optional[int] = None) -> int:
    """An fd for a real directory at path; a symlink at the last component is refused."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags, dir_fd=dir_fd)


def is_read_only(fd: int) -> bool:
    return bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)


def chown_fd(fd: int, uid: int, gid: int) -> None:
    """chown what fd refers to: the object we opened (no-follow), not whatever a path is now."""
    os.fchown(fd, uid, gid)


def write_file_atomic(path: str, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write via a fresh temp file and rename, so a reader never sees half a file.

    O_EXCL|O_NOFOLLOW: a planted symlink at the temp name can never redirect the write,
    and rename replaces a symlink at the final name instead of following it. durable=False
    skips the fsync (still atomic for readers; only a power cut could lose it).
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask must not make a file unreadable to whom it is for
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_regular_file(path: str, max_bytes: int, follow: bool = True) -> Optional[bytes]:
    """At most max_bytes + 1 bytes of a regular file (so a caller sees it is too big).

    None when nothing is there. Whatever else is there is one NbinitError, never a hang or
    a traceback: a fifo (opened non-blocking, never read), a directory, a device, no
    permission, and with follow=False a symlink.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = "a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise NbinitError(f"cannot read {path}: {problem}", "give a readable file") from None
    except ValueError:  # a NUL in the name (from a JSON string): no file is called that
        raise NbinitError(f"cannot read {path!r}: a NUL in the name", "give a file name") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NbinitError(f"{path} is not a regular file", "give a readable file")
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read(max_bytes + 1)
        except OSError as exc:
            raise NbinitError(
                f"cannot read {path}: {exc.strerror}", "give a readable file"
            ) from None


def exec_command(argv: list[str], env: dict[str, str], cwd: Optional[str] = None) -> None:
    """Replace this process with argv (same PID, so tini stays the server's parent)."""
    if cwd:
        try:
            os.chdir(cwd)
        except OSError:
            os.chdir("/")
    os.execvpe(argv[0], argv, env)


def executable_by(path: str, identity: Optional[Identity]) -> bool:
    """Whether identity could exec path: a regular file with its x bit, in directories it
    can search. As root for another user os.access would answer for root, so the modes
    are read against the user's uid, gid and groups.
    """
    if not switches_user(identity):
        return os.path.isfile(path) and os.access(path, os.X_OK)
    assert identity is not None
    groups = set(groups_for(identity))

    def allowed(info: os.stat_result) -> bool:
        if info.st_uid == identity.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid in groups:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)

    try:
        real = os.path.realpath(path)
        info = os.stat(real)
        directories = [os.stat(d) for d in _parents(real)]
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and allowed(info) and all(map(allowed, directories))


def _parents(path: str) -> list[str]:
    parents: list[str] = []
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return parents
        parents.append(parent)
        path = parent


def find_executable(name: str, path: Optional[str], identity: Optional[Identity]) -> Optional[str]:
    """What exec would run for name, as identity: PATH searched in order (execvp's rules)."""
    if "/" in name:
        return name if executable_by(name, identity) else None
    for directory in (path if path is not None else os.defpath).split(os.pathsep):
        if directory and os.path.isabs(directory):
            candidate = os.path.join(directory, name)
            if executable_by(candidate, identity):
                return candidate
    return None
