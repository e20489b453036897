"""Step `config`: built-in defaults < the baked /etc/nbinit/config.yaml < the admin config URL."""

from __future__ import annotations

import os
from typing import Any, Optional

from nbinit import config, schema
from nbinit.context import Context, StepResult, degraded, ok
from nbinit.errors import NbinitError

BAKED_PATH = "/etc/nbinit/config.yaml"
STATE_DIR = "/var/lib/nbinit"
LAST_GOOD_NAME = "last-good-config.yaml"


def baked_path(env: dict[str, str]) -> str:
    return env.get("NBINIT_BAKED_CONFIG") or BAKED_PATH


def last_good_path(env: dict[str, str]) -> str:
    return os.path.join(env.get("NBINIT_STATE_DIR") or STATE_DIR, LAST_GOOD_NAME)


def read_trusted_file(path: str) -> Optional[bytes]:
    """Read root-trusted config only from a file no user could have written or planted.

    The file and its directory must belong to root (or to us when not root) and not be
    writable by group or others; a symlink at the last component is refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NbinitError(f"cannot read {path}: {exc.strerror}", "fix its permissions") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        parent = os.stat(os.path.dirname(os.path.abspath(path)))
        for what, st in (("file", info), ("directory", parent)):
            if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
                raise NbinitError(
                    f"{path}: the {what} is writable by a non-root user, not trusted",
                    "make it root-owned and not group/other-writable",
                )
        return handle.read(config.MAX_CONFIG_BYTES + 1)


def save_last_good(path: str, data: bytes) -> None:
    """Keep the last admin config that passed validation, root-only, for when the fetch fails."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.lstat(directory)
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        os.chmod(directory, 0o700)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_admin(ctx: Context, url: str, settings: dict[str, Any]) -> tuple[bytes, str]:
    """Fetch the admin config bytes (fetch module: deadlines, caps, pin, redirects)."""
    from nbinit import fetch

    return fetch.fetch_config(
        url,
        token=ctx.env.get("NBINIT_CONFIG_TOKEN") or None,
        sha256=ctx.env.get("NBINIT_CONFIG_SHA256") or None,
        timeout=ctx.deadline.cap(float(settings["timeout"])),
        max_bytes=int(settings["max_bytes"]),
        retries=int(settings["retries"]),
        log=ctx.log,
    )


def run(ctx: Context) -> StepResult:
    effective = schema.defaults()
    sources: dict[str, str] = {}
    config.record_sources(sources, effective, "defaults")
    warnings: list[str] = []
    layers = ["defaults"]

    baked = baked_path(ctx.env)
    data = read_trusted_file(baked)
    if data is not None:
        try:
            layer, more = config.parse_and_check(data, baked)
        except NbinitError as exc:
            # A broken baked config is the image author's bug; `nbinit check` catches it.
            ctx.log.warning(f"{exc}; using built-in defaults")
        else:
            warnings += more
            effective = config.merge(effective, layer)
            config.record_sources(sources, layer, baked)
            layers.append(baked)

    url = ctx.env.get("NBINIT_CONFIG_URL", "").strip()
    fallback = ""
    if url:
        settings = effective["fetch"]
        cache = last_good_path(ctx.env)
        try:
            body, shown_url = load_admin(ctx, url, settings)
            layer, more = config.parse_and_check(body, shown_url)
        except NbinitError as exc:
            fallback = _fallback(ctx, str(exc), cache)
            if fallback:
                layer, more = config.parse_and_check(read_trusted_file(cache) or b"", cache)
                effective = config.merge(effective, layer)
                config.record_sources(sources, layer, f"{cache} (last good)")
                layers.append(f"{cache} (last good)")
        else:
            warnings += more
            effective = config.merge(effective, layer)
            config.record_sources(sources, layer, shown_url)
            layers.append(shown_url)
            if ctx.is_root:
                try:
                    save_last_good(cache, body)
                except OSError as exc:
                    ctx.log.warning(f"cannot keep the last good config at {cache}: {exc}")

    for warning in warnings:
        ctx.log.warning(warning)
    ctx.config = effective
    ctx.sources = sources
    if "NBINIT_DEADLINE" not in ctx.env:
        ctx.deadline.seconds = float(effective["deadline"])
    ctx.log.info("config: " + " < ".join(layers))
    if fallback or warnings:
        return degraded("config", fallback or f"{len(warnings)} warning(s)", layers=layers)
    return ok("config", layers=layers)


def _fallback(ctx: Context, problem: str, cache: str) -> str:
    """Log the fetch problem once, with what is used instead; return the reason or ''."""
    try:
        cached = read_trusted_file(cache)
        if cached is not None:
            config.parse_and_check(cached, cache)
    except NbinitError:
        cached = None
    if cached is not None:
        ctx.log.warning(f"{problem}; using the last good admin config from {cache}")
        return "admin config unavailable, last good copy used"
    ctx.log.warning(f"{problem}; using the baked default config")
    return "admin config unavailable, baked default used"
