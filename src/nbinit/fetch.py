"""Fetch the admin config: https, http, file:// or a path. (Placeholder: full version follows.)"""

from __future__ import annotations

from typing import Optional

from nbinit.errors import NbinitError
from nbinit.log import Log


def fetch_config(
    url: str,
    *,
    token: Optional[str],
    sha256: Optional[str],
    timeout: float,
    max_bytes: int,
    retries: int,
    log: Log,
) -> tuple[bytes, str]:
    """Return (body, url as safe to log)."""
    path = url[len("file://") :] if url.startswith("file://") else url
    if "://" in path:
        raise NbinitError(f"{url}: http(s) fetch not implemented yet", "use a file path")
    try:
        with open(path, "rb") as handle:
            return handle.read(max_bytes + 1), path
    except OSError as exc:
        raise NbinitError(f"{path}: {exc.strerror}", "check NBINIT_CONFIG_URL") from None
