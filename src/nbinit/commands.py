"""One function per command: build the context, call into the pipeline or a module."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Optional

from nbinit import pipeline, status
from nbinit.context import Context, Deadline, process_start
from nbinit.errors import EXIT_DEGRADED, EXIT_FATAL, EXIT_OK, NbinitError
from nbinit.log import Log, escape

if TYPE_CHECKING:
    from nbinit.git import policy as gitpolicy


def default_deadline() -> float:
    """The deadline until the config says otherwise: the schema's default."""
    from nbinit import schema

    return float(schema.CONFIG["properties"]["deadline"]["default"])


def deadline_from_env(env: dict[str, str], log: Log) -> Deadline:
    raw = env.get("NBINIT_DEADLINE", "").strip()
    if raw:
        try:
            seconds = float(raw)
            if not 0 < seconds <= 600:
                raise ValueError
            return Deadline(seconds, start=process_start(), fixed=True)
        except ValueError:
            log.warning(
                f"NBINIT_DEADLINE={raw!r} is not a number of seconds from 1 to 600: "
                f"using the config's deadline"
            )
    return Deadline(default_deadline(), start=process_start())


def make_context(mode: str, command: Optional[list[str]] = None) -> Context:
    env = dict(os.environ)
    log = Log.from_env(env)
    ctx = Context(mode=mode, env=env, log=log, deadline=deadline_from_env(env, log))
    ctx.command = command or []
    ctx.status_path = status.status_path(env, ctx.is_root)
    return ctx


def start(command: Optional[list[str]]) -> int:
    from nbinit import launch

    env = dict(os.environ)
    if env.get("NBINIT_DISABLE", "") == "1":
        log = Log.from_env(env)
        try:
            argv = launch.resolve_command(command or [], env.get("PATH"))
        except NbinitError as exc:
            log.fatal(str(exc))
            return EXIT_FATAL
        log.info(f"NBINIT_DISABLE=1: skipping every step, exec {' '.join(argv)} untouched")
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            log.fatal(str(launch.cannot_exec(argv[0], exc)))
            return EXIT_FATAL
    ctx = make_context("start", command)
    try:
        ctx.command = launch.resolve_command(command or [], ctx.env.get("PATH"), ctx.env)
    except NbinitError as exc:
        ctx.log.fatal(str(exc))
        ctx.failure = exc
        return pipeline.end_with_fatal(ctx)
    if ctx.status_path:
        ctx.log.info(f"status file: {ctx.status_path}")
    return pipeline.start(ctx)


def poststart() -> int:
    """Always 0: a failing postStart hook restarts the container (CrashLoopBackOff)."""
    try:
        from nbinit import poststart as poststart_mode

        return poststart_mode.run(make_context("poststart"))
    except BaseException as exc:  # even a bug before the pipeline must not fail the hook
        with contextlib.suppress(Exception):
            sys.stderr.write(f"nbinit: poststart: {type(exc).__name__}: {exc}\n")
        return EXIT_OK


