"""The pipeline: config -> user -> repos -> gpu -> hooks -> exec, over one context."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from types import FrameType
from typing import Any, Callable, Optional

from nbinit import privilege, status
from nbinit.context import FAILED, Context, StepResult, failed, skipped
from nbinit.errors import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_TERMINATED,
    NbinitError,
    Terminated,
)

Step = Callable[[Context], StepResult]

# When the config never loaded (the FATAL came first): the schema's default.
DEFAULT_EXPLAIN_MINUTES = 15.0


def _traceback() -> str:
    import traceback  # only after a bug: a clean start should not pay for the import

    return traceback.format_exc()


# A failure in a critical step stops the start: without a valid identity the server must
# never run (and never as root). Every other step degrades and the server still starts.
CRITICAL = ("user",)


def _load(name: str) -> Step:
    """Import a step only when it runs: `nbinit --version` imports none of them."""
    import importlib

    module = importlib.import_module(f"nbinit.steps.{name}")
    step: Step = module.run
    return step


START_STEPS = ("config", "user", "repos", "gpu", "hooks")
POSTSTART_STEPS = ("config", "user", "repos", "gpu")


def run_step(ctx: Context, name: str, step: Optional[Step] = None) -> StepResult:
    """Run one step, time it, and turn its problems into a result and one log line."""
    ctx.log.step = name
    started_wall, started = time.time(), time.monotonic()
    warnings_before, errors_before = len(ctx.log.warnings), len(ctx.log.errors)
    critical = name in CRITICAL and ctx.mode == "start"
    try:
        result = (step or _load(name))(ctx)
    except Terminated:
        raise
    except NbinitError as exc:
        (ctx.log.fatal if critical else ctx.log.error)(str(exc))
        if critical:
            ctx.failure = exc
        result = failed(name, str(exc), critical=critical)
    except Exception as exc:  # a bug in nbinit: say where, keep the traceback for debug
        crash = NbinitError(
            f"step {name} crashed ({type(exc).__name__}: {exc})",
            "this is a bug in nbinit, set NBINIT_DEBUG=1 for the traceback",
        )
        ctx.log.error(f"{crash.problem}; {crash.fix}")
        ctx.log.debug(_traceback())
        if critical:
            ctx.failure = crash
        result = failed(name, f"internal error: {type(exc).__name__}", critical=critical)
    finally:
        ctx.log.step = None
    result.name = name
    result.started = started_wall
    result.finished = time.time()
    result.duration = time.monotonic() - started
    result.warnings = ctx.log.warnings[warnings_before:]
    result.errors = ctx.log.errors[errors_before:]
    ctx.results.append(result)
    status.write_status(ctx)
    return result


def run_steps(ctx: Context, names: tuple[str, ...]) -> bool:
    """Run the steps in order; False when a critical step failed."""
    for name in names:
        if ctx.deadline.expired() and name != "config" and not _must_run(ctx, name):
            ctx.log.warning(f"{name}: skipped, the {ctx.deadline.seconds:g}s deadline has passed")
            ctx.results.append(skipped(name, "deadline passed"))
            continue
        result = run_step(ctx, name)
        if result.outcome == FAILED and result.details.get("critical"):
            return False
    return True


def _must_run(ctx: Context, name: str) -> bool:
    """A step that must run even past the deadline says so with `must_run(ctx)`.

    Skipping the user step would start the server as root; skipping a required GPU check
    would start a server without the GPU it was promised. Such steps keep a floor of time.
    """
    import importlib

    check = getattr(importlib.import_module(f"nbinit.steps.{name}"), "must_run", None)
    return bool(check and check(ctx))


def summary(ctx: Context) -> str:
    parts = [f"{r.name} {r.outcome} {r.duration:.3f}s" for r in ctx.results]
    return f"ready in {ctx.deadline.elapsed():.3f}s: " + ", ".join(parts)


def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
    privilege.kill_children()
    raise Terminated()


def install_signal_handlers() -> None:
    """SIGTERM or SIGINT before exec: stop helpers, never start the server, exit 143."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def restore_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(ctx: Context) -> int:
    """Entrypoint mode: every step, then exec the server as the user. Returns only on failure."""
    from nbinit import launch

    install_signal_handlers()
    try:
        if not run_steps(ctx, START_STEPS):
            return end_with_fatal(ctx)
        started = time.monotonic()
        exec_result = StepResult("exec", reason=" ".join(ctx.command))
        exec_result.started = time.time()
        ctx.results.append(exec_result)
        try:
            exec_result.details.update(launch.prepare_command(ctx))
        except NbinitError as exc:
            exec_result.outcome, exec_result.reason = FAILED, str(exc)
            exec_result.duration = time.monotonic() - started
            raise
        for job in ctx.background:
            job()
        report_problems(ctx)
        exec_result.duration = time.monotonic() - started
        who = f"{ctx.user.name} (uid {ctx.user.uid})" if ctx.user else "the current user"
        ctx.log.info(f"{summary(ctx)}; exec {' '.join(ctx.command)} as {who}")
        ctx.serving = serving(ctx, "server")
        status.write_status(ctx, finished=True)
        restore_signal_handlers()
        launch.exec_server(ctx)
    except Terminated:
        ctx.log.error("terminated by signal before the server started")
        status.write_status(ctx, finished=True)
        return EXIT_TERMINATED
    except NbinitError as exc:
        ctx.failure = exc
    except OSError as exc:
        ctx.failure = NbinitError(
            f"cannot exec {ctx.command[0]}: {exc.strerror}", "check the command and PATH"
        )
    if ctx.failure is None:  # exec_server returns only in tests that replace it
        return EXIT_FATAL
    ctx.log.fatal(str(ctx.failure))
    ctx.serving = None
    return end_with_fatal(ctx)


