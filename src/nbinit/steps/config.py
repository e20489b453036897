"""Step `config`: built-in defaults < the baked /etc/nbinit/config.yaml < the admin config URL.

When the admin config cannot be fetched, pinned or validated, the last copy that passed
(kept root-only under NBINIT_STATE_DIR) is used with a WARNING, else the baked default.
This step never fails: a start always gets a complete, validated config.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

from nbinit import config, fetch, lastgood, schema, trusted
from nbinit.context import Context, StepResult, degraded, ok
from nbinit.errors import NbinitError, Terminated

BAKED_PATH = "/etc/nbinit/config.yaml"


def baked_path(env: dict[str, str]) -> str:
    return env.get("NBINIT_BAKED_CONFIG") or BAKED_PATH


def load_baked(env: dict[str, str]) -> tuple[Optional[dict[str, Any]], list[str]]:
    """The image's baked layer and its warnings (None: no file); NbinitError when unusable.

    One reading for `nbinit start`, `nbinit check` and `nbinit gpu` alike.
    """
    path = baked_path(env)
    data = trusted.read_trusted_file(path, config.MAX_CONFIG_BYTES)
    if data is None:
        return None, []
    return config.parse_and_check(data, path)


def load_admin(ctx: Context, url: str, settings: dict[str, Any]) -> tuple[bytes, str]:
    """Fetch the admin config bytes (fetch module: deadlines, caps, pin, redirects).

    The fetch never takes the whole deadline: a quarter of it (at most 5 s) stays for the
    account, repos and the exec, so a hung config server still gives a timely start.
    """
    return fetch.fetch_config(
        url,
        token=ctx.env.get("NBINIT_CONFIG_TOKEN") or None,
        sha256=ctx.env.get("NBINIT_CONFIG_SHA256") or None,
        timeout=min(float(settings["timeout"]), ctx.deadline.before_reserve()),
        max_bytes=int(settings["max_bytes"]),
        retries=int(settings["retries"]),
        log=ctx.log,
    )


# What an admin config nobody vouches for may not set: who the server runs as, and what
# root does with files (homes, skeleton, groups, hooks). user.secret_env only ever takes
# variables away, so any admin config may add to it.
ROOT_SIDE_KEYS = ("user", "hooks.dir")
ALWAYS_ALLOWED = ("user.secret_env",)


def is_trusted_source(url: str, pinned: bool) -> bool:
    """Verified https:// (fetch never turns verification off) or a matching sha256 pin."""
    return pinned or url.strip().lower().startswith("https://")


