"""The user's own account: validate the hub's identity, create group and user, make the home.

Debian's useradd accepts `x/../../etc`, `..` and `-u 0 -o`, so nothing reaches it before
the rules here pass. Everything done as root on a path goes through `privilege` (no-follow
opens, fd-based chown); this module decides what to do and says so, one line per action.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
from typing import Any, Callable, Optional

from nbinit import privilege, schema
from nbinit.context import Identity
from nbinit.errors import NbinitError
from nbinit.log import Log

NAME_RE = re.compile(schema.NAME_PATTERN)
# Never a user's id: root, nobody/nogroup, the 16-bit "-1" and the 32-bit "-1".
FORBIDDEN_IDS = (0, 65534, 65535, 4294967295)
MAX_ID = 2**31 - 1

HUB_SETTING = (
    "set NB_UID (and NB_GID) in the spawner's environment: a hub pre_spawn_hook that "
    "reads the `uid` annotation of the user's namespace into spawner.environment "
    "(KubeSpawner), or remove the marker"
)
HOME_MODE = 0o755


class AccountPolicy:
    """The `user` section of the validated config, typed. The defaults are schema.py's."""

    def __init__(self, settings: Optional[dict[str, Any]] = None) -> None:
        merged = schema.defaults()["user"]
        merged.update((k, v) for k, v in (settings or {}).items() if v is not None)
        self.marker: str = merged["marker"]
        self.home: str = merged["home"]
        # The group the account gets (empty: its own, named like it); not a config key.
        self.group: str = str(merged.get("group") or "")
        self.extra_groups: tuple[str, ...] = tuple(merged["extra_groups"])
        self.uid_min: int = merged["uid_min"]
        self.uid_max: int = merged["uid_max"]
        self.on_uid_mismatch: str = merged["on_uid_mismatch"]
        self.on_uid_taken: str = merged["on_uid_taken"]
        self.chown_home: str = merged["chown_home"]
        self.skeleton: str = merged["skeleton"]
        self.shell: str = merged["shell"]
        # extra_groups the baked config (or the defaults) lists: only these may be privileged.
        self.baked_groups: tuple[str, ...] = tuple(schema.defaults()["user"]["extra_groups"])

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> AccountPolicy:
        return cls(settings)


# -- validation ---------------------------------------------------------------------------


def check_path_segment(name: str) -> None:
    """A name that cannot be one directory name is an attack or a broken hub: never use it."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise NbinitError(
            f"JUPYTERHUB_USER={_show(name)} is not a valid account name ({NAME_RE.pattern})",
            "the hub must send a plain user name: normalise names in the authenticator "
            "(Authenticator.normalize_username / username_map)",
        )


def validate_name(name: str, policy: AccountPolicy) -> None:
    """POSIX-portable, at most 32 characters, and not one of the image's system accounts."""
    check_path_segment(name)
    if not NAME_RE.fullmatch(name):  # match() would accept a trailing newline
        raise NbinitError(
            f"JUPYTERHUB_USER={_show(name)} is not a valid account name ({NAME_RE.pattern})",
            "map hub names to lower-case POSIX names in the authenticator "
            "(Authenticator.normalize_username / username_map), or remove the marker",
        )
    entry = lookup_user(name)
    if entry is not None and (
        entry.pw_uid == 0 or not policy.uid_min <= entry.pw_uid <= policy.uid_max
    ):
        raise NbinitError(
            f"{name} is a system account of this image (uid {entry.pw_uid}), never a user's own",
            f"remove the marker {user_path(policy.marker, name)}; hub users must not be "
            "named like system accounts",
        )


def parse_id(env: dict[str, str], variable: str, policy: AccountPolicy) -> int:
    """NB_UID or NB_GID as a plain decimal integer inside the configured range."""
    raw = env.get(variable, "")
    if not re.fullmatch(r"[0-9]{1,10}", raw):
        raise NbinitError(f"{variable}={_show(raw)} is not an integer", HUB_SETTING)
    value = int(raw, 10)
    if value in FORBIDDEN_IDS or value > MAX_ID:
        raise NbinitError(
            f"{variable}={value} is never allowed (0, 65534, 65535, 4294967295 and >= 2^31 are "
            "reserved)",
            f"give the user an id inside user.uid_min..user.uid_max "
            f"({policy.uid_min}..{policy.uid_max})",
        )
    if not policy.uid_min <= value <= policy.uid_max:
        raise NbinitError(
            f"{variable}={value} is outside user.uid_min..user.uid_max "
            f"({policy.uid_min}..{policy.uid_max})",
            "fix the uid annotation of the user's namespace, or widen user.uid_min / "
            "user.uid_max in the admin config",
        )
    return value


def read_ids(env: dict[str, str], name: str, policy: AccountPolicy) -> tuple[int, int, bool]:
    """(uid, gid, gid_defaulted): NB_GID defaults to NB_UID, as a user private group."""
    if not env.get("NB_UID"):
        raise NbinitError(
            f"NB_UID is not set, but the marker {user_path(policy.marker, name)} asks for "
            f"{name}'s own account",
            HUB_SETTING,
        )
    uid = parse_id(env, "NB_UID", policy)
    if not env.get("NB_GID"):
        return uid, uid, True
    return uid, parse_id(env, "NB_GID", policy), False


