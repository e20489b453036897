"""The pipeline: config -> user -> repos -> gpu -> hooks -> exec, over one context."""

from __future__ import annotations

import signal
import time
import traceback
from types import FrameType
from typing import Callable, Optional

from nbinit import privilege, status
from nbinit.context import FAILED, Context, StepResult, failed
from nbinit.errors import (
    EXIT_DEGRADED,
    EXIT_FATAL,
    EXIT_OK,
    EXIT_TERMINATED,
    NbinitError,
    Terminated,
)

Step = Callable[[Context], StepResult]

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
    try:
        result = (step or _load(name))(ctx)
    except Terminated:
        raise
    except NbinitError as exc:
        critical = name in CRITICAL and ctx.mode == "start"
        (ctx.log.fatal if critical else ctx.log.error)(str(exc))
        result = failed(name, str(exc), critical=critical)
    except Exception as exc:  # a bug in nbinit: say where, keep the traceback for debug
        ctx.log.error(
            f"step {name} crashed ({type(exc).__name__}: {exc}); "
            "this is a bug in nbinit, set NBINIT_DEBUG=1 for the traceback"
        )
        ctx.log.debug(traceback.format_exc())
        critical = name in CRITICAL and ctx.mode == "start"
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
        if ctx.deadline.expired() and name != "config":
            ctx.log.warning(f"{name}: skipped, the {ctx.deadline.seconds:g}s deadline has passed")
            ctx.results.append(failed(name, "deadline passed"))
            ctx.results[-1].outcome = "skipped"
            continue
        result = run_step(ctx, name)
        if result.outcome == FAILED and result.details.get("critical"):
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
            ctx.log.fatal("not starting the server: fix the problem above and restart")
            status.write_status(ctx, finished=True)
            return EXIT_FATAL
        started = time.monotonic()
        exec_result = StepResult("exec", reason=" ".join(ctx.command))
        exec_result.started = time.time()
        ctx.results.append(exec_result)
        for job in ctx.background:
            job()
        exec_result.duration = time.monotonic() - started
        who = f"{ctx.user.name} (uid {ctx.user.uid})" if ctx.user else "the current user"
        ctx.log.info(f"{summary(ctx)}; exec {' '.join(ctx.command)} as {who}")
        status.write_status(ctx, finished=True)
        restore_signal_handlers()
        launch.exec_server(ctx)
    except Terminated:
        ctx.log.error("terminated by signal before the server started")
        status.write_status(ctx, finished=True)
        return EXIT_TERMINATED
    except NbinitError as exc:
        ctx.log.fatal(str(exc))
        status.write_status(ctx, finished=True)
        return EXIT_FATAL
    except OSError as exc:
        ctx.log.fatal(f"cannot exec {ctx.command[0]}: {exc.strerror}: check the command and PATH")
        status.write_status(ctx, finished=True)
        return EXIT_FATAL
    return EXIT_FATAL  # exec_server returns only in tests that replace it


def poststart(ctx: Context) -> int:
    """postStart mode: user-level steps under a hard deadline; always exit 0."""
    install_signal_handlers()
    try:
        run_steps(ctx, POSTSTART_STEPS)
        ctx.log.info(summary(ctx))
    except Terminated:
        ctx.log.error("terminated by signal")
    except Exception as exc:  # a failing postStart kills the container: never fail
        ctx.log.error(f"poststart: {type(exc).__name__}: {exc}")
    status.write_status(ctx, finished=True)
    return EXIT_OK


def exit_code_for(ctx: Context) -> int:
    """For commands that return instead of exec: 0 ok, 2 degraded, 1 failed."""
    outcome = status.overall_outcome(ctx)
    return {"ok": EXIT_OK, "degraded": EXIT_DEGRADED}.get(outcome, EXIT_FATAL)