def drop_root_side_keys(layer: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The layer without ROOT_SIDE_KEYS, and the dotted names of what was dropped."""
    kept = {key: dict(value) if isinstance(value, dict) else value for key, value in layer.items()}
    dropped = []
    for name in ROOT_SIDE_KEYS:
        section, _, key = name.partition(".")
        values = kept.get(section)
        if not isinstance(values, dict):
            continue
        for sub in list(values):
            full = f"{section}.{sub}"
            if (not key or sub == key) and full not in ALWAYS_ALLOWED:
                dropped.append(full)
                del values[sub]
        if not values:
            del kept[section]
    return kept, dropped


class _Layers:
    """The effective config as it is built, with where each part came from."""

    def __init__(self) -> None:
        self.effective = schema.defaults()
        self.sources: dict[str, str] = {}
        self.names = ["defaults"]
        # key -> the source it was ignored from (`nbinit config show` prints them)
        self.ignored: dict[str, str] = {}
        config.record_sources(self.sources, self.effective, "defaults")

    def add(self, layer: dict[str, Any], origin: str) -> None:
        self.effective = config.merge(self.effective, layer)
        config.record_sources(self.sources, layer, origin)
        self.names.append(origin)


def run(ctx: Context) -> StepResult:
    layers = _Layers()
    ctx.config, ctx.sources = layers.effective, layers.sources
    fallback = ""

    try:
        layer, warnings = _unless_crashed(lambda: load_baked(ctx.env), baked_path(ctx.env))
        for warning in warnings:
            ctx.log.warning(warning)
        if layer is not None:
            layers.add(layer, baked_path(ctx.env))
            ctx.baked = layer
    except NbinitError as exc:
        # A broken baked config is the image author's bug; `nbinit check` catches it.
        ctx.log.warning(f"{exc}; using built-in defaults")
        fallback = "baked config unusable, built-in defaults used"
    ctx.config, ctx.sources = layers.effective, layers.sources
    _apply_deadline(ctx, layers)

    url = ctx.env.get("NBINIT_CONFIG_URL", "").strip()
    if url:
        fallback = _apply_admin(ctx, url, layers) or fallback

    ctx.config = layers.effective
    ctx.sources = layers.sources
    _apply_deadline(ctx, layers)
    ctx.log.info("config: " + " < ".join(layers.names))
    details: dict[str, Any] = {"layers": layers.names}
    if layers.ignored:
        details["ignored"] = layers.ignored
    if fallback:  # a WARNING alone makes the step degraded too: the pipeline says so
        return degraded("config", fallback, **details)
    return ok("config", **details)


_T = TypeVar("_T")


def _unless_crashed(work: Callable[[], _T], origin: str) -> _T:
    """work(), with any exception but NbinitError made one: a document nbinit fails to read,
    whatever the reason, is a failed config (WARNING, fallback), never a crashed step."""
    try:
        return work()
    except (NbinitError, Terminated):
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary of untrusted input
        raise NbinitError(
            f"{origin}: cannot be read ({type(exc).__name__})",
            "fix the config; if `nbinit config validate` accepts it, report a bug in nbinit",
        ) from None


def _apply_deadline(ctx: Context, layers: _Layers) -> None:
    """The config's deadline, unless NBINIT_DEADLINE fixed it (set after each layer, so the
    admin fetch already runs under the baked deadline)."""
    if not ctx.deadline.fixed:
        ctx.deadline.seconds = float(layers.effective["deadline"])


def _apply_admin(ctx: Context, url: str, layers: _Layers) -> str:
    """Add the admin layer (or its last good copy); return the fallback reason or ''."""
    settings = layers.effective["fetch"]
    cache = lastgood.path(ctx.env)
    shown = fetch.config_source(url)
    try:
        pin = fetch.normalize_pin(ctx.env.get("NBINIT_CONFIG_SHA256"))
    except NbinitError:
        pin = ""  # a pin was meant but is malformed: the fetch says so, nothing can match it
    trusted = is_trusted_source(url, bool(pin))
    try:
        body, shown = _unless_crashed(lambda: load_admin(ctx, url, settings), shown)
        layer, warnings = _unless_crashed(lambda: config.parse_and_check(body, shown), shown)
    except NbinitError as exc:
        cached, fetched_or_why = lastgood.load(cache, shown, pin, settings["max_stale_days"])
        if cached is not None:
            ctx.log.warning(
                f"{exc}; using the last good admin config {cache} (fetched {fetched_or_why})"
            )
            origin = f"{cache} (last good)"
            layers.add(_trusted_part(ctx, cached, trusted, origin, layers), origin)
            return "admin config unavailable, last good copy used"
        instead = "the baked default config" if len(layers.names) > 1 else "built-in defaults"
        ctx.log.warning(f"{exc}; using {instead} ({fetched_or_why})")
        return f"admin config unavailable, {instead} used"
    for warning in warnings:
        ctx.log.warning(warning)
    layers.add(_trusted_part(ctx, layer, trusted, shown, layers), shown)
    # `nbinit config show` only looks; a start or postStart keeps what it applied.
    if ctx.is_root and ctx.mode in ("start", "poststart"):
        try:
            lastgood.save(cache, body, shown)
        except (OSError, NbinitError) as exc:
            ctx.log.warning(f"cannot keep the last good admin config at {cache}: {exc}")
    return ""


def _trusted_part(
    ctx: Context, layer: dict[str, Any], trusted: bool, origin: str, layers: _Layers
) -> dict[str, Any]:
    """The layer as its source may set it: an unpinned http:// or file:// admin config loses
    the keys that decide identity or root-side file operations, with one WARNING."""
    if trusted:
        return layer
    kept, dropped = drop_root_side_keys(layer)
    if dropped:
        for key in dropped:
            layers.ignored[key] = origin
        ctx.log.warning(
            f"{origin}: {', '.join(dropped)} ignored: an admin config that is neither served "
            "over https:// nor pinned may not decide who the server runs as or what root does "
            "with files; set them in the baked /etc/nbinit/config.yaml, serve the config over "
            "https://, or pin it with NBINIT_CONFIG_SHA256"
        )
    return kept