def check_server_identity(
    identity: Optional[Identity], policy: AccountPolicy, default_user: str
) -> None:
    """Whatever any config says, the server never runs as root or outside uid_min..uid_max."""
    if identity is None:
        raise NbinitError(
            f"the default user {default_user} (user.default_user) does not exist in this image "
            "or is root, and the server never runs as root",
            "create the user in the image (docker-stacks: jovyan, uid 1000), or set "
            "user.default_user in the baked /etc/nbinit/config.yaml",
        )
    if identity.uid == 0 or identity.gid == 0:
        raise NbinitError(
            f"{identity.name} has uid {identity.uid} gid {identity.gid}: the server never runs "
            "as root",
            "give the account its own uid and gid in the image",
        )
    if not policy.uid_min <= identity.uid <= policy.uid_max:
        raise NbinitError(
            f"{identity.name} has uid {identity.uid}, outside user.uid_min..user.uid_max "
            f"({policy.uid_min}..{policy.uid_max}): the server never runs as a system account",
            "run the server as an account inside that range (user.default_user, or the hub "
            "user's own), or widen the range in the baked /etc/nbinit/config.yaml",
        )


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
            f"home {_show(home)} (user.home) is {why}: a home is never / or a system directory",
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


# -- the marker ---------------------------------------------------------------------------

MARKER_PRESENT = "present"
MARKER_ABSENT = "absent"


def user_path(template: str, name: str) -> str:
    """A path template of the user section (marker, home) with {user} filled in."""
    return template.replace("{user}", name)


