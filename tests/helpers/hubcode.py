"""The hub-side nbinit code (configs/z2jh-hub-nbinit.py), executed as the z2jh chart does,
and its config handler served by a real tornado server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from traitlets.config import Config

REPO = Path(__file__).resolve().parents[2]
HUB_CODE = REPO / "configs" / "z2jh-hub-nbinit.py"


def run_hub_code(
    config_path: Path, values: Optional[dict[str, Any]] = None, c: Optional[Config] = None
) -> tuple[Config, dict[str, Any]]:
    """Execute hub.extraConfig.nbinit with `c` and `get_config`, as jupyterhub_config.py does."""
    c = Config() if c is None else c
    values = values or {"custom": {"nbinit": {}}}
    custom = copy.deepcopy(values.get("custom", {}))
    custom.setdefault("nbinit", {})["configPath"] = str(config_path)

    def get_config(key: str, default: Any = None) -> Any:
        node: Any = {"custom": custom}
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    namespace: dict[str, Any] = {"c": c, "get_config": get_config}
    code = values.get("hub", {}).get("extraConfig", {}).get("nbinit") or HUB_CODE.read_text()
    exec(compile(code, str(HUB_CODE), "exec"), namespace)  # noqa: S102 - the chart does this
    return c, namespace


@contextlib.contextmanager
def serve_config(config_path: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """The hub code's handler at the hub's path, on loopback; yields the config URL."""
    from tornado import httpserver, web

    c, _ = run_hub_code(config_path)
    route, handler = c.JupyterHub.extra_handlers.to_dict()["extend"][0]
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = httpserver.HTTPServer(web.Application([("/hub" + route, handler)]))
        sockets = server._sockets  # noqa: SLF001 - tornado keeps the bound port only here
        server.listen(0, host)
        state["port"] = next(iter(sockets.values())).getsockname()[1]
        ready.set()
        loop.run_forever()
        server.stop()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://{host}:{state['port']}/hub/nbinit/config.yaml"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