def check(as_json: bool, hub_version: Optional[str]) -> int:
    from nbinit import doctor

    checks = doctor.run_checks(dict(os.environ), hub_version)
    if as_json:
        json.dump(doctor.as_json(checks), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(doctor.format_table(checks) + "\n")
    return EXIT_FATAL if any(c.result == doctor.FAIL for c in checks) else EXIT_OK


def show_status(as_json: bool) -> int:
    path, data, problem = status.read_status(dict(os.environ))
    if path is None:
        sys.stderr.write("nbinit: no status file yet: nbinit has not run in this container\n")
        return EXIT_FATAL
    if data is None:
        sys.stderr.write(f"nbinit: the status file is unreadable or damaged: {escape(problem)}\n")
        return EXIT_FATAL
    if as_json:
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(f"{status.format_table(data)}\n(from {escape(path)})\n")
    outcome = data.get("outcome")
    return {"ok": EXIT_OK, "degraded": EXIT_DEGRADED}.get(str(outcome), EXIT_FATAL)


def config_validate(target: str, dotfile: bool) -> int:
    from nbinit import config, privilege, schema

    log = Log.from_env()
    try:
        if "://" in target and not target.startswith("file://"):
            from nbinit import fetch

            env = os.environ
            data, shown = fetch.fetch_config(
                target,
                token=env.get("NBINIT_CONFIG_TOKEN") or None,
                sha256=env.get("NBINIT_CONFIG_SHA256") or None,
                timeout=default_deadline(),
                max_bytes=config.MAX_CONFIG_BYTES,
                retries=0,
                log=log,
            )
        else:
            shown = target[len("file://") :] if target.startswith("file://") else target
            read = privilege.read_regular_file(shown, config.MAX_CONFIG_BYTES)
            if read is None:
                raise NbinitError(f"{shown}: No such file or directory", "check the path")
            data = read
    except NbinitError as exc:
        log.error(str(exc))
        return EXIT_FATAL
    rules = schema.DOTFILE if dotfile else schema.CONFIG
    limit = config.MAX_DOTFILE_BYTES if dotfile else config.MAX_CONFIG_BYTES
    _, errors, warnings = config.review(data, shown, rules, limit)
    for error in errors:
        log.error(error)
    if errors:
        return EXIT_FATAL
    for warning in warnings:
        log.warning(warning)
    sys.stdout.write(escape(f"{shown}: valid{' with warnings' if warnings else ''}") + "\n")
    return EXIT_DEGRADED if warnings else EXIT_OK


def config_show() -> int:
    import yaml

    from nbinit.steps import config as config_step

    ctx = make_context("config-show")
    ctx.status_path = ""
    result = pipeline.run_step(ctx, "config", config_step.run)
    shown = yaml.safe_dump(ctx.config, sort_keys=False, default_flow_style=False)
    sys.stdout.write("# effective nbinit config\n" + shown)
    sys.stdout.write("# where each part came from:\n")
    for key in sorted(ctx.sources):
        sys.stdout.write(escape(f"#   {key}: {ctx.sources[key]}") + "\n")
    ignored = result.details.get("ignored") or {}
    if ignored:
        sys.stdout.write(
            "# ignored (neither https:// nor pinned: only the baked config may set these):\n"
        )
        for key in sorted(ignored):
            sys.stdout.write(escape(f"#   {key}: {ignored[key]}") + "\n")
    return EXIT_DEGRADED if result.outcome != "ok" else EXIT_OK


def repos_sync(dry_run: bool) -> int:
    """`nbinit repos sync`: config and user as at start, then every repo now, waiting for
    all, git's progress in the terminal."""
    from nbinit import privilege
    from nbinit.git import launcher
    from nbinit.steps import repos

    ctx = make_context("repos-sync")
    ctx.status_path = ""  # the start's status file stays the start's
    ctx.dry_run = dry_run
    if not pipeline.run_steps(ctx, ("config", "user")):
        return EXIT_FATAL
    if ctx.user is None:
        ctx.log.error("no notebook user to run git as: run `nbinit repos sync` as that user")
        return EXIT_FATAL
    home = ctx.user.home
    policy, plans, refused, env = repos.plan_all(ctx, home, repos.declared(ctx, home))
    if not plans:
        ctx.log.info("no repos to sync" + (f" ({refused} refused)" if refused else ""))
        return EXIT_DEGRADED if refused else EXIT_OK
    problems = 0
    if privilege.switches_user(ctx.user):
        worker = launcher.start_worker(ctx.user, plans, policy, env, dry_run=dry_run, terminal=True)
        done, problems = repos.follow(ctx, worker, None)
        problems += len(plans) - len(done)
    else:

        def report(outcome: gitpolicy.Outcome) -> None:
            nonlocal problems
            ctx.log.emit(outcome.level, outcome.message)
            problems += outcome.level != "INFO"

        from nbinit.git import worker as gitworker  # already the user: git runs in-process

        try:
            gitworker.sync_all(
                plans,
                policy,
                home,
                env,
                report,
                dry_run=dry_run,
                terminal=True,
                progress_file=launcher.progress_path(home),
            )
        except NbinitError as exc:
            ctx.log.error(str(exc))
            return EXIT_FATAL
    return EXIT_DEGRADED if problems or refused else EXIT_OK


def gpu_report(as_json: bool) -> int:
    """The GPU report with the baked config's gpu section (no network: defaults < baked)."""
    from nbinit import config, gpu, schema
    from nbinit.steps import config as config_step
    from nbinit.steps.gpu import FIX_REQUIRED

    env = dict(os.environ)
    log = Log.from_env(env)
    settings = schema.defaults()
    try:
        layer, _ = config_step.load_baked(env)
        if layer is not None:
            settings = config.merge(settings, layer)
    except NbinitError as exc:
        log.warning(f"{exc}; using built-in defaults")
    section = settings["gpu"]
    report = gpu.gather(
        env,
        timeout=float(section["timeout"]),
        frameworks=tuple(section["frameworks"]),
        frameworks_timeout=float(section["frameworks_timeout"]),
    )
    if as_json:
        json.dump(report.as_dict(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(gpu.format_table(report) + "\n")
    if section["require"] is True and report.count == 0:
        log.error(f"gpu.require is true but no usable GPU: {FIX_REQUIRED}")
        return EXIT_FATAL
    return EXIT_DEGRADED if report.warnings else EXIT_OK
