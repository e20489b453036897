"""postStart mode: the user-level steps in a child process, stopped at a hard deadline."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import time
from types import FrameType
from typing import Optional

from nbinit import privilege, status
from nbinit.context import FAILED, Context
from nbinit.errors import EXIT_OK, Terminated
from nbinit.pipeline import (
    POSTSTART_STEPS,
    install_signal_handlers,
    run_step,
    run_steps,
    summary,
    traceback_text,
)

# postStart: the kubelet gives an exec hook no timeout; a hook that hangs leaves a pod nobody
# can delete (kubernetes#116032) and one that fails restarts the container. z2jh's
# singleuser.startTimeout (300 s) also covers scheduling and the image pull, so the hook
# stops itself well before it, whatever NBINIT_DEADLINE or the config says.
POSTSTART_HARD_LIMIT = 240.0
POSTSTART_GRACE = 5.0  # past the soft deadline: for the steps to notice it and write status
POSTSTART_KILL_WAIT = 2.0  # after SIGTERM, before SIGKILL


class _Stop(Exception):
    """SIGTERM or SIGINT reached the postStart supervisor."""


def poststart_limit(soft: float) -> float:
    """The hard deadline for a soft one: a little grace, never past POSTSTART_HARD_LIMIT."""
    return min(soft + POSTSTART_GRACE, POSTSTART_HARD_LIMIT)


def run(ctx: Context) -> int:
    """postStart mode: user-level steps in a child process, stopped at a hard deadline.

    This process only waits on a pipe (select, one thread), so nothing the steps do (a
    read blocked in a thread, a stuck syscall, a helper that ignores SIGTERM) can keep it
    from returning, and it returns 0 whatever happened: the server starts regardless.
    """
    try:
        return _supervise_poststart(ctx)
    except BaseException as exc:  # a failing postStart restarts the container: never fail
        with contextlib.suppress(Exception):
            ctx.log.error(f"poststart: {type(exc).__name__}: {exc}")
    return EXIT_OK


def _supervise_poststart(ctx: Context) -> int:
    def stop(signum: int, frame: Optional[FrameType]) -> None:
        raise _Stop()

    # SIGTERM and SIGINT stay blocked from before the fork until inside the try: one that
    # comes at any moment (a test or the kubelet signals as soon as the child exists) is
    # held, then raised where the supervision ends it, never by the default action.
    read_fd, write_fd = os.pipe()
    held = {signal.SIGTERM, signal.SIGINT}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    # What is imported so far stays out of every collection: the child's then copy no pages
    # for it (copy-on-write) and this process's exit walks none of it.
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the child never returns into the caller
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
            os.close(read_fd)
            _poststart_steps(ctx, write_fd)
        finally:
            os._exit(EXIT_OK)
    limit = poststart_limit(ctx.deadline.seconds)
    reason = ""
    buffer = b""
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        os.close(write_fd)
        while True:
            remaining = ctx.deadline.start + limit - time.monotonic()
            if remaining <= 0:
                reason = f"the hard deadline of {limit:g}s passed"
                break
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(read_fd, 4096)
            if not chunk:  # the child closed its end: it is done
                _reap(pid, POSTSTART_KILL_WAIT)
                return EXIT_OK
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:  # the child's deadline once the config step has set it
                with contextlib.suppress(ValueError):
                    limit = poststart_limit(float(line))
    except _Stop:
        reason = "terminated by signal"
    finally:
        os.close(read_fd)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # its handler stops helpers and writes the status
    if not _reap(pid, POSTSTART_KILL_WAIT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    message = (
        f"poststart: {reason} after {ctx.deadline.elapsed():.1f}s: stopped; the server goes on "
        "without what was left (see `nbinit status`, or run `nbinit repos sync`)"
    )
    ctx.log.error(message)
    _mark_stopped(ctx, message)
    return EXIT_OK


def _poststart_steps(ctx: Context, report_fd: int) -> None:
    """In the child: config, the user (never created here), repos, gpu; then the status."""
    install_signal_handlers()
    try:
        run_step(ctx, "config")
        ctx.deadline.seconds = min(ctx.deadline.seconds, POSTSTART_HARD_LIMIT - POSTSTART_GRACE)
        with contextlib.suppress(OSError):
            os.write(report_fd, f"{ctx.deadline.seconds}\n".encode())
        run_steps(ctx, POSTSTART_STEPS[1:])
        if ctx.hand_overs:
            # No server to hand over to, and a child left behind would hold the hook's
            # output open: stop it. The user can finish from a terminal.
            ctx.log.warning(
                f"poststart: repo sync unfinished at the {ctx.deadline.seconds:g}s deadline "
                "was stopped: run `nbinit repos sync` in a terminal, or raise NBINIT_DEADLINE"
            )
            privilege.kill_children()
        ctx.log.info(summary(ctx))
    except Terminated:
        ctx.log.error("poststart: terminated by signal; helpers stopped")
    except Exception as exc:
        ctx.log.error(f"poststart: {type(exc).__name__}: {exc}; this is a bug in nbinit")
        ctx.log.debug(traceback_text())
    status.write_status(ctx, finished=True)


def _reap(pid: int, wait: float) -> bool:
    """Wait up to `wait` seconds for the child; True once it is reaped."""
    until = time.monotonic() + wait
    pause = 0.001  # a child that closed its pipe is exiting: look again soon, then less often
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done:
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(pause)
        pause = min(0.02, pause * 2)


def _mark_stopped(ctx: Context, message: str) -> None:
    """The child's status file, marked finished and failed with why (best effort)."""
    if not ctx.status_path:
        return
    try:
        with open(ctx.status_path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        data = status.build_status(ctx)
    data.update(finished=True, outcome=FAILED, updated=time.time())
    data["errors"] = [*data.get("errors", []), message]
    with contextlib.suppress(OSError):
        status.write_json_atomic(ctx.status_path, data)