def find_marker(template: str, name: str, timeout: float) -> tuple[str, str]:
    """(state, detail) of the marker; every component from the user's part down is lstat'ed.

    The user controls /s/<user>: a symlink anywhere there is refused, never followed. The
    check runs in a child process (nbinit.markerwalk) because a hung NFS stat blocks in
    D-state, where no signal reaches it; a timeout counts as absent.
    """
    from nbinit import runtime

    path = user_path(template, name)
    # Trusted: the admin's directories above the one the user's name makes (/s).
    prefix = os.path.dirname(template.split("{user}", 1)[0] if "{user}" in template else path)
    try:
        result = privilege.run_as_user(
            None,
            [*runtime.module_command("nbinit.markerwalk"), path, prefix],
            env=privilege.clean_environment(None, {}),
            timeout=timeout,
            cwd="/",
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"checking {path} took longer than {timeout:.1f}s (a hung share?)"
    words = result.stdout.decode("utf-8", "replace").split(maxsplit=2)
    state = words[0] if words else "error"
    where = words[1] if len(words) > 1 else path
    if state in (MARKER_PRESENT, MARKER_ABSENT):
        return state, where
    if state == "symlink":
        return state, f"{where} is a symlink"
    if state == "notdir":
        return state, f"{where} is not a directory"
    return state, f"cannot check {where}: {words[2] if len(words) > 2 else 'unknown error'}"


# -- the account --------------------------------------------------------------------------


def lookup_user(name: str) -> Optional[pwd.struct_passwd]:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def lookup_uid(uid: int) -> Optional[pwd.struct_passwd]:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def lookup_group(name: str) -> Optional[grp.struct_group]:
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def lookup_gid(gid: int) -> Optional[grp.struct_group]:
    try:
        return grp.getgrgid(gid)
    except KeyError:
        return None


def groupadd_argv(name: str, gid: int) -> list[str]:
    return ["groupadd", "-g", str(gid), "--", name]


def useradd_argv(
    name: str, uid: int, gid: int, home: str, shell: str, groups: list[str], alias: bool
) -> list[str]:
    """No home creation (nbinit copies the skeleton itself), no lastlog bloat (#923)."""
    argv = ["useradd", "--no-log-init", "-M", "-d", home, "-s", shell, "-u", str(uid)]
    argv += ["-g", str(gid)]
    if groups:
        argv += ["-G", ",".join(groups)]
    if alias:
        argv.append("-o")  # only when user.on_uid_taken is alias: a second name for the uid
    return [*argv, "--", name]


def _run_tool(argv: list[str], timeout: float) -> None:
    try:
        result = privilege.run_as_user(
            None, argv, env=privilege.clean_environment(None, dict(os.environ)), timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise NbinitError(
            f"{argv[0]} did not finish within {timeout:.1f}s",
            "check that /etc is writable and not locked (a stale /etc/passwd.lock)",
        ) from None
    except OSError as exc:
        raise NbinitError(
            f"cannot run {argv[0]}: {exc.strerror}", "install the passwd package in the image"
        ) from None
    if result.returncode != 0:
        said = result.stderr.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
        raise NbinitError(
            f"{argv[0]} failed (exit {result.returncode}): {said}",
            "/etc/passwd and /etc/group must be writable by root in the container",
        )


def ensure_group(name: str, gid: int, policy: AccountPolicy, log: Log, timeout: float) -> str:
    """The group for gid: reuse the one that has it, else create `user.group` (default: name)."""
    existing = lookup_gid(gid)
    if existing is not None:
        log.info(f"group {existing.gr_name} (gid {gid}) exists: used as {name}'s group")
        return existing.gr_name
    group = policy.group or name
    taken = lookup_group(group)
    if taken is not None:
        raise NbinitError(
            f"group name {group} exists with gid {taken.gr_gid}, not NB_GID={gid}",
            "set user.group to another name in the admin config, or fix NB_GID",
        )
    _run_tool(groupadd_argv(group, gid), timeout)
    log.info(f"created group {group} (gid {gid})")
    return group


def ensure_account(
    name: str, uid: int, gid: int, policy: AccountPolicy, log: Log, timeout: float
) -> Identity:
    """The account `name` with uid:gid, created beside the image's users when absent.

    Collisions follow the policy: same name and ids -> nothing to do; same name, other ids
    -> user.on_uid_mismatch; uid held by another name -> user.on_uid_taken.
    """
    home = user_path(policy.home, name)
    existing = lookup_user(name)
    if existing is not None:
        if (existing.pw_uid, existing.pw_gid) == (uid, gid):
            log.info(f"account {name} (uid {uid}, gid {gid}) exists: nothing to do")
            return _identity(existing, home)
        if policy.on_uid_mismatch != "use_existing":
            raise NbinitError(
                f"account {name} exists with uid {existing.pw_uid} gid {existing.pw_gid}, "
                f"not NB_UID={uid} NB_GID={gid}",
                "fix the uid annotation, or set user.on_uid_mismatch: use_existing to keep "
                "the existing account",
            )
        log.info(
            f"account {name} exists with uid {existing.pw_uid} gid {existing.pw_gid}, not "
            f"{uid}:{gid}: using it as it is (user.on_uid_mismatch: use_existing)"
        )
        return _identity(existing, home)

    owner = lookup_uid(uid)
    alias = False
    if owner is not None:
        if policy.on_uid_taken != "alias":
            raise NbinitError(
                f"uid {uid} already belongs to {owner.pw_name}",
                f"give {name} another uid, or set user.on_uid_taken: alias to make {name} a "
                f"second name for uid {uid}",
            )
        alias = True
        log.info(
            f"uid {uid} belongs to {owner.pw_name}: {name} becomes a second name for it "
            "(user.on_uid_taken: alias)"
        )

    group = ensure_group(name, gid, policy, log, timeout)
    extra, refused = [], []
    for extra_group in policy.extra_groups:
        entry = lookup_group(extra_group)
        if entry is None:
            log.warning(f"group {extra_group} (user.extra_groups) does not exist: not added")
        elif entry.gr_gid == 0 or (
            is_privileged_group(entry, policy) and extra_group not in policy.baked_groups
        ):
            refused.append(f"{extra_group} (gid {entry.gr_gid})")
        else:
            extra.append(extra_group)
    if refused:
        log.warning(
            f"user.extra_groups: {', '.join(refused)} not added: a system group (below "
            f"user.uid_min {policy.uid_min}) is granted only when the baked "
            "/etc/nbinit/config.yaml lists it"
        )
    _run_tool(useradd_argv(name, uid, gid, home, policy.shell, extra, alias), timeout)
    created = lookup_user(name)
    if created is None or (created.pw_uid, created.pw_gid, created.pw_dir) != (uid, gid, home):
        raise NbinitError(
            f"useradd did not create {name} as asked (uid {uid}, gid {gid}, home {home})",
            "check /etc/nsswitch.conf and /etc/login.defs in the image",
        )
    joined = f", groups {','.join(extra)}" if extra else ""
    log.info(f"created user {name} (uid {uid}, gid {gid} {group}{joined}, home {home})")
    return _identity(created, home)


def is_privileged_group(entry: grp.struct_group, policy: AccountPolicy) -> bool:
    """gid 0 (never granted), or a system group (shadow, disk, sudo...) other than `users`."""
    return entry.gr_gid == 0 or (entry.gr_gid < policy.uid_min and entry.gr_name != "users")


def _identity(entry: pwd.struct_passwd, home: str) -> Identity:
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, home, entry.pw_shell or "/bin/bash")


# -- the home -----------------------------------------------------------------------------


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
            f"home {home} is a symlink (to {_show(os.readlink(home))}), not a directory",
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
                changed, complete, linked = privilege.chown_tree(
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
    build: str, identity: Identity, policy: AccountPolicy, log: Log, time_left: Callable[[], float]
) -> str:
    """Copy the skeleton into build and hand it over; returns what the home was made from."""
    home = identity.home
    fd = _open_home(build)
    try:
        skeleton = policy.skeleton
        problem = skeleton_problem(skeleton) if skeleton else ""
        if skeleton and not problem:
            try:
                copied, complete = privilege.copy_tree(
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
    if not privilege.is_public_image_entry(info):
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


def _show(value: str) -> str:
    """A hub-supplied value in a log line: quoted, printable, short."""
    return repr(value[:64])
