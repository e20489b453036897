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
import stat
import subprocess
import sys
import threading
from typing import Callable, Optional

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
        from nbinit.fetch import public_url  # only when there is a URL to clean

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
    launcher = "import os,sys\nif os.fork(): os._exit(0)\nos.execv(sys.argv[1], sys.argv[1:])"
    read_out, write_out = os.pipe()
    read_in, write_in = os.pipe()
    try:
        middle = subprocess.Popen(  # noqa: S603
            [sys.executable, "-I", "-S", "-c", launcher, *argv],
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


def chown_tree(
    top_fd: int, uid: int, gid: int, time_left: Callable[[], float]
) -> tuple[int, bool, int]:
    """Recursive chown inside an opened directory: (entries changed, finished in time,
    files left because they have more than one hard link).

    fwalk opens every directory without following symlinks and chown acts on names
    relative to those fds with follow_symlinks=False, so a symlink the user swaps in is
    re-owned itself, never its target. It stays on the home's file system, and never
    re-owns a file with several hard links: the user may have linked /etc/shadow in.
    """
    device = os.fstat(top_fd).st_dev
    changed = linked = 0
    walk = os.fwalk(".", dir_fd=top_fd, follow_symlinks=False)
    for _dirpath, dirnames, filenames, dir_fd in walk:
        if time_left() <= 0:
            return changed, False, linked
        for name in list(dirnames) + filenames:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if info.st_dev != device:
                if name in dirnames:
                    dirnames.remove(name)  # a mount inside the home: not ours to re-own
                continue
            if (info.st_uid, info.st_gid) == (uid, gid):
                continue
            if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                linked += 1
                continue
            with contextlib.suppress(FileNotFoundError):
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
                changed += 1
    return changed, True, linked


def is_public_image_entry(info: os.stat_result) -> bool:
    """Root's and readable by everyone: a regular file (o+r) or a directory (o+rx, writable
    by root alone, so nobody else can swap what is in it). Never a link, device or fifo."""
    if info.st_uid != 0:
        return False
    if stat.S_ISREG(info.st_mode):
        return bool(info.st_mode & 0o004)
    if stat.S_ISDIR(info.st_mode):
        return info.st_mode & 0o005 == 0o005 and not info.st_mode & 0o022
    return False


def copy_tree(
    source: str, dest_fd: int, uid: int, gid: int, time_left: Callable[[], float]
) -> tuple[int, bool]:
    """Copy the image's skeleton into an empty root-only directory, owned by uid:gid.

    Only what the user could read anyway is copied (is_public_image_entry): a root-only
    file, a link (to /etc/shadow, say) or a user's file in the skeleton is skipped. The
    destination is reached only through fds of directories created here. Other file
    systems (a volume mounted inside the skeleton) are skipped; nothing is moved or
    deleted. Returns (entries copied, finished in time).
    """
    device = os.stat(source).st_dev
    copied = 0
    with os.scandir(source) as entries:
        for entry in entries:
            if time_left() <= 0:
                return copied, False
            info = entry.stat(follow_symlinks=False)
            mode = stat.S_IMODE(info.st_mode) & 0o777  # never copy setuid/setgid bits
            if info.st_dev != device or not is_public_image_entry(info):
                continue
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(entry.name, 0o700, dir_fd=dest_fd)
                sub = open_directory_nofollow(entry.name, dir_fd=dest_fd)
                try:
                    count, complete = copy_tree(entry.path, sub, uid, gid, time_left)
                    copied += count
                    os.fchown(sub, uid, gid)
                    os.fchmod(sub, mode)
                finally:
                    os.close(sub)
                if not complete:
                    return copied, False
            elif not _copy_file(entry.path, entry.name, dest_fd, uid, gid, mode, info):
                continue
            copied += 1
    return copied, True


def _copy_file(
    path: str, name: str, dest_fd: int, uid: int, gid: int, mode: int, info: os.stat_result
) -> bool:
    """Copy one file; False (nothing written) when what was opened is not what was checked."""
    source = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        opened = os.fstat(source)
        if not is_public_image_entry(opened) or not stat.S_ISREG(opened.st_mode):
            return False
        target = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dest_fd,
        )
        try:
            while os.sendfile(target, source, None, 1 << 20) > 0:
                pass
            os.fchown(target, uid, gid)
            os.fchmod(target, mode)
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(target)
    finally:
        os.close(source)
    return True


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