def report_problems(ctx: Context) -> None:
    """Write (or remove) the problems file in the home, as the user.

    Costs nothing on a clean start with no old file: no process is started then.
    """
    name = ctx.config.get("problems_file") or "off"
    if name == "off" or ctx.user is None or not os.path.isdir(ctx.user.home):
        return
    found = [*ctx.log.warnings, *ctx.log.errors]
    path = os.path.join(ctx.user.home, name)
    if not found and not os.path.lexists(path):
        return
    pending: list[str] = []
    for step in ctx.results:
        if step.name == "repos":
            pending = list(step.details.get("background") or [])
    request = {"home": ctx.user.home, "name": name, "run": ctx.run_id}
    request.update(start=found, pending=pending)
    try:
        if privilege.switches_user(ctx.user):
            from nbinit import runtime

            written = privilege.run_as_user(
                ctx.user,
                runtime.module_command("nbinit.problems"),
                env=privilege.clean_environment(ctx.user, ctx.env),
                timeout=max(2.0, ctx.deadline.cap(5.0)),
                cwd="/",
                stdin_data=json.dumps(request).encode(),
            )
            why = written.stderr.decode("utf-8", "replace").strip()[-200:]
            if written.returncode != 0:
                raise OSError(why or f"exit {written.returncode}")
        else:
            from nbinit import problems

            problems.update(ctx.user.home, name, ctx.run_id, start=found, pending=pending)
    except (OSError, subprocess.TimeoutExpired) as exc:
        # INFO: the home's own problem (read-only, root-squashed) was already a WARNING.
        ctx.log.info(f"problems file {path} not written: {exc}")


def serving(ctx: Context, what: str) -> dict[str, Any]:
    """What will answer at JUPYTERHUB_SERVICE_URL, for `nbinit ready` to probe."""
    return {"what": what, "pid": os.getpid(), "url": ctx.env.get("JUPYTERHUB_SERVICE_URL", "")}


def end_with_fatal(ctx: Context) -> int:
    """A FATAL ended the start: tell Kubernetes and, under a hub, the user's browser.

    on_fatal explain: serve the failure page as nobody, then exit 0 (the pod completes, the
    user starts again from the hub); exit: exit 1 as before.
    """
    from nbinit import failpage

    exc = ctx.failure or NbinitError(ctx.log.errors[-1] if ctx.log.errors else "start failed")
    failure = failpage.Failure(exc.problem, exc.fix, ctx.env, ctx.log.secrets)
    failpage.write_termination_log(
        f"FATAL nbinit: {failure.line()}\n",
        ctx.env.get("NBINIT_TERMINATION_LOG") or failpage.TERMINATION_LOG,
    )
    ctx.log.fatal("not starting the server: fix the problem above and restart")
    mode = failpage.choose(ctx.config.get("on_fatal"), ctx.env)
    if mode == failpage.EXIT:
        status.write_status(ctx, finished=True)
        return EXIT_FATAL
    restore_signal_handlers()
    ctx.serving = serving(ctx, "failure page")
    status.write_status(ctx, finished=True)
    minutes = float(ctx.config.get("explain_minutes") or DEFAULT_EXPLAIN_MINUTES)
    return failpage.serve(failure, ctx.env, minutes, ctx.user, ctx.log)


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


def poststart(ctx: Context) -> int:
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
        if ctx.background:
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
        ctx.log.debug(_traceback())
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
