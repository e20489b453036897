"""Step `user`: decide who the server runs as; create the user's own account when marked.

Without the marker the server runs as the image's default user (jovyan), created at start
as docker-stacks has it (uid 1000, group users 100, /home/jovyan) when the image lacks it.
With the marker, as root, the account `$JUPYTERHUB_USER` gets NB_UID/NB_GID beside jovyan,
and its home. Any invalid identity raises NbinitError, which the pipeline makes FATAL in
start mode. The step is named for what the status reports (who the server runs as); the
work is nbinit.accounts (names, groups, the account) and nbinit.home (the home).
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any, Optional

from nbinit import accounts
from nbinit.context import MUST_RUN_FLOOR, Context, Identity, StepResult, degraded, ok, skipped

MARKER_TIMEOUT = 5.0
# The default user as docker-stacks images have it, for images that lack it (NGC, plain).
DEFAULT_UID = 1000
DEFAULT_GID = 100
DEFAULT_GROUP = "users"
DEFAULT_HOME = "/home/{user}"
TOOL_TIMEOUT = 10.0
# docker-stacks' start.sh reads these when it starts as root; handed over from its
# start-notebook.d hook, nbinit runs before it would, so nbinit answers for them.
START_SH_TRUE = ("1", "yes")
ROOT_SETTING = (
    "start the container as root (z2jh singleuser.uid: 0; KubeSpawner uid=0 / "
    "securityContext runAsUser: 0) so nbinit can create the account and then drop to NB_UID"
)


def current_identity(default_user: str) -> Optional[Identity]:
    """The image's default user (jovyan) as root; ourselves when not root; None: stay as is."""
    uid = os.geteuid()
    # Not root: our own passwd line; none for an arbitrary OpenShift uid (keep the pod's HOME).
    entry = accounts.lookup_user(default_user) if uid == 0 else accounts.lookup_uid(uid)
    if entry is None or entry.pw_uid == 0:
        return None
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def run(ctx: Context) -> StepResult:
    settings = ctx.section("user")
    policy = accounts.AccountPolicy.from_settings(settings)
    result = _decide(ctx, settings, policy)
    if ctx.mode == "start" and ctx.is_root:
        # Whatever any config said: never root, never a system account (FATAL, with the fix).
        accounts.check_server_identity(ctx.user, policy, settings["default_user"])
    return result


def _decide(ctx: Context, settings: dict[str, Any], policy: accounts.AccountPolicy) -> StepResult:
    ctx.user = current_identity(settings["default_user"])
    name = ctx.env.get("JUPYTERHUB_USER", "")
    if not name:
        return _as_default(ctx, settings, policy, "JUPYTERHUB_USER is not set", "user.marker")
    accounts.check_path_segment(name)
    marker = accounts.user_path(policy.marker, name)
    state, detail = accounts.find_marker(policy.marker, name, _budget(ctx, MARKER_TIMEOUT))
    if state == accounts.MARKER_ABSENT:
        return _as_default(ctx, settings, policy, f"no marker {marker}", marker)
    if state != accounts.MARKER_PRESENT:
        # Fail closed: a marker we cannot trust selects nothing; the server still starts.
        _ensure_default(ctx, settings, policy)
        ctx.log.warning(f"marker ignored: {detail}; running as {_who(ctx.user)}")
        return degraded("user", f"marker ignored: {detail}")
    if ctx.mode != "start":
        return _existing_account(ctx, name, policy, _who(ctx.user))
    if not ctx.is_root:
        ctx.log.warning(
            f"running as uid {os.geteuid()}, not root: cannot create {name}'s own account "
            f"(marker {marker}); {ROOT_SETTING}"
        )
        return degraded("user", "not root: account not created")

    accounts.validate_name(name, policy)
    uid, gid, gid_defaulted = accounts.read_ids(ctx.env, name, policy)
    if gid_defaulted:
        ctx.log.info(f"NB_GID is not set: using NB_UID {uid} as the gid")
    # Before /etc changes: where the home goes, and whether root may hand it over.
    from nbinit import home  # only for an own account: a plain start never needs it

    home_path = accounts.user_path(policy.home, name)
    home.check_home_path(home_path)
    home.check_home(home_path)
    home.check_home_owner(home_path, uid, policy)
    # A system group must be listed by the image itself, whichever config lists it now.
    baked_groups = (ctx.baked.get("user") or {}).get("extra_groups")
    policy.baked_groups = tuple(baked_groups) if baked_groups is not None else ("users",)
    identity = accounts.ensure_account(name, uid, gid, policy, ctx.log, _budget(ctx, TOOL_TIMEOUT))
    floor = time.monotonic() + MUST_RUN_FLOOR
    home.ensure_home(
        identity, policy, ctx.log, lambda: max(ctx.deadline.remaining(), floor - time.monotonic())
    )
    ctx.user = identity
    apply_start_sh_options(ctx, policy, marked=True, marker=marker)
    details = {"uid": identity.uid, "gid": identity.gid, "home": identity.home}
    return ok("user", f"running as {name} (uid {identity.uid})", **details)


