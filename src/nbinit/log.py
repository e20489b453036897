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

TYPE_CHECKING = False  # `typing` costs `nbinit ready`, run every few seconds, 2-3 ms; mypy reads it
if TYPE_CHECKING:
    from typing import IO, Any, Optional

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "FATAL")

# user:password@ in any URL, and bearer tokens, wherever they appear in a message.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"']+")


# C0 and C1 controls, DEL, the Unicode line/paragraph separators and the bidi overrides:
# text from users, git servers and configs must not move a terminal's cursor, ring its
# bell, rewrite a line (CR) or start a forged `LEVEL[...] nbinit:` line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """Every control character as a visible escape (ESC -> \\x1b): one line, nothing hidden."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Text as nbinit writes it anywhere (log, status file, terminal): redacted, escaped."""
    return escape(redact(text, secrets))


def clean_tree(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """clean() on every string in JSON-like data (keys included), whatever its shape."""
    if isinstance(value, str):
        return clean(value, secrets)
    if isinstance(value, dict):
        return {clean_tree(k, secrets): clean_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_tree(item, secrets) for item in value]
    return value


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
        url = env.get("NBINIT_CONFIG_URL", "")
        if "@" in url or "?" in url:  # known from the first line, whatever fails first
            from nbinit.urls import url_secrets

            secrets += tuple(url_secrets(url))
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
        # The one place every log line passes: no call site can forget to escape.
        message = clean(" ".join(message.splitlines()), self.secrets)
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
            record.update(clean_tree(fields, self.secrets))
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
