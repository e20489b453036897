"""The run context every step receives, and the result every step returns."""

from __future__ import annotations

import os
import time

from nbinit.errors import NbinitError
from nbinit.log import Log

TYPE_CHECKING = False  # `typing` costs `nbinit ready`, run every few seconds, 2-3 ms; mypy reads it
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

OK = "ok"
SKIPPED = "skipped"
DEGRADED = "degraded"
FAILED = "failed"


class StepResult:
    """What one step did: outcome, the reason when it did not simply succeed, and timing."""

    # Plain classes, not dataclasses: `import dataclasses` pulls in inspect and ast, about
    # 10 ms of every pod start (benchmarks/startup.py).
    def __init__(
        self,
        name: str,
        outcome: str = OK,
        reason: str = "",
        details: Optional[dict[str, Any]] = None,
    ) -> None:
        self.name = name
        self.outcome = outcome
        self.reason = reason
        self.details: dict[str, Any] = details if details is not None else {}
        self.started = 0.0
        self.finished = 0.0
        self.duration = 0.0
        self.warnings: list[str] = []
        self.errors: list[str] = []
        # The problem that ends a start when this step is critical (the step table says
        # which are): the pipeline logs it, as the one FATAL, or as an ERROR otherwise.
        self.fatal: Optional[NbinitError] = None

    def __repr__(self) -> str:
        return f"StepResult({self.name!r}, {self.outcome!r}, {self.reason!r})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "reason": self.reason,
            "details": self.details,
            "started": self.started,
            "finished": self.finished,
            "duration": round(self.duration, 4),
            "warnings": list(self.warnings),
            "errors": list(self.errors),
        }


def ok(name: str, reason: str = "", **details: Any) -> StepResult:
    return StepResult(name, OK, reason, details)


def skipped(name: str, reason: str, **details: Any) -> StepResult:
    return StepResult(name, SKIPPED, reason, details)


def degraded(name: str, reason: str, **details: Any) -> StepResult:
    return StepResult(name, DEGRADED, reason, details)


def failed(name: str, reason: str, **details: Any) -> StepResult:
    return StepResult(name, FAILED, reason, details)


# What a step that must run past the deadline (the user, a required GPU) still gets.
MUST_RUN_FLOOR = 2.0


def process_start() -> float:
    """When this process started, on the monotonic clock (now, where /proc cannot say).

    The hub's clock runs from before the interpreter started: on a node where a class
    starts at once, the interpreter's own start and imports take seconds, and a deadline
    counted from nbinit's first line would let the exec come that much late.
    """
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()
    return time.monotonic() - min(max(age, 0.0), 60.0)


class Deadline:
    """One wall-clock budget for everything before exec, measured on the monotonic clock.

    `fixed`: set by NBINIT_DEADLINE, which wins over the config's `deadline`.
    """

    def __init__(self, seconds: float, start: Optional[float] = None, fixed: bool = False) -> None:
        self.start = time.monotonic() if start is None else start
        self.seconds = seconds
        self.fixed = fixed

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    # What a long step (the config fetch, the repo sync) leaves for the steps after it.
    RESERVE_MAX = 5.0
    RESERVE_SHARE = 0.25

    def before_reserve(self) -> float:
        """The time left once min(5 s, 25 % of the deadline) is kept for the later steps.

        A hung config server or git host still leaves the account and the exec their time.
        """
        reserve = min(self.RESERVE_MAX, self.seconds * self.RESERVE_SHARE)
        return max(0.0, self.remaining() - reserve)

    def cap(self, seconds: float, floor: float = 0.0) -> float:
        """A step's own timeout, never past the overall deadline (nor under floor, if given)."""
        return max(0.0, min(seconds, self.remaining()), min(seconds, floor))


class Identity:
    """The account the server will run as."""

    def __init__(self, name: str, uid: int, gid: int, home: str, shell: str = "/bin/bash") -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.shell = shell

    def _key(self) -> tuple[str, int, int, str, str]:
        return (self.name, self.uid, self.gid, self.home, self.shell)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Identity(name={!r}, uid={}, gid={}, home={!r}, shell={!r})".format(*self._key())


class Context:
    """Everything a run knows, passed explicitly to every step (no hidden global state)."""

    def __init__(
        self,
        mode: str,
        env: dict[str, str],
        log: Log,
        deadline: Deadline,
        command: Optional[list[str]] = None,
    ) -> None:
        self.mode = mode
        self.env = env
        self.log = log
        self.deadline = deadline
        self.command: list[str] = command or []
        self.config: dict[str, Any] = {}
        # Where each top-level config key came from: "defaults", a file path or a URL.
        self.sources: dict[str, str] = {}
        # The image's baked layer as read: what only the image may grant (system groups).
        self.baked: dict[str, Any] = {}
        self.is_root = os.geteuid() == 0
        self.user: Optional[Identity] = None
        self.results: list[StepResult] = []
        # Variables the steps add to the server's environment (e.g. NBINIT_GPU_COUNT).
        self.server_env: dict[str, str] = {}
        # The server's umask (start.sh's NB_UMASK); None keeps nbinit's own.
        self.umask: Optional[int] = None
        # Called just before exec, in this process: each hands work that goes on after the
        # exec, as the user, to the server's side (the repo sync past the deadline).
        self.hand_overs: list[Callable[[], None]] = []
        self.status_path = ""
        self.dry_run = False
        # Names this run in files that outlive it (the problems file's state).
        self.run_id = f"{os.getpid()}-{time.time_ns()}"
        # The FATAL that ended a start: its problem and fix, for the failure page.
        self.failure: Optional[NbinitError] = None
        # What answers on the server's port once setup ended: for `nbinit ready`.
        self.serving: Optional[dict[str, Any]] = None

    def section(self, key: str) -> Any:
        """A step reads only its own section of the effective config.

        Before the config step has set one (or if it never could), the built-in defaults:
        a step after a broken config runs on them, it never crashes on a missing section.
        """
        if key not in self.config:
            from nbinit import schema

            return schema.defaults().get(key)
        return self.config.get(key)

    def secret_names(self) -> tuple[str, ...]:
        """Variables no process run as the user may see: user.secret_env and the git token.

        The repos' token is git's (handed over by a credential helper), never a hook's or
        the server's: an admin must not have to list it in user.secret_env as well.
        """
        names = tuple((self.config.get("user") or {}).get("secret_env", ()))
        token_env = (self.config.get("git") or {}).get("token_env")
        return (*names, token_env) if token_env else names
