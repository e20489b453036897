"""The last admin config that passed validation, kept root-only for when the fetch fails.

Bound to the URL it came from and to its digest (and to NBINIT_CONFIG_SHA256 when pinned);
used for at most fetch.max_stale_days. Lives in NBINIT_STATE_DIR (/var/lib/nbinit).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

from nbinit import config, fetch, privilege
from nbinit.errors import NbinitError

STATE_DIR = "/var/lib/nbinit"
NAME = "last-good-config.yaml"
META_NAME = "last-good-config.json"


def path(env: dict[str, str]) -> str:
    return os.path.join(env.get("NBINIT_STATE_DIR") or STATE_DIR, NAME)


def _read(path: str) -> Optional[bytes]:
    from nbinit.trusted import read_trusted_file

    return read_trusted_file(path, config.MAX_CONFIG_BYTES)


def save(path: str, data: bytes, url: str) -> None:
    """Keep the last admin config that passed validation, root-only, for when the fetch fails.

    Written atomically with its digest, origin (`url`, as urls.public_url writes it: the
    record holds no credential) and time; never on a path a user can write.
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.lstat(directory)
    if not os.path.isdir(directory) or os.path.islink(directory) or info.st_uid != os.geteuid():
        raise NbinitError(
            f"{directory} is not a directory owned by uid {os.geteuid()}",
            "make NBINIT_STATE_DIR a root-owned directory",
        )
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)
    meta = {
        "url": url,
        "sha256": fetch.sha256_hex(data),
        "fetched": time.time(),
    }
    # Every pod start fetches the same config: rewrite (and fsync) the copy only when it
    # changed. The time of the fetch is refreshed without fsync: a crash that loses it only
    # makes the copy look older, never newer.
    unchanged = _same_file(path, data)
    if not unchanged:
        privilege.write_file_atomic(path, data, mode=0o600)
    privilege.write_file_atomic(
        os.path.join(directory, META_NAME),
        json.dumps(meta).encode(),
        mode=0o600,
        durable=not unchanged,
    )


def _same_file(path: str, data: bytes) -> bool:
    try:
        return _read(path) == data
    except NbinitError:
        return False


def load(
    cache: str, url: str, pin: Optional[str], max_stale_days: float
) -> tuple[Optional[dict[str, Any]], str]:
    """The cached admin config and when it was fetched, or None and why it cannot be used."""
    if max_stale_days <= 0:
        return None, "the last good copy is disabled (fetch.max_stale_days: 0)"
    try:
        data = _read(cache)
        raw_meta = _read(os.path.join(os.path.dirname(cache), META_NAME))
        if data is None or raw_meta is None:
            return None, "no last good copy"
        meta = json.loads(raw_meta)
        digest = fetch.sha256_hex(data)
        if meta.get("url") != url:
            return None, "the last good copy came from another URL"
        if meta.get("sha256") != digest:
            return None, "the last good copy is damaged"
        if pin is not None and digest != pin:
            return None, "the last good copy does not match NBINIT_CONFIG_SHA256"
        age = time.time() - float(meta.get("fetched", 0))
        if age > max_stale_days * 86400:
            return None, f"the last good copy is older than {max_stale_days:g} days"
        layer, _ = config.parse_and_check(data, cache)
    except Exception:  # noqa: BLE001 - any damage: the copy is not used
        return None, "the last good copy is unreadable"
    return layer, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(meta["fetched"])))
