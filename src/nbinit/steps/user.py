"""Step `user`: decide who the server runs as; create the user's own account when marked.

Without the marker the server runs as the image's default user (jovyan). With it, as
root, the account `$JUPYTERHUB_USER` gets NB_UID/NB_GID beside jovyan, and its home. Any
invalid identity raises NbinitError, which the pipeline makes FATAL in start mode.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from nbinit import accounts
from nbinit.context import MUST_RUN_FLOOR, Context, Identity, StepResult, degraded, ok, skipped

MARKER_TIMEOUT = 5.0
TOOL_TIMEOUT = 10.0
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


def must_run(ctx: Context) -> bool:
    """Always, even past the deadline: without it the server would start as root."""
    return True


def run(ctx: Context) -> StepResult:
    settings = ctx.section("user")
    policy = accounts.Policy.from_settings(settings)
    result = _decide(ctx, settings, policy)
    if ctx.mode == "start" and ctx.is_root:
        # Whatever any config said: never root, never a system account (FATAL, with the fix).
        accounts.check_server_identity(ctx.user, policy, settings["default_user"])
    return result


def _decide(ctx: Context, settings: dict[str, Any], policy: accounts.Policy) -> StepResult:
    default = current_identity(settings["default_user"])
    ctx.user = default
    who = f"{default.name} (uid {default.uid})" if default else f"uid {os.geteuid()}"
    name = ctx.env.get("JUPYTERHUB_USER", "")
    if not name:
        return skipped("user", f"JUPYTERHUB_USER is not set: running as {who}")
    accounts.check_path_segment(name)
    marker = accounts.marker_path(policy.marker, name)
    state, detail = accounts.find_marker(policy.marker, name, _budget(ctx, MARKER_TIMEOUT))
    if state == accounts.MARKER_ABSENT:
        return skipped("user", f"no marker {marker}: running as {who}")
    if state != accounts.MARKER_PRESENT:
        # Fail closed: a marker we cannot trust selects nothing; the server still starts.
        ctx.log.warning(f"marker ignored: {detail}; running as {who}")
        return degraded("user", f"marker ignored: {detail}")
    if ctx.mode != "start":
        return _existing_account(ctx, name, policy, who)
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
    home = accounts.marker_path(policy.home, name)
    accounts.check_home_path(home)
    accounts.check_home(home)
    accounts.check_home_owner(home, uid, policy)
    # A system group must be listed by the image itself, whichever config lists it now.
    baked_groups = (ctx.baked.get("user") or {}).get("extra_groups")
    policy.baked_groups = tuple(baked_groups) if baked_groups is not None else ("users",)
    warnings_before = len(ctx.log.warnings)
    identity = accounts.ensure_account(name, uid, gid, policy, ctx.log, _budget(ctx, TOOL_TIMEOUT))
    floor = time.monotonic() + MUST_RUN_FLOOR
    accounts.ensure_home(
        identity, policy, ctx.log, lambda: max(ctx.deadline.remaining(), floor - time.monotonic())
    )
    ctx.user = identity
    details = {"uid": identity.uid, "gid": identity.gid, "home": identity.home}
    if len(ctx.log.warnings) > warnings_before:
        return degraded("user", f"running as {name} with warnings", **details)
    return ok("user", f"running as {name} (uid {identity.uid})", **details)


def _budget(ctx: Context, seconds: float) -> float:
    return ctx.deadline.cap(seconds, floor=MUST_RUN_FLOOR)


def _existing_account(ctx: Context, name: str, policy: accounts.Policy, who: str) -> StepResult:
    """poststart and other modes: use the account `start` made; never create one here."""
    entry = accounts.lookup_user(name)
    if entry is None:
        return skipped("user", f"account {name} is not created yet: running as {who}")
    home = accounts.marker_path(policy.home, name)
    ctx.user = Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, home, entry.pw_shell)
    return ok("user", f"running as {name} (uid {entry.pw_uid})")
