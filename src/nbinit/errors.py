"""The one exception type for problems a user or admin can fix, and the exit codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_DEGRADED = 2
EXIT_USAGE = 64
EXIT_TERMINATED = 143


class NbinitError(Exception):
    """A problem someone outside nbinit can fix: what is wrong, and what to do about it.

    It becomes exactly one FATAL, ERROR or WARNING line; a traceback means a bug in nbinit.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}" if self.fix else self.problem


class UsageError(NbinitError):
    """Bad command line: exit 64."""


class Terminated(Exception):
    """SIGTERM or SIGINT arrived before exec: stop setup, never start the server."""
