"""The last step: choose the command, build the server's environment, drop root, exec."""

from __future__ import annotations

import os
import shutil
from typing import Optional

from nbinit import privilege
from nbinit.context import Context
from nbinit.errors import NbinitError

DEFAULT_COMMANDS = ("start-singleuser.sh", "start-singleuser.py", "jupyterhub-singleuser")


def resolve_command(command: list[str], path: Optional[str]) -> list[str]:
    """CMD as given, else the first of the default server commands on PATH."""
    if command:
        return command
    for name in DEFAULT_COMMANDS:
        found = shutil.which(name, path=path)
        if found:
            return [found]
    raise NbinitError(
        "none of " + ", ".join(DEFAULT_COMMANDS) + " is on PATH",
        "install jupyterhub in the image (pip install jupyterhub) or pass the command after "
        "`--`; run `nbinit check` when building the image",
    )


def wrap_with_init(argv: list[str], path: Optional[str]) -> list[str]:
    """As PID 1, put tini in front (signals reach the server's group, zombies are reaped)."""
    if os.getpid() != 1:
        return argv  # an init (tini, dumb-init, the kubelet's pause) is already there
    tini = shutil.which("tini", path=path)
    return [tini, "-g", "--", *argv] if tini else argv


def server_environment(ctx: Context) -> dict[str, str]:
    secret = tuple((ctx.config.get("user") or {}).get("secret_env", ()))
    env = privilege.user_environment(ctx.user, ctx.env, secret)
    env.update(ctx.server_env)
    return env


def exec_server(ctx: Context) -> None:
    """Never returns: becomes the server, as the user."""
    env = server_environment(ctx)
    argv = wrap_with_init(ctx.command, env.get("PATH"))
    if ctx.user is not None:
        privilege.drop_privileges(ctx.user)
    privilege.exec_command(argv, env, cwd=ctx.user.home if ctx.user else None)
