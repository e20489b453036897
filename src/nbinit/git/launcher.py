"""The root side: start the worker as the user, detached, and read its events until a deadline.

Imports only nbinit.git.policy of the package: nothing here can run git.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import time
from typing import Any, Optional

from nbinit import privilege
from nbinit.context import Identity
from nbinit.git.policy import GitPolicy, RepoPlan, progress_path

MAX_EVENT_BYTES = 1 << 20  # one event line; each is a few hundred bytes
LAST_EVENTS = ("finished", "error")  # the worker writes nothing after these and exits


class Worker:
    """A running worker: events are read until a deadline; after it, the worker carries on."""

    def __init__(self, pgid: int, fd: int) -> None:
        self.pgid = pgid
        self.fd = fd
        self.buffer = b""
        self.finished = False

    def events(self, until: Optional[float]) -> Any:
        """Yield events until the worker ends or the monotonic time `until` passes."""
        while not self.finished:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                with contextlib.suppress(ValueError, RecursionError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        yield event
                        if event.get("event") in LAST_EVENTS:
                            # Its last word: not waiting for the interpreter to wind down.
                            self.hand_over()
                            return
            if len(self.buffer) > MAX_EVENT_BYTES:  # a process of the user's: root bounds it
                self.buffer = b""
            wait = None if until is None else until - time.monotonic()
            if wait is not None and wait <= 0:
                return
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                return
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.finished = True
                privilege.forget_detached(self.pgid)
                os.close(self.fd)
                return
            self.buffer += chunk

    def hand_over(self) -> None:
        """Right before exec: the worker goes on alone (its writes to stdout just stop)."""
        privilege.forget_detached(self.pgid)
        if not self.finished:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.finished = True


def start_worker(
    identity: Optional[Identity],
    plans: list[RepoPlan],
    policy: GitPolicy,
    env: dict[str, str],
    *,
    dry_run: bool = False,
    terminal: bool = False,
    timeout: float = 10.0,
    problems_file: Optional[dict[str, str]] = None,
) -> Worker:
    """Start `python -m nbinit.git.worker` as the user, detached, and hand it the plan.

    problems_file ({name, run}): the worker updates the start's problems file when done.
    """
    home = identity.home if identity else env.get("HOME", "")
    job = {
        "home": home,
        "policy": policy.as_dict(),
        "repos": [p._asdict() for p in plans],
        "dry_run": dry_run,
        "terminal": terminal,
        "progress_file": progress_path(home),
        "problems": problems_file,
    }
    worker_env = privilege.clean_environment(identity, env)
    for key in ("NBINIT_LOG_FORMAT", "NBINIT_DEBUG", "NBINIT_GIT_TOKEN", "NBINIT_GIT_USERNAME"):
        if env.get(key):
            worker_env[key] = env[key]
    from nbinit import runtime  # `python -I -m nbinit.git.worker`, from the zipapp too

    pgid, fd = privilege.spawn_detached_as_user(
        identity,
        runtime.module_command("nbinit.git.worker"),
        env=worker_env,
        cwd=home if os.path.isdir(home) else "/",
        stdin_data=json.dumps(job).encode(),
        timeout=timeout,
    )
    return Worker(pgid, fd)
