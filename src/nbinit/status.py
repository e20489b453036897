"""The status file: what the last run did, written atomically, readable by the user."""

from __future__ import annotations

import json
import os
import time

from nbinit.context import DEGRADED, FAILED, OK, Context
from nbinit.log import clean_tree, escape

TYPE_CHECKING = False  # `typing` costs `nbinit ready`, run every few seconds, 2-3 ms; mypy reads it
if TYPE_CHECKING:
    from typing import Any, Optional

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
        "serving": ctx.serving,
    }


def write_json_atomic(
    path: str, data: dict[str, Any], mode: int = 0o644, durable: bool = True
) -> None:
    """The JSON of data at path, atomically (privilege.write_file_atomic), its directory made."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    from nbinit import privilege  # only to write: `nbinit ready` reads, in every probe

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


MAX_STATUS_BYTES = 1024 * 1024
MAX_STATUS_DEPTH = 16  # nbinit writes 5 levels; json.dumps(indent=...) recurses per level


def read_status(env: dict[str, str]) -> tuple[Optional[str], Optional[dict[str, Any]], str]:
    """(path, status, why it is unusable) of the first status file that exists.

    Whatever the file holds (any JSON, binary, a fifo, a directory, 200,000 brackets),
    the answer is a mapping or a reason, never an exception.
    """
    from nbinit import config, privilege
    from nbinit.errors import NbinitError

    for path in candidate_paths(env):
        try:
            raw = privilege.read_regular_file(path, MAX_STATUS_BYTES)
            if raw is None:
                continue
            if len(raw) > MAX_STATUS_BYTES:
                return path, None, f"{path}: larger than {MAX_STATUS_BYTES} bytes"
            data = config.parse_json(raw, path, MAX_STATUS_DEPTH)
        except NbinitError as exc:
            return path, None, exc.problem
        if not isinstance(data, dict):
            return path, None, f"{path}: not a JSON object"
        attach_repos_progress(data)
        return path, data, ""
    return None, None, ""


def attach_repos_progress(data: dict[str, Any]) -> None:
    """Repo sync that went on after exec writes its own progress file, as the user: show it."""
    from nbinit import config, privilege
    from nbinit.errors import NbinitError

    for step in _list(data.get("steps")):
        if not isinstance(step, dict) or step.get("name") != "repos":
            continue
        details = step.get("details")
        path = details.get("progress_file") if isinstance(details, dict) else None
        if not isinstance(path, str) or not path:
            continue
        try:  # the user's file: no symlink followed, size capped, JSON only
            raw = privilege.read_regular_file(path, MAX_STATUS_BYTES, follow=False)
            progress = config.parse_json(raw or b"", path, MAX_STATUS_DEPTH)
        except NbinitError:
            continue
        if isinstance(progress, dict) and isinstance(progress.get("repos"), list):
            data["repos_progress"] = progress


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _seconds(value: Any) -> str:
    ok_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{value:>8.3f}" if ok_number else f"{'?':>8}"


def format_table(data: dict[str, Any]) -> str:
    """The status as a table a person reads in a terminal (any JSON object gives one), every
    control character escaped.

    The file may be the user's own (~/.cache/nbinit), and the repo progress always is.
    """
    return "\n".join(escape(line) for line in _table_lines(data))


def _table_lines(data: dict[str, Any]) -> list[str]:
    lines = [
        f"nbinit {data.get('version', '?')} {data.get('mode', '?')}: {data.get('outcome', '?')}"
        + ("" if data.get("finished") else " (in progress)"),
        f"{'STEP':<10} {'OUTCOME':<9} {'SECONDS':>8}  REASON",
    ]
    for step in _list(data.get("steps")):
        if not isinstance(step, dict):
            continue
        lines.append(
            f"{step.get('name', '?')!s:<10} {step.get('outcome', '?')!s:<9} "
            f"{_seconds(step.get('duration'))}  {step.get('reason', '')}"
        )
    for warning in _list(data.get("warnings")):
        lines.append(f"WARNING: {warning}")
    for error in _list(data.get("errors")):
        lines.append(f"ERROR: {error}")
    progress = data.get("repos_progress")
    if isinstance(progress, dict):
        state = "finished" if progress.get("finished") else f"running (pid {progress.get('pid')})"
        lines.append(f"repo sync: {state}")
        for repo in _list(progress.get("repos")):
            if isinstance(repo, dict):
                done = repo.get("outcome") and f", {repo['outcome']}: {repo.get('message')}"
                lines.append(f"  {repo.get('dest')}: {repo.get('state')}{done or ''}")
    return lines
