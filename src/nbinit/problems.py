"""The problems file: what a start could not do, and the fix, where JupyterLab users look.

A degraded start (a repo not synced, a conflict backed up, no GPU on a GPU image, the
admin config fallen back to its last good copy) is otherwise visible only in the pod log
and `nbinit status`. This file sits in the home's top directory (the file browser hides
dotfiles), is written and removed only by processes running as the user (never root: the
home is the user's), is updated when the background repo sync finishes, and is removed by
the next start that has nothing to report.

Two writers share it: the start (just before exec) and the background git worker (when it
finishes), in either order. Both go through `update` under a lock, over a small state file
in ~/.cache/nbinit that says which run the file describes.

    python -I -m nbinit.problems   # as the user: one JSON request on stdin
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Optional

OFF = "off"
STATE_NAME = "problems.json"
MAX_STATE_BYTES = 256 * 1024
MAX_PROBLEMS = 50
MAX_LINE = 500


def _state_path(home: str) -> str:
    from nbinit.status import user_cache_dir

    return os.path.join(user_cache_dir(home), STATE_NAME)


def _read_state(path: str) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(MAX_STATE_BYTES))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update(
    home: str,
    name: str,
    run: str,
    *,
    start: Optional[list[str]] = None,
    pending: Optional[list[str]] = None,
    repos: Optional[list[str]] = None,
) -> bool:
    """Merge one writer's part into this run's state and rewrite (or remove) the file.

    The start sends `start` (its problems) and `pending` (repos still syncing); the worker
    sends `repos` (its problems) once it is done. Returns True when the file exists after.
    """
    import fcntl

    from nbinit import status

    state_path = _state_path(home)
    os.makedirs(os.path.dirname(state_path), mode=0o755, exist_ok=True)
    lock_fd = os.open(
        state_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
    )
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        state = _read_state(state_path)
        if state.get("run") != run:
            state = {"run": run, "start": [], "pending": [], "repos": [], "done": False}
        if start is not None:
            state["start"] = start
            if not state["done"]:
                state["pending"] = pending or []
        if repos is not None:
            state.update(repos=repos, done=True, pending=[])
        state["updated"] = time.time()
        status.write_json_atomic(state_path, state, durable=False)
        return _write_file(home, name, state)
    finally:
        os.close(lock_fd)


def _listed(state: dict[str, Any]) -> list[str]:
    """Each problem once, the start's first, bounded in number and length."""
    seen: list[str] = []
    for line in [*state.get("start", []), *state.get("repos", [])]:
        text = " ".join(str(line).split())[:MAX_LINE]
        if text and text not in seen:
            seen.append(text)
    return seen[:MAX_PROBLEMS]


def render(problems: list[str], pending: list[str], when: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
    lines = [
        "Your notebook server started, but not everything went as planned",
        "=================================================================",
        "",
        f"nbinit, which prepares your server, reported these problems at {stamp}.",
        "Each says what went wrong and, after the colon, how to fix it:",
        "",
        *(f"- {problem}" for problem in problems),
        "",
    ]
    if pending:
        lines += [
            f"Still syncing in the background: {', '.join(pending)}. This file is updated "
            "when that finishes.",
            "",
        ]
    lines += [
        "More detail: run `nbinit status` in a terminal; `nbinit repos sync` retries your repos.",
        "The next start with nothing to report removes this file.",
        "",
    ]
    return "\n".join(lines)


def _write_file(home: str, name: str, state: dict[str, Any]) -> bool:
    from nbinit import privilege

    path = os.path.join(home, name)
    problems = _listed(state)
    if not problems:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a symlink planted there is removed, never followed
        return False
    text = render(problems, list(state.get("pending", [])), float(state["updated"]))
    privilege.write_file_atomic(path, text.encode(), mode=0o644, durable=False)
    return True


def main(stdin: Any = None) -> int:
    """As the user: one request {home, name, run, start?, pending?, repos?} on stdin."""
    request = json.loads((stdin or sys.stdin.buffer).read(MAX_STATE_BYTES))
    try:
        update(
            request["home"],
            request["name"],
            request["run"],
            start=request.get("start"),
            pending=request.get("pending"),
            repos=request.get("repos"),
        )
    except OSError as exc:
        sys.stderr.write(f"{exc.strerror or exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
