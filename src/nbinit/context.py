"""The run context every step receives, and the result every step returns."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from nbinit.log import Log

OK = "ok"
SKIPPED = "skipped"
DEGRADED = "degraded"
FAILED = "failed"
OUTCOMES = (OK, SKIPPED, DEGRADED, FAILED)


@dataclass
class StepResult:
    """What one step did: outcome, the reason when it did not simply succeed, and timing."""

    name: str
    outcome: str = OK
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    duration: float = 0.0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

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


class Deadline:
    """One wall-clock budget for everything before exec, measured on the monotonic clock."""

    def __init__(self, seconds: float, start: Optional[float] = None) -> None:
        self.start = time.monotonic() if start is None else start
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def cap(self, seconds: float) -> float:
        """A step's own timeout, never past the overall deadline."""
        return max(0.0, min(seconds, self.remaining()))


@dataclass
class Identity:
    """The account the server will run as."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str = "/bin/bash"
    group: str = ""


@dataclass
class Context:
    """Everything a run knows, passed explicitly to every step (no hidden global state)."""

    mode: str
    env: dict[str, str]
    log: Log
    deadline: Deadline
    command: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    # Where each top-level config key came from: "defaults", a file path or a URL.
    sources: dict[str, str] = field(default_factory=dict)
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    user: Optional[Identity] = None
    results: list[StepResult] = field(default_factory=list)
    # Variables the steps add to the server's environment (e.g. NBINIT_GPU_COUNT).
    server_env: dict[str, str] = field(default_factory=dict)
    # Work that goes on after exec, as the user (repo sync past the deadline).
    background: list[Callable[[], None]] = field(default_factory=list)
    status_path: str = ""
    dry_run: bool = False

    def section(self, key: str) -> Any:
        """A step reads only its own section of the effective config."""
        return self.config.get(key)
