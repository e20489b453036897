"""Step `repos`: clone and update the admin's and the user's git repos, as the user.

The admin's repos come from the `repos` section, the user's from `~/.nbinit.yaml` (read as
the user, checked against `git.allowed_hosts`). All git work happens in the nbinit.git
package's worker, which runs as the user (nbinit.git.worker, started by
nbinit.git.launcher); this step waits for it only until the spawn deadline leaves room for
the rest, and what is unfinished then goes on in the background.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import TYPE_CHECKING, Any, Optional

from nbinit.context import Context, StepResult, degraded, ok, skipped
from nbinit.errors import NbinitError

if TYPE_CHECKING:
    from nbinit.git import launcher
    from nbinit.git import policy as gitpolicy

DOTFILE = ".nbinit.yaml"
DOTFILE_SECONDS = 3.0  # wall clock for the child that reads it, within the deadline
MAX_DOTFILE_WARNINGS = 5  # a dotfile of 1000 unknown keys is 6 lines, not 1000


def policy_for(ctx: Context) -> tuple[gitpolicy.GitPolicy, dict[str, str]]:
    """The admin's git policy, and the extra environment for the worker (the token)."""
    from urllib.parse import urlsplit

    from nbinit.git import policy as gitpolicy

    settings = ctx.section("git") or {}
    policy = gitpolicy.GitPolicy.from_section(settings)
    extra: dict[str, str] = {}
    token_env = settings.get("token_env", "")
    token = ctx.env.get(token_env, "") if token_env else ""
    if token:
        ctx.log.add_secret(token)
        # The admin's repos get it over the scheme the admin chose; allowed hosts over https.
        prefixes = {f"https://{host}" for host in policy.allowed_hosts}
        for item in ctx.section("repos") or []:
            parts = urlsplit(str(item.get("url", "")))
            if parts.scheme in ("https", "http") and parts.hostname:
                prefixes.add(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}")
        policy = gitpolicy.GitPolicy(**{**policy.as_dict(), "token_hosts": tuple(sorted(prefixes))})
        extra["NBINIT_GIT_TOKEN"] = token
        if settings.get("token_username"):
            extra["NBINIT_GIT_USERNAME"] = str(settings["token_username"])
    return policy, extra


def read_dotfile(ctx: Context, home: str) -> list[dict[str, Any]]:
    """The user's repos from ~/.nbinit.yaml, read and parsed as the user under limits."""
    from nbinit import dotfile

    timeout = ctx.deadline.cap(DOTFILE_SECONDS)
    repos, warnings = dotfile.read(ctx.user, home, timeout)
    if len(warnings) > MAX_DOTFILE_WARNINGS:
        more = len(warnings) - MAX_DOTFILE_WARNINGS
        warnings = warnings[:MAX_DOTFILE_WARNINGS] + [f"~/{DOTFILE}: {more} more warning(s)"]
    for warning in warnings:
        ctx.log.warning(warning)
    return repos


