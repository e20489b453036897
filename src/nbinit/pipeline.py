"""The pipeline: config -> user -> repos -> gpu -> hooks -> exec, over one context."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from types import FrameType
from typing import Any, Callable, Optional

from nbinit import privilege, status
from nbinit.context import DEGRADED, FAILED, OK, Context, StepResult, failed, skipped
from nbinit.errors import (
    EXIT_FATAL,
    EXIT_TERMINATED,
    NbinitError,
    Terminated,
)

StepRun = Callable[[Context], StepResult]


def traceback_text() -> str:
    import traceback  # only after a bug: a clean start should not pay for the import

    return traceback.format_exc()


def _always(ctx: Context) -> bool:
    return True


def _never(ctx: Context) -> bool:
    return False


def _gpu_required(ctx: Context) -> bool:
    """A required GPU: never start without the evidence, even past the deadline."""
    return bool(ctx.section("gpu")["require"] is True)


class Step:
    """One row of the step table: the whole contract between a step and the pipeline.

    `critical`: in start mode, the step's failure is FATAL and the server never starts
    (without a valid identity it would run as root). Every other failure degrades.
    `must_run`: the step runs even past the deadline, with a floor of time (skipping the
    user step would start the server as root; skipping a required GPU check would start a
    server without the GPU it was promised).
    """

    # A plain class, not a NamedTuple: that one compiles its __new__ from source (exec) on
    # every start, which the bytecode in the zipapp is there to avoid (tests/unit/test_bundle).
    __slots__ = ("name", "module", "critical", "must_run")

    def __init__(
        self,
        name: str,
        critical: Callable[[Context], bool] = _never,
        must_run: Callable[[Context], bool] = _never,
    ) -> None:
        self.name = name
        self.module = f"nbinit.steps.{name}"
        self.critical = critical
        self.must_run = must_run


STEPS = {
    step.name: step
    for step in (
        Step("config", must_run=_always),
        Step("user", critical=_always, must_run=_always),
        Step("repos"),
        Step("gpu", critical=_gpu_required, must_run=_gpu_required),
        Step("hooks"),
    )
}
START_STEPS = ("config", "user", "repos", "gpu", "hooks")
POSTSTART_STEPS = ("config", "user", "repos", "gpu")


def _load(name: str) -> StepRun:
    """Import a step only when it runs: `nbinit --version` imports none of them."""
    import importlib

    run: StepRun = importlib.import_module(STEPS[name].module).run
    return run


def run_step(ctx: Context, name: str, step: Optional[StepRun] = None) -> StepResult:
    """Run one step, time it, and turn its problems into a result and one log line.

    A step reports a problem that would end the start by raising NbinitError or by
    returning a result whose `fatal` is set; here, and only here, it becomes the FATAL
    (a critical step in start mode) or an ERROR. A step that logged a WARNING and
    otherwise succeeded is degraded: steps do not say so themselves.
    """
    ctx.log.step = name
    started_wall, started = time.time(), time.monotonic()
    warnings_before, errors_before = len(ctx.log.warnings), len(ctx.log.errors)
    try:
        result = (step or _load(name))(ctx)
    except Terminated:
        raise
    except NbinitError as exc:
        result = failed(name, str(exc))
        result.fatal = exc
    except Exception as exc:  # a bug in nbinit: say where, keep the traceback for debug
        ctx.log.debug(traceback_text())
        result = failed(name, f"internal error: {type(exc).__name__}")
        result.fatal = NbinitError(
            f"step {name} crashed ({type(exc).__name__}: {exc})",
            "this is a bug in nbinit, set NBINIT_DEBUG=1 for the traceback",
        )
    try:
        if result.fatal is not None:
            if ctx.mode == "start" and STEPS[name].critical(ctx):
                ctx.log.fatal(str(result.fatal))
                ctx.failure = result.fatal
            else:
                ctx.log.error(str(result.fatal))
                result.fatal = None
    finally:
        ctx.log.step = None
    result.name = name
    result.started = started_wall
    result.finished = time.time()
    result.duration = time.monotonic() - started
    result.warnings = ctx.log.warnings[warnings_before:]
    result.errors = ctx.log.errors[errors_before:]
    if result.outcome == OK and result.warnings:
        result.outcome = DEGRADED
    ctx.results.append(result)
    status.write_status(ctx)
    return result


def run_steps(ctx: Context, names: tuple[str, ...]) -> bool:
    """Run the steps in order; False when a critical step failed (its FATAL is logged)."""
    for name in names:
        if ctx.deadline.expired() and not STEPS[name].must_run(ctx):
            ctx.log.warning(f"{name}: skipped, the {ctx.deadline.seconds:g}s deadline has passed")
            ctx.results.append(skipped(name, "deadline passed"))
            continue
        if run_step(ctx, name).fatal is not None:
            return False
    return True


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
        for job in ctx.hand_overs:
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
        ctx.failure = launch.cannot_exec(ctx.command[0], exc)
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
    minutes = float(ctx.section("explain_minutes"))  # the schema's default before the config
    return failpage.serve(failure, ctx.env, minutes, ctx.user, ctx.log)
