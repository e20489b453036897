"""The status file: what the last run did, written atomically, readable by the user."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

from nbinit import privilege
from nbinit.context import DEGRADED, FAILED, OK, Context
from nbinit.log import clean_tree, escape

ROOT_STATUS_DIR = "/run/nbinit"
STATUS_NAME = "status.json"


def user_cache_dir(home: str) -> str:
    """nbinit's own directory in a user's home: status, repo progress, repo locks."""
    return os.path.join(home, ".cache", "nbinit")


def _home_status_path(env: dict[str, str]) -> str:
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(user_cache_dir(home), STATUS_NAME)


def status_path(env: dict[str, str], is_root: bool) -> str:
    """Where this run writes its status: NBINIT_STATUS_FILE, /run/nbinit as root, else the home."""
    if env.get("NBINIT_STATUS_FILE"):
        return env["NBINIT_STATUS_FILE"]
    if is_root or os.access(ROOT_STATUS_DIR, os.W_OK):
        return os.path.join(ROOT_STATUS_DIR, STATUS_NAME)
    return _home_status_path(env)


def candidate_paths(env: dict[str, str]) -> list[str]:
    """Where `nbinit status` looks, most specific first."""
    paths = [env["NBINIT_STATUS_FILE"]] if env.get("NBINIT_STATUS_FILE") else []
    return [*paths, os.path.join(ROOT_STATUS_DIR, STATUS_NAME), _home_status_path(env)]


def overall_outcome(ctx: Context) -> str:
    """failed if any step failed; degraded when any WARNING was logged (as cloud-init does)."""
    if any(r.outcome == FAILED for r in ctx.results) or ctx.log.errors:
        return FAILED
    if ctx.log.warnings or any(r.outcome == DEGRADED for r in ctx.results):
        return DEGRADED
    return OK


def build_status(ctx: Context, finished: bool = False) -> dict[str, Any]:
    from nbinit import __version__

    return {
        "version": __version__,
        "mode": ctx.mode,
        "pid": os.getpid(),
        "started": time.time() - ctx.deadline.elapsed(),
        "updated": time.time(),
        "finished": finished,
        "outcome": overall_outcome(ctx),
        "deadline": ctx.deadline.seconds,
        "user": ctx.user.name if ctx.user else None,
        "command": ctx.command,
        "steps": [r.as_dict() for r in ctx.results],
        "warnings": list(ctx.log.warnings),
        "errors": list(ctx.log.errors),
    }


def write_json_atomic(
    path: str, data: dict[str, Any], mode: int = 0o644, durable: bool = True
) -> None:
    """The JSON of data at path, atomically (privilege.write_file_atomic), its directory made."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    privilege.write_file_atomic(path, text.encode(), mode=mode, durable=durable)


def write_status(ctx: Context, finished: bool = False) -> None:
    """Best effort: a status file that cannot be written is a warning, never a failed start."""
    if not ctx.status_path:
        return
    try:
        # Never fsync'd: the file describes this start only, and a crash or power cut ends
        # the pod anyway; an fsync at exec measured 0-20 ms of jitter on the test machine.
        # Step reasons and details carry text from users, git servers and configs: the one
        # place they pass on the way to the file is here.
        data = clean_tree(build_status(ctx, finished), ctx.log.secrets)
        write_json_atomic(ctx.status_path, data, durable=False)
    except OSError as exc:
        path, ctx.status_path = ctx.status_path, ""  # warn once, not after every step
        ctx.log.warning(f"cannot write status file {path}: {exc.strerror or exc}")


def read_status(env: dict[str, str]) -> tuple[Optional[str], Optional[dict[str, Any]]]:
    for path in candidate_paths(env):
        try:
            with open(path) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return path, None
        if isinstance(data, dict):
            attach_repos_progress(data)
        return path, data
    return None, None


def attach_repos_progress(data: dict[str, Any]) -> None:
    """Repo sync that went on after exec writes its own progress file, as the user: show it."""
    for step in data.get("steps", []):
        details = step.get("details") or {}
        path = details.get("progress_file") if step.get("name") == "repos" else ""
        if not path:
            continue
        try:  # the user's file: no symlink followed, size capped, JSON only
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as handle:
                progress = json.loads(handle.read(1024 * 1024))
        except (OSError, ValueError):
            continue
        if isinstance(progress, dict) and isinstance(progress.get("repos"), list):
            data["repos_progress"] = progress


def format_table(data: dict[str, Any]) -> str:
    """The status as a table a person reads in a terminal, every control character escaped.

    The file may be the user's own (~/.cache/nbinit), and the repo progress always is.
    """
    return "\n".join(escape(line) for line in _table_lines(data))


def _table_lines(data: dict[str, Any]) -> list[str]:
    lines = [
        f"nbinit {data.get('version', '?')} {data.get('mode', '?')}: {data.get('outcome', '?')}"
        + ("" if data.get("finished") else " (in progress)"),
        f"{'STEP':<10} {'OUTCOME':<9} {'SECONDS':>8}  REASON",
    ]
    for step in data.get("steps", []):
        lines.append(
            f"{step['name']:<10} {step['outcome']:<9} {step['duration']:>8.3f}  {step['reason']}"
        )
    for warning in data.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    for error in data.get("errors", []):
        lines.append(f"ERROR: {error}")
    progress = data.get("repos_progress")
    if isinstance(progress, dict):
        state = "finished" if progress.get("finished") else f"running (pid {progress.get('pid')})"
        lines.append(f"repo sync: {state}")
        for repo in progress.get("repos", []):
            if isinstance(repo, dict):
                done = repo.get("outcome") and f", {repo['outcome']}: {repo.get('message')}"
                lines.append(f"  {repo.get('dest')}: {repo.get('state')}{done or ''}")
    return lines
