"""The last step: choose the command, build the server's environment, drop root, exec."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
from typing import Any, Optional

from nbinit import privilege
from nbinit.context import Context
from nbinit.errors import NbinitError
from nbinit.log import Log

DEFAULT_COMMANDS = ("start-singleuser.sh", "start-singleuser.py", "jupyterhub-singleuser")


def cannot_exec(program: str, exc: OSError) -> NbinitError:
    """The one FATAL for a command that cannot be executed (missing, not executable)."""
    return NbinitError(f"cannot exec {program}: {exc.strerror}", "check the command and PATH")


def resolve_command(
    command: list[str], path: Optional[str], env: Optional[dict[str, str]] = None
) -> list[str]:
    """CMD as given, else the first of the default server commands on PATH.

    None on PATH but nbinit's singleuser runtimes in the image (`env` says where):
    `jupyterhub-singleuser`, for the launcher to stand in for at exec.
    """
    if command:
        return command
    for name in DEFAULT_COMMANDS:
        found = shutil.which(name, path=path)
        if found:
            return [found]
    if env is not None:
        from nbinit import singleuser

        if singleuser.list_runtimes(singleuser.runtime_dir(env)):
            return [singleuser.SINGLEUSER]
    raise NbinitError(
        "none of " + ", ".join(DEFAULT_COMMANDS) + " is on PATH",
        "install jupyterhub in the image (pip install jupyterhub) or pass the command after "
        "`--`; run `nbinit check` when building the image",
    )


def prepare_command(ctx: Context) -> dict[str, Any]:
    """Before the drop: make sure the user can exec the command; details for the status.

    An explicit command (z2jh's default `jupyterhub-singleuser`) is looked up on PATH as
    the user will look it up, so a missing one is nbinit's FATAL with its fix, not tini's
    `exec ... failed: No such file or directory` after a status that said ok. The
    single-user server falls back to nbinit's runtime when the image has none.
    """
    argv = ctx.command
    found = privilege.find_executable(argv[0], ctx.env.get("PATH"), ctx.user)
    from nbinit import singleuser

    if singleuser.is_singleuser_command(argv[0]):
        plan = singleuser.plan(ctx, argv, found)
        if plan.message:
            ctx.log.info(plan.message)
        ctx.command = plan.command
        return {"singleuser": plan.details}
    if found is None:
        who = ctx.user.name if ctx.user else f"uid {os.geteuid()}"
        raise NbinitError(
            f"the command {argv[0]} is not an executable file on PATH for {who} "
            f"(PATH={ctx.env.get('PATH', os.defpath)})",
            "install it in the image or correct the command (z2jh singleuser.cmd); run "
            "`nbinit check` when building the image",
        )
    return {}


def find_tini(path: Optional[str]) -> Optional[str]:
    """tini on PATH, as Debian ships it or as the static build tini's releases offer."""
    return shutil.which("tini", path=path) or shutil.which("tini-static", path=path)


# Never forwarded: the kernel's synchronous faults, and the two nobody can catch.
_NOT_FORWARDED = {
    signal.SIGCHLD,
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGABRT,
    signal.SIGTRAP,
    signal.SIGSYS,
    signal.SIGTTIN,
    signal.SIGTTOU,
}


def run_minimal_init(argv: list[str], env: dict[str, str], cwd: Optional[str], log: Log) -> int:
    """PID 1 without tini: run argv as a child, forward signals, reap zombies; its exit code.

    The kernel drops default-action signals sent to PID 1, and orphans are re-parented to
    it, so a server exec'd as PID 1 would ignore SIGTERM and leave zombies. Signals are
    blocked before the fork and collected with sigtimedwait, the way tini does it.
    """
    caught = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, caught)
    child = os.fork()
    if child == 0:
        try:
            os.setpgid(0, 0)  # its own group: forwarded signals reach its children too
            if os.isatty(0):
                with contextlib.suppress(OSError):
                    os.tcsetpgrp(0, os.getpgrp())
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            privilege.exec_command(argv, env, cwd)
        except OSError as exc:
            log.fatal(str(cannot_exec(argv[0], exc)))
            os._exit(127 if exc.errno == errno.ENOENT else 126)
        os._exit(127)
    with contextlib.suppress(OSError):
        os.setpgid(child, child)  # also from here: no race with an early signal
    return supervise(child, caught - _NOT_FORWARDED)


def supervise(child: int, forwarded: set[signal.Signals]) -> int:
    """Forward signals to child's process group and reap every zombie until child exits."""
    waited = forwarded | {signal.SIGCHLD}
    while True:
        info = signal.sigtimedwait(waited, 1.0)
        if info is not None and info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, info.si_signo)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0
            if pid == 0:
                break
            if pid == child:
                code = os.waitstatus_to_exitcode(status)
                return 128 - code if code < 0 else code


def server_environment(ctx: Context) -> dict[str, str]:
    """The pod's environment for the server, less every secret nbinit knows of."""
    env = privilege.user_environment(ctx.user, ctx.env, ctx.secret_names())
    env.update(ctx.server_env)
    return env


def exec_server(ctx: Context) -> None:
    """Never returns: drops root in-process, then becomes the server (or its init).

    nbinit not PID 1: an init is already there (tini -g -- nbinit), exec CMD. PID 1 with
    tini: exec `tini -g -- CMD`. PID 1 without tini: stay as a minimal init.
    """
    if ctx.user is None and os.geteuid() == 0:
        # The user step decides who the server runs as, or fails the start: never root.
        raise NbinitError(
            "refusing to run the server as root: no user was decided",
            "report this as a bug in nbinit",
        )
    env = server_environment(ctx)
    cwd = ctx.user.home if ctx.user else None
    pid1 = os.getpid() == 1
    tini = find_tini(env.get("PATH")) if pid1 else None
    if ctx.umask is not None:
        os.umask(ctx.umask)
    if ctx.user is not None:
        privilege.drop_privileges(ctx.user)
    if not pid1:
        privilege.exec_command(ctx.command, env, cwd=cwd)
    elif tini:
        privilege.exec_command([tini, "-g", "--", *ctx.command], env, cwd=cwd)
    else:
        ctx.log.info(
            "no tini on PATH: nbinit stays PID 1 as a minimal init (forwards signals to the "
            "server's process group, reaps zombies); install tini in the image to use it instead"
        )
        os._exit(run_minimal_init(ctx.command, env, cwd, ctx.log))
