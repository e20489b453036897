"""Waiting for something the test cannot be told about: poll it, with a deadline.

`stop_process` is the other wait every test process needs: SIGTERM, a grace time, SIGKILL.

`wait_until("alice's server to be ready", server, lambda s: s.get("ready"), timeout=60)`
calls `server()` every `interval` seconds until `done` accepts what it returned, and
returns that. On timeout it fails naming what it awaited and the last thing it saw (the
value, or the exception `observe` raised), plus `context()` (a log's tail): that last
state is what makes a CI failure readable without a rerun. Stdlib only: the hub drivers
import it inside the sandbox.
"""

from __future__ import annotations

import subprocess
import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")

LAST_SEEN_CHARS = 2000


class WaitTimeout(AssertionError):
    """What was awaited never came (an AssertionError, so pytest reports a failure)."""


def wait_until(
    what: str,
    observe: Callable[[], T],
    done: Callable[[T], object] = bool,
    *,
    timeout: float,
    interval: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (OSError,),
    alive: Optional[Callable[[], object]] = None,
    context: Optional[Callable[[], str]] = None,
) -> T:
    """Poll observe() until done(its result) is true and return that result.

    An exception in `ignore` counts as "not yet" (a port not open, a file not written).
    `alive`, when given, is asked after each miss: once false (the process or container
    that should bring the state exited), waiting longer cannot help and it fails at once.
    """
    deadline = time.monotonic() + timeout
    last: object = "nothing (never observed)"
    while True:
        try:
            value = observe()
        except ignore as exc:
            last = exc
        else:
            if done(value):
                return value
            last = value
        if alive is not None and not alive():
            why = "gave up (what should bring it has ended)"
            break
        if time.monotonic() >= deadline:
            why = f"timed out after {timeout:g}s"
            break
        time.sleep(interval)
    seen = repr(last)
    if len(seen) > LAST_SEEN_CHARS:
        seen = seen[:LAST_SEEN_CHARS] + "..."
    message = f"{why} waiting for {what}; last seen: {seen}"
    if context is not None:
        message += f"\n{context()}"
    raise WaitTimeout(message)


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL after timeout seconds; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