def apply_start_sh_options(
    ctx: Context, policy: accounts.AccountPolicy, marked: bool, marker: str
) -> None:
    """start.sh's own options, as root in start mode: done for the user the server runs as
    where they still make sense (NB_UMASK, CHOWN_HOME), else one WARNING naming the nbinit
    setting that replaces them (GRANT_SUDO, CHOWN_EXTRA, NB_UID without a marker)."""
    if not ctx.is_root or ctx.mode != "start":
        return  # not root: start.sh itself read them (and warned) before handing over
    env = ctx.env
    umask = env.get("NB_UMASK", "")
    if umask:
        if 3 <= len(umask) <= 4 and all(digit in "01234567" for digit in umask):
            ctx.umask = int(umask, 8)
            ctx.log.info(f"NB_UMASK: the server starts with umask {umask}")
        else:
            ctx.log.warning(
                f"NB_UMASK={umask[:16]!r} is not an octal umask: ignored; "
                "set it like NB_UMASK=022 or NB_UMASK=0002"
            )
    if env.get("GRANT_SUDO") in START_SH_TRUE:
        ctx.log.warning(
            "GRANT_SUDO is not honoured: nbinit never lets an environment variable give the "
            "server root; bake it into the image instead: a sudoers rule for a group in "
            "/etc/sudoers.d and that group in user.extra_groups of /etc/nbinit/config.yaml"
        )
    if env.get("CHOWN_EXTRA"):
        ctx.log.warning(
            "CHOWN_EXTRA is not honoured: nbinit changes owners only in the user's home; "
            "chown other paths in a root hook baked into the image (hooks.dir)"
        )
    nb_uid = env.get("NB_UID", "")
    if not marked and ctx.user is not None and nb_uid and nb_uid != str(ctx.user.uid):
        ctx.log.warning(
            f"NB_UID={nb_uid[:16]!r} is not honoured without a marker: the server runs "
            f"as {ctx.user.name} (uid {ctx.user.uid}), whose account nbinit never changes; "
            f"create the marker {marker} (user.marker) to give the user an own account "
            "with NB_UID"
        )
    if env.get("CHOWN_HOME") in START_SH_TRUE and ctx.user is not None:
        options = env.get("CHOWN_HOME_OPTS", "").split()
        recursive = "-R" in options or "--recursive" in options
        if marked:  # ensure_home has just applied user.chown_home to the own account's home
            if recursive and policy.chown_home != "recursive":
                ctx.log.warning(
                    "CHOWN_HOME_OPTS=-R is not honoured: the own account's home is changed as "
                    f"user.chown_home says (now {policy.chown_home}); set user.chown_home: "
                    "recursive"
                )
            return
        from nbinit import home

        home_policy = accounts.AccountPolicy.from_settings(
            {"chown_home": "recursive" if recursive else "top", "skeleton": policy.skeleton}
        )
        floor = time.monotonic() + MUST_RUN_FLOOR
        home.ensure_home(
            ctx.user,
            home_policy,
            ctx.log,
            lambda: max(ctx.deadline.remaining(), floor - time.monotonic()),
        )


def _budget(ctx: Context, seconds: float) -> float:
    return ctx.deadline.cap(seconds, floor=MUST_RUN_FLOOR)


def _as_default(
    ctx: Context, settings: dict[str, Any], policy: accounts.AccountPolicy, why: str, marker: str
) -> StepResult:
    """The server runs as the default user: create it first when the image lacks it."""
    created = _ensure_default(ctx, settings, policy)
    apply_start_sh_options(ctx, policy, marked=False, marker=marker)
    if not created:
        return skipped("user", f"{why}: running as {_who(ctx.user)}")
    assert ctx.user is not None
    details = {"uid": ctx.user.uid, "gid": ctx.user.gid, "home": ctx.user.home}
    return ok("user", f"{why}: running as {_who(ctx.user)}, created at start", **details)


def _who(user: Optional[Identity]) -> str:
    return f"{user.name} (uid {user.uid})" if user else f"uid {os.geteuid()}"


def _ensure_default(ctx: Context, settings: dict[str, Any], policy: accounts.AccountPolicy) -> bool:
    """Create user.default_user as docker-stacks has jovyan, when absent; True if created.

    Only as root at start, by the marker user's rules (the same tools, checks and
    idempotence: the next start finds the account and its home and changes nothing), except
    that a uid 1000 held by another account is shared, not refused.
    """
    name = settings["default_user"]
    if ctx.user is not None or not ctx.is_root or ctx.mode != "start":
        return False
    if accounts.lookup_user(name) is not None:
        return False  # there, but uid 0: check_server_identity makes that the FATAL
    ctx.log.info(
        f"the default user {name} (user.default_user) is not in this image: creating it "
        f"(uid {DEFAULT_UID}, group {DEFAULT_GROUP} {DEFAULT_GID})"
    )
    own = copy.copy(policy)
    own.home, own.group, own.extra_groups = DEFAULT_HOME, DEFAULT_GROUP, ()
    # Ubuntu 24.04 images (NGC's among them) have `ubuntu` at uid 1000. The server runs as
    # uid 1000 either way (z2jh's default, the home volume's owner): jovyan becomes a second
    # name for it rather than a FATAL. A marker user's uid is never aliased by default.
    own.on_uid_taken = "alias"
    from nbinit import home

    home.check_home(accounts.user_path(own.home, name))  # before /etc changes
    identity = accounts.ensure_account(
        name, DEFAULT_UID, DEFAULT_GID, own, ctx.log, _budget(ctx, TOOL_TIMEOUT)
    )
    floor = time.monotonic() + MUST_RUN_FLOOR
    home.ensure_home(
        identity, own, ctx.log, lambda: max(ctx.deadline.remaining(), floor - time.monotonic())
    )
    ctx.user = identity
    return True


def _existing_account(
    ctx: Context, name: str, policy: accounts.AccountPolicy, who: str
) -> StepResult:
    """poststart and other modes: use the account `start` made; never create one here."""
    entry = accounts.lookup_user(name)
    if entry is None:
        return skipped("user", f"account {name} is not created yet: running as {who}")
    home = accounts.user_path(policy.home, name)
    ctx.user = Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, home, entry.pw_shell)
    return ok("user", f"running as {name} (uid {entry.pw_uid})")