def declared(ctx: Context, home: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(declared_by, where, item) for the admin's repos, then the user's dotfile's."""
    items: list[tuple[str, str, dict[str, Any]]] = [
        ("admin", f"repos.{i}", item) for i, item in enumerate(ctx.section("repos") or [])
    ]
    try:
        user_items = read_dotfile(ctx, home)
    except NbinitError as exc:
        ctx.log.warning(f"your repos are skipped: {exc}")
        user_items = []
    items += [("user", f"~/{DOTFILE} repos.{i}", item) for i, item in enumerate(user_items)]
    return items


def collect(
    ctx: Context,
    policy: gitpolicy.GitPolicy,
    home: str,
    items: list[tuple[str, str, dict[str, Any]]],
) -> tuple[list[gitpolicy.RepoPlan], int]:
    """Every repo that passes the policy, admin's first; each refusal is one WARNING line."""
    from nbinit.git import policy as gitpolicy

    plans: list[gitpolicy.RepoPlan] = []
    refused = 0
    taken: dict[str, str] = {}
    for declared_by, where, item in items:
        try:
            plan = gitpolicy.plan_repo(item, home, policy, declared_by)
        except NbinitError as exc:
            ctx.log.warning(f"{where}: refused: {exc}")
            refused += 1
            continue
        if plan.dest in taken:
            ctx.log.warning(
                f"{where}: refused: dest {plan.dest} is already used by {taken[plan.dest]}"
            )
            refused += 1
            continue
        taken[plan.dest] = where
        plans.append(plan)
    return plans, refused


def plan_all(
    ctx: Context, home: str, items: list[tuple[str, str, dict[str, Any]]]
) -> tuple[gitpolicy.GitPolicy, list[gitpolicy.RepoPlan], int, dict[str, str]]:
    """The policy, the repos that pass it, how many were refused, and the worker's env."""
    policy, extra = policy_for(ctx)
    plans, refused = collect(ctx, policy, home, items)
    return policy, plans, refused, {**ctx.env, **extra}


def _log_outcome(ctx: Context, event: dict[str, Any]) -> None:
    ctx.log.emit(event.get("level", "INFO"), event.get("message", ""))


def run(ctx: Context) -> StepResult:
    if ctx.user is None:
        return skipped("repos", "no notebook user to run git as (root never runs git)")
    home = ctx.user.home
    if not os.path.isdir(home):
        return skipped("repos", f"home {home} does not exist")
    items = declared(ctx, home)
    if not items:
        # Before importing nbinit.git: a start with no repos pays nothing for git.
        return skipped("repos", "no repos configured")
    from nbinit.git import launcher

    policy, plans, refused, env = plan_all(ctx, home, items)
    if not plans:  # items were declared, so every one of them was refused
        return degraded("repos", f"{refused} repo(s) refused, none to sync")
    try:
        worker = launcher.start_worker(
            ctx.user,
            plans,
            policy,
            env,
            dry_run=ctx.dry_run,
            timeout=ctx.deadline.cap(5.0),
            problems_file=problems_file(ctx),
        )
    except (OSError, NbinitError, subprocess.TimeoutExpired) as exc:
        ctx.log.warning(f"cannot start the git worker as {ctx.user.name}: {exc}")
        return degraded("repos", "git worker did not start")
    until = time.monotonic() + ctx.deadline.before_reserve()
    done, problems = follow(ctx, worker, until)
    progress = launcher.progress_path(home)
    details: dict[str, Any] = {"progress_file": progress, "repos": done, "refused": refused}
    synced = {d["dest"] for d in done}
    waiting = [p.dest for p in plans if p.dest not in synced]
    if waiting and not worker.finished:
        details["background"] = waiting
        ctx.log.info(
            f"{len(waiting)} repo(s) still syncing, continuing in the background as "
            f"{ctx.user.name} after the server starts (progress: {progress})"
        )
        ctx.hand_overs.append(worker.hand_over)
        reason = f"{len(done)} synced, {len(waiting)} continue in the background"
        return (
            ok("repos", reason, **details)
            if not (problems or refused)
            else degraded("repos", reason, **details)
        )
    if waiting:
        ctx.log.warning(f"the git worker ended early: {len(waiting)} repo(s) not synced")
        problems += len(waiting)
    if problems or refused:
        return degraded("repos", f"{problems + refused} repo problem(s)", **details)
    return ok("repos", f"{len(done)} repo(s) in sync", **details)


def problems_file(ctx: Context) -> Optional[dict[str, str]]:
    """The start's problems file for the worker to update when it finishes (None: off)."""
    name = ctx.config.get("problems_file") or "off"
    if ctx.mode != "start" or ctx.dry_run or name == "off":
        return None
    return {"name": name, "run": ctx.run_id}


def follow(ctx: Context, worker: launcher.Worker, until: Optional[float]) -> tuple[list[Any], int]:
    """Log each repo's outcome as the worker reports it, until it ends or `until` passes."""
    done: list[dict[str, Any]] = []
    problems = 0
    for event in worker.events(until):
        kind = event.get("event")
        if kind == "repo":
            _log_outcome(ctx, event)
            done.append({k: event.get(k) for k in ("dest", "outcome", "message")})
            problems += event.get("level") != "INFO"
        elif kind == "error":
            ctx.log.warning(f"git worker: {event.get('message', '')}")
            problems += 1
    return done, problems
