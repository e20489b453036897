"""The log contract: one line per action on stderr, text or JSON lines, secrets redacted.

stdout belongs to the notebook server, so nothing here ever writes to it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from typing import IO, Any, Optional

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "FATAL")

# user:password@ in any URL, and bearer tokens, wherever they appear in a message.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"']+")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove URL credentials, bearer tokens and every known secret value from text."""
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    text = _BEARER.sub(r"\1***", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class Log:
    """Writes log lines and remembers every warning and error for the status file."""

    def __init__(
        self,
        stream: Optional[IO[str]] = None,
        fmt: str = "text",
        secrets: tuple[str, ...] = (),
        debug: bool = False,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.fmt = fmt
        self.secrets = secrets
        self.debug_enabled = debug
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.step: Optional[str] = None
        # Repos sync in worker threads; one line must never interleave with another.
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Optional[dict[str, str]] = None) -> Log:
        env = dict(os.environ) if env is None else env
        fmt = env.get("NBINIT_LOG_FORMAT", "text").strip().lower() or "text"
        secrets = tuple(
            value for key, value in env.items() if key == "NBINIT_CONFIG_TOKEN" and value
        )
        log = cls(fmt=fmt if fmt in ("text", "json") else "text", secrets=secrets)
        log.debug_enabled = env.get("NBINIT_DEBUG", "") not in ("", "0")
        if fmt not in ("text", "json"):
            log.warning(f"NBINIT_LOG_FORMAT={fmt!r} is not text or json: using text")
        return log

    def add_secret(self, value: str) -> None:
        if value and value not in self.secrets:
            self.secrets = (*self.secrets, value)

    def emit(self, level: str, message: str, **fields: Any) -> None:
        if level == "DEBUG" and not self.debug_enabled:
            return
        message = redact(" ".join(message.splitlines()), self.secrets)
        if level == "WARNING":
            self.warnings.append(message)
        elif level in ("ERROR", "FATAL"):
            self.errors.append(message)
        now = time.time()
        if self.fmt == "json":
            record: dict[str, Any] = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now % 1 * 1000):03d}Z",
                "level": level,
                "logger": "nbinit",
                "message": message,
            }
            if self.step:
                record["step"] = self.step
            record.update(fields)
            line = redact(json.dumps(record, default=str), self.secrets)
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            line = f"{level}[{stamp}] nbinit: {message}"
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not turn a good start into a crash

    def debug(self, message: str, **fields: Any) -> None:
        self.emit("DEBUG", message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.emit("INFO", message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self.emit("WARNING", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.emit("ERROR", message, **fields)

    def fatal(self, message: str, **fields: Any) -> None:
        self.emit("FATAL", message, **fields)
