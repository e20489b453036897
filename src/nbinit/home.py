"""The user's home: where it may be, whom root may hand it to, and making it from the skeleton.

Root treats the home as the user's ground: it never follows a symlink there, never takes
over a directory it did not create, and re-owns or fills it only by fd through
`privilege` and `fdwalk`. Problems the user can live with (root squash, a read-only
volume, a skeleton it cannot copy) are one WARNING; the rest is an NbinitError.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from typing import Callable

from nbinit import fdwalk, privilege
from nbinit.accounts import AccountPolicy, quoted
from nbinit.context import Identity
from nbinit.errors import NbinitError
from nbinit.log import Log

HOME_MODE = 0o755


# -- where it may be, and whose it is -----------------------------------------------------

# Never a home, nor anything under them: the image's own directories (and /lib*).
SYSTEM_DIRECTORIES = (
    "/etc", "/usr", "/var", "/root", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys",
    "/run", "/opt", "/srv", "/tmp",
)  # fmt: skip


def check_home_path(home: str) -> None:
    """A home is a plain absolute path two levels down or more, outside the system's
    directories (also once the image's symlinks, e.g. /home -> /var/home, are resolved)."""
    why = ""
    if not home.startswith("/") or home.startswith("//") or os.path.normpath(home) != home:
        why = "not a plain absolute path"
    elif home.count("/") < 2:
        why = "/ or a top-level directory"
    else:
        for path in (home, os.path.join(os.path.realpath(os.path.dirname(home)), "x")):
            top = "/" + path.split("/")[1]
            if top in SYSTEM_DIRECTORIES or top.startswith("/lib"):
                why = f"under the system directory {top}"
                break
    if why:
        raise NbinitError(
            f"home {quoted(home)} (user.home) is {why}: a home is never / or a system directory",
            "set user.home to a directory under a home root such as /home/{user}",
        )


def check_home_owner(home: str, uid: int, policy: AccountPolicy) -> None:
    """Root re-owns only a home the user already owns, or a root-owned volume: a mount
    point, or a directory the runtime made for volumes mounted in it (nothing else inside).
    Never another account's directory, nor one of the image's."""
    try:
        info = os.lstat(home)
    except FileNotFoundError:
        return
    if info.st_uid == uid or policy.chown_home == "never" or not stat.S_ISDIR(info.st_mode):
        return
    if info.st_uid == 0:
        mounts = mount_points()
        if home in mounts or os.path.ismount(home) or _only_mount_points_in(home, mounts):
            return
    raise NbinitError(
        f"home {home} exists, belongs to uid {info.st_uid} and is not a volume mounted there: "
        "nbinit never takes over a directory it did not create",
        f"remove it or give it to uid {uid} in the image, mount the user's volume at {home}, "
        "or set user.home to another path",
    )


def _only_mount_points_in(directory: str, mounts: set[str]) -> bool:
    try:
        with os.scandir(directory) as entries:
            return all(entry.path in mounts for _, entry in zip(range(1000), entries))
    except OSError:
        return False


def mount_points() -> set[str]:
    """Every mount point of this mount namespace (bind mounts of one file system included,
    which os.path.ismount misses)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            return {
                _unescape_mount(fields[4])
                for fields in (line.split(" ") for line in handle)
                if len(fields) > 4
            }
    except OSError:
        return set()


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


# -- checking and making it ---------------------------------------------------------------


def check_home(home: str) -> bool:
    """Before any account change: the home is a real directory, or can be created safely.

    Returns whether it exists. Raises for a symlink (never followed: `/home/u -> /etc`
    would hand /etc to the user), a non-directory, or a parent we cannot create it in.
    """
    try:
        info = os.lstat(home)
    except FileNotFoundError:
        _check_parent(home)
        return False
    if stat.S_ISLNK(info.st_mode):
        raise NbinitError(
            f"home {home} is a symlink (to {quoted(os.readlink(home))}), not a directory",
            "remove the symlink; the home must be a real directory or a volume mounted there",
        )
    if not stat.S_ISDIR(info.st_mode):
        raise NbinitError(
            f"home {home} is not a directory", "remove it, or mount the home volume there"
        )
    return True


def _check_parent(home: str) -> None:
    parent = os.path.dirname(home.rstrip("/")) or "/"
    try:
        info = os.stat(parent)
        read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
    except OSError as exc:
        raise NbinitError(
            f"cannot create home {home}: {parent}: {exc.strerror}",
            f"create {parent} in the image or set user.home",
        ) from None
    if info.st_uid != 0 or info.st_mode & 0o022:
        # Someone else could swap the new directory for a symlink before we chown it.
        raise NbinitError(
            f"cannot create home {home} safely: {parent} is not root-owned or is writable by "
            "group or others",
            f"make {parent} root-owned and not group/other-writable, or pre-create {home}",
        )
    if read_only:
        raise NbinitError(
            f"cannot create home {home}: {parent} is on a read-only file system",
            f"mount a writable volume at {home}, or make {parent} writable",
        )


def ensure_home(
    identity: Identity, policy: AccountPolicy, log: Log, time_left: Callable[[], float]
) -> None:
    """Create the home from the skeleton, or keep it and fix only its top's owner.

    Never follows a symlink at the home; never moves or deletes anything; chown is by fd.
    Problems the user can live with (root squash, read-only volume) are one WARNING.
    """
    home = identity.home
    if not check_home(home):
        create_home(identity, policy, log, time_left)
        return
    fd = _open_home(home)
    try:
        current = os.fstat(fd)
        owner = f"{current.st_uid}:{current.st_gid}"
        wanted = f"{identity.uid}:{identity.gid}"
        read_only = privilege.is_read_only(fd)
        if read_only:
            log.warning(
                f"home {home} is on a read-only file system (owner {owner}): notebooks cannot "
                "be saved there; mount it read-write"
            )
            return
        if owner == wanted:
            log.info(f"home {home} exists (owner {owner}): kept")
        elif policy.chown_home == "never":
            log.info(f"home {home} is owned by {owner}, not {wanted}: left (chown_home: never)")
        else:
            try:
                privilege.chown_fd(fd, identity.uid, identity.gid)
            except OSError as exc:
                _warn_chown(log, home, owner, wanted, exc)
                return
            log.info(f"home {home} exists: owner changed from {owner} to {wanted}, contents kept")
        if policy.chown_home == "recursive":
            try:
                changed, complete, linked = fdwalk.chown_tree(
                    fd, identity.uid, identity.gid, time_left
                )
            except OSError as exc:
                log.warning(f"home {home}: recursive chown stopped: {exc.strerror}; continuing")
                return
            left = []
            if not complete:
                left.append("it stopped at the deadline, the rest keeps its owner")
            if linked:
                # A hard link to a file outside the home (root's, another user's) would be
                # re-owned with it: such files are never touched.
                left.append(f"{linked} files with more than one hard link were left as they are")
            if left:
                log.warning(
                    f"home {home}: recursive chown changed {changed} entries to {wanted}; "
                    f"{'; '.join(left)}; fix those by hand, or set user.chown_home: top"
                )
            elif changed:
                log.info(f"home {home}: {changed} entries inside changed to {wanted}")
    finally:
        os.close(fd)


def _open_home(home: str) -> int:
    try:
        return privilege.open_directory_nofollow(home)
    except OSError as exc:
        # ELOOP: it became a symlink between the lstat and the open.
        raise NbinitError(
            f"cannot open home {home}: {exc.strerror}", "make it a real directory"
        ) from None


def _warn_chown(log: Log, home: str, owner: str, wanted: str, exc: OSError) -> None:
    why = "e.g. an NFS volume with root squash" if exc.errno in (errno.EPERM, errno.EACCES) else ""
    log.warning(
        f"cannot change the owner of home {home} from {owner} to {wanted}: "
        f"{exc.strerror}{' (' + why + ')' if why else ''}; continuing. "
        "Provision the volume owned by the user's uid"
    )


def create_home(
    identity: Identity, policy: AccountPolicy, log: Log, time_left: Callable[[], float]
) -> None:
    """Build the home beside its final path, root-only, from the skeleton; then rename it in.

    A start killed mid-copy leaves only the root-only build directory, which the next start
    removes: the home itself never exists half-copied with root-owned files in it.
    """
    home = identity.home
    parent = os.path.dirname(home.rstrip("/")) or "/"
    _check_parent(home)  # root-owned, writable by root only: nobody else can touch `build`
    build = os.path.join(parent, f".{os.path.basename(home)}.nbinit-new")
    if os.path.lexists(build):
        shutil.rmtree(build)  # fd-based: never follows a link inside
        log.info(f"removed {build}, a home left unfinished by an interrupted start")
    try:
        os.mkdir(build, 0o700)  # private until it is filled and handed over
    except OSError as exc:
        raise NbinitError(
            f"cannot create home {home}: {exc.strerror}",
            f"mount a writable volume at {home}, or make {parent} writable in the image",
        ) from None
    try:
        source = _fill_home(build, identity, policy, log, time_left)
        if os.path.lexists(home):
            raise NbinitError(f"home {home} appeared while it was being built", "start again")
        os.rename(build, home)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    log.info(f"created home {home} {source}, owner {identity.uid}:{identity.gid}")


def _fill_home(
    build: str,
    identity: Identity,
    policy: AccountPolicy,
    log: Log,
    time_left: Callable[[], float],
) -> str:
    """Copy the skeleton into build and hand it over; returns what the home was made from."""
    home = identity.home
    fd = _open_home(build)
    try:
        skeleton = policy.skeleton
        problem = skeleton_problem(skeleton) if skeleton else ""
        if skeleton and not problem:
            try:
                copied, complete = fdwalk.copy_tree(
                    skeleton, fd, identity.uid, identity.gid, time_left
                )
            except OSError as exc:  # a full disk: the home is still usable, only emptier
                copied, complete = 0, True
                log.warning(f"home {home}: copying {skeleton} failed: {exc.strerror}; continuing")
            source = f"from {skeleton} ({copied} entries)"
            if not complete:
                log.warning(f"home {home}: copying {skeleton} stopped at the deadline")
        else:
            source = "empty"
            if skeleton:
                log.warning(f"skeleton {skeleton} (user.skeleton) {problem}: home empty")
        os.fchmod(fd, HOME_MODE)
        privilege.chown_fd(fd, identity.uid, identity.gid)
    finally:
        os.close(fd)
    return source


def skeleton_problem(path: str) -> str:
    """'' when path can be copied into a home, else why not (never a link; root-owned and
    readable by everyone, so nothing is copied that the user could not read anyway)."""
    try:
        info = os.lstat(path)
    except OSError:
        return "is not a directory"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if not fdwalk.is_public_image_entry(info):
        return "is not a root-owned directory readable by everyone and writable by root only"
    # The copy walks by path: every directory above must be root's alone (nobody can swap
    # a link in) and open to everyone (a 0700 /root/skel is nothing the user could read).
    current = os.path.realpath(os.path.dirname(path))
    while True:
        above = os.stat(current)
        if above.st_uid != 0 or above.st_mode & 0o022 or not above.st_mode & 0o001:
            return f"is under {current}, which is not root's alone or not open to everyone"
        if current == "/":
            return ""
        current = os.path.dirname(current)
