"""Everything done as root or on behalf of another user, in one place.

Steps never call os.setuid, os.chown or subprocess with user= themselves: they call this
module, which clears supplementary groups (root's 0, 6 and 27 otherwise survive setgid and
setuid), builds a clean environment, enforces a timeout on the whole process group, and
never follows a symlink the user could have planted.
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
from collections.abc import Iterator
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


# A walk keeps two fds per level open (the directory and its listing); homes nest far less.
MAX_WALK_DEPTH = 128
MAX_REMOVED = 1_000_000  # entries remove_tree looks at: a large clone leftover, many times


def _too_deep() -> OSError:
    return OSError(errno.ELOOP, f"directories nested deeper than {MAX_WALK_DEPTH} levels")


def chown_tree(
    top_fd: int, uid: int, gid: int, time_left: Callable[[], float]
) -> tuple[int, bool, int]:
    """Recursive chown inside an opened directory: (entries changed, finished in time,
    files left because they have more than one hard link).

    One loop over a stack of directory fds, never recursion (os.fwalk recursed per level:
    a home nested a few thousand levels deep raised RecursionError in root). Each
    directory is opened relative to its parent's fd without following symlinks, and chown
    acts on names relative to those fds with follow_symlinks=False, so a symlink the user
    swaps in is re-owned itself, never its target. It stays on the home's file system,
    never re-owns a file with several hard links (the user may have linked /etc/shadow
    in), and deeper than MAX_WALK_DEPTH it stops with OSError(ELOOP).
    """
    device = os.fstat(top_fd).st_dev
    changed = linked = 0
    first = os.dup(top_fd)
    stack: list[tuple[int, Iterator[os.DirEntry[str]]]] = [(first, os.scandir(first))]
    try:
        while stack:
            dir_fd, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                _close_level(dir_fd, entries)
                continue
            if time_left() <= 0:
                return changed, False, linked
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if info.st_dev != device:
                continue  # a mount inside the home: not ours to re-own
            if (info.st_uid, info.st_gid) != (uid, gid):
                if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                    linked += 1
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.chown(entry.name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
                        changed += 1
            if stat.S_ISDIR(info.st_mode):
                if len(stack) >= MAX_WALK_DEPTH:
                    raise _too_deep()
                try:
                    sub = open_directory_nofollow(entry.name, dir_fd=dir_fd)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # gone, or swapped for something else since the stat
                except OSError as exc:
                    if exc.errno != errno.ELOOP:  # ELOOP: swapped for a symlink: not followed
                        raise
                    continue
                stack.append((sub, os.scandir(sub)))
        return changed, True, linked
    finally:
        for dir_fd, entries in stack:
            _close_level(dir_fd, entries)


def _close_level(dir_fd: int, entries: Iterator[os.DirEntry[str]]) -> None:
    close = getattr(entries, "close", None)
    if close:
        close()
    os.close(dir_fd)


def remove_tree(path: str) -> None:
    """Best-effort `rm -rf path` by one loop over a stack of fds: no recursion, no link followed.

    shutil.rmtree recurses per level (RecursionError on a tree a user nested a few thousand
    levels deep, which ignore_errors does not catch). Deeper than MAX_WALK_DEPTH, past
    MAX_REMOVED entries, or whatever cannot be removed, is left where it is.
    """
    try:
        top = open_directory_nofollow(path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)  # a file or a symlink: removed itself, never its target
        return
    # Each level: (its fd, its listing, the fd and name to rmdir it by once it is empty).
    try:
        listing = os.scandir(top)
    except OSError:
        os.close(top)
        return
    stack: list[tuple[int, Iterator[os.DirEntry[str]], Optional[tuple[int, str]]]] = [
        (top, listing, None)
    ]
    seen = 0
    try:
        while stack:
            dir_fd, entries, parent = stack[-1]
            seen += 1
            entry = next(entries, None) if seen <= MAX_REMOVED else None
            if entry is None:
                stack.pop()
                _close_level(dir_fd, entries)
                if parent:
                    with contextlib.suppress(OSError):
                        os.rmdir(parent[1], dir_fd=parent[0])
                continue
            with contextlib.suppress(OSError):
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.name, dir_fd=dir_fd)
                elif len(stack) < MAX_WALK_DEPTH:
                    sub = open_directory_nofollow(entry.name, dir_fd=dir_fd)
                    try:
                        stack.append((sub, os.scandir(sub), (dir_fd, entry.name)))
                    except OSError:
                        os.close(sub)
    finally:
        for dir_fd, entries, _ in reversed(stack):
            _close_level(dir_fd, entries)
        if not stack:
            with contextlib.suppress(OSError):
                os.rmdir(path)


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
    deleted. One loop over a stack, never recursion; each directory gets its owner and
    mode once its contents are in, also when the copy stops early. Returns (entries
    copied, finished in time).
    """
    device = os.stat(source).st_dev
    copied = 0
    # Each level: (its fd in the home, the source listing, its mode; None for the top).
    stack: list[tuple[int, Iterator[os.DirEntry[str]], Optional[int]]] = [
        (dest_fd, os.scandir(source), None)
    ]
    try:
        while stack:
            target_fd, entries, _ = stack[-1]
            entry = next(entries, None)
            if entry is None:
                _finish_copied_dir(stack.pop(), uid, gid)
                continue
            if time_left() <= 0:
                return copied, False
            info = entry.stat(follow_symlinks=False)
            mode = stat.S_IMODE(info.st_mode) & 0o777  # never copy setuid/setgid bits
            if info.st_dev != device or not is_public_image_entry(info):
                continue
            if stat.S_ISDIR(info.st_mode):
                if len(stack) > MAX_WALK_DEPTH:
                    raise _too_deep()
                os.mkdir(entry.name, 0o700, dir_fd=target_fd)
                sub = open_directory_nofollow(entry.name, dir_fd=target_fd)
                try:
                    listing = os.scandir(entry.path)
                except OSError:
                    os.close(sub)
                    raise
                stack.append((sub, listing, mode))
            elif not _copy_file(entry.path, entry.name, target_fd, uid, gid, mode, info):
                continue
            copied += 1
        return copied, True
    finally:
        while stack:
            with contextlib.suppress(OSError):
                _finish_copied_dir(stack.pop(), uid, gid)


def _finish_copied_dir(
    level: tuple[int, Iterator[os.DirEntry[str]], Optional[int]], uid: int, gid: int
) -> None:
    """A copied directory is done: close its listing; hand it over (the top is the caller's)."""
    fd, entries, mode = level
    close = getattr(entries, "close", None)
    if close:
        close()
    if mode is None:
        return
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


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
