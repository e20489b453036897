"""Step `user`: decide who the server runs as; create the user's own account when marked."""

from __future__ import annotations

import os
import pwd
from typing import Optional

from nbinit.context import Context, Identity, StepResult, ok, skipped


def current_identity(default_user: str) -> Optional[Identity]:
    """The image's default user (jovyan) as root; ourselves when not root; None: stay as is."""
    entry = pwd.getpwuid(os.geteuid()) if os.geteuid() != 0 else _lookup(default_user)
    if entry is None or entry.pw_uid == 0:
        return None
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def run(ctx: Context) -> StepResult:
    settings = ctx.section("user")
    name = ctx.env.get("JUPYTERHUB_USER", "")
    marker = settings["marker"].format(user=name) if name else ""
    ctx.user = current_identity(settings["default_user"])
    who = ctx.user.name if ctx.user else "the current user"
    if not name:
        return skipped("user", f"JUPYTERHUB_USER is not set: running as {who}")
    if not os.path.lexists(marker):
        return skipped("user", f"no marker at {marker}: running as {who}")
    return ok("user", f"marker at {marker}: account creation arrives with issue 3")
