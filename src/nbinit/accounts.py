"""The user's own account: validate the hub's identity, find the marker, create group and user.

Debian's useradd accepts `x/../../etc`, `..` and `-u 0 -o`, so nothing reaches it before
the rules here pass. The home is `nbinit.home`'s; everything done as root on a path goes
through `privilege` (no-follow opens, fd-based chown). This module decides what to do and
says so, one line per action.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
from typing import Any, Optional

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
            f"JUPYTERHUB_USER={quoted(name)} is not a valid account name ({NAME_RE.pattern})",
            "the hub must send a plain user name: normalise names in the authenticator "
            "(Authenticator.normalize_username / username_map)",
        )


def validate_name(name: str, policy: AccountPolicy) -> None:
    """POSIX-portable, at most 32 characters, and not one of the image's system accounts."""
    check_path_segment(name)
    if not NAME_RE.fullmatch(name):  # match() would accept a trailing newline
        raise NbinitError(
            f"JUPYTERHUB_USER={quoted(name)} is not a valid account name ({NAME_RE.pattern})",
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
        raise NbinitError(f"{variable}={quoted(raw)} is not an integer", HUB_SETTING)
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


def quoted(value: str) -> str:
    """A hub-supplied value in a log line: quoted, printable, short."""
    return repr(value[:64])
