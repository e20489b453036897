"""Step `hooks`: run the image's executables in hooks.dir as the user, each with a timeout."""

from __future__ import annotations

import os
import subprocess

from nbinit import privilege
from nbinit.context import Context, StepResult, degraded, ok, skipped


def run(ctx: Context) -> StepResult:
    settings = ctx.section("hooks")
    directory = settings["dir"]
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return skipped("hooks", f"no hooks directory {directory}")
    except OSError as exc:
        ctx.log.warning(f"hooks: cannot list {directory}: {exc.strerror}")
        return degraded("hooks", f"cannot list {directory}")
    hooks = [
        os.path.join(directory, n)
        for n in names
        if not n.startswith(".") and os.access(os.path.join(directory, n), os.X_OK)
    ]
    if not hooks:
        return skipped("hooks", f"no executable hooks in {directory}")
    env = privilege.user_environment(ctx.user, ctx.env, ctx.secret_names())
    cwd = ctx.user.home if ctx.user and os.path.isdir(ctx.user.home) else "/"
    failures = []
    for hook in hooks:
        timeout = ctx.deadline.cap(float(settings["timeout"]))
        try:
            result = privilege.run_as_user(
                ctx.user, [hook], env=env, timeout=timeout, cwd=cwd, capture=False
            )
        except subprocess.TimeoutExpired:
            ctx.log.warning(f"hooks: {hook} ran past {timeout:.1f}s and was stopped")
            failures.append(hook)
            continue
        except OSError as exc:
            ctx.log.warning(f"hooks: cannot run {hook}: {exc.strerror}")
            failures.append(hook)
            continue
        if result.returncode != 0:
            ctx.log.warning(f"hooks: {hook} exited {result.returncode}")
            failures.append(hook)
        else:
            ctx.log.info(f"hooks: ran {hook}")
    if failures:
        return degraded("hooks", f"{len(failures)} of {len(hooks)} hooks failed", failed=failures)
    return ok("hooks", f"ran {len(hooks)} hooks")
