"""jupyterhub-singleuser from nbinit's runtime, run on the image's own Python as the user.

    PYTHON DIR nbinit.singleuser_launcher probe              what this Python can run
    PYTHON DIR nbinit.singleuser_launcher run RUNTIME [ARGS]  jupyterhub-singleuser ARGS

(nbinit.runtime.foreign_module_command builds the line: DIR is nbinit.foreign, which finds
this module in the zipapp or the installed package and takes nbinit off sys.path again.)

It imports nothing but the standard library before the server, so it runs on whatever
Python the image has. The runtime (a zip of jupyterhub and the pure-Python packages it
needs beyond jupyter_server) is appended to sys.path of this process only: the image's own
packages come first, and neither PYTHONPATH nor any other variable names the runtime, so
kernels and terminals started by the server never see it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Optional

NAME = "jupyterhub-singleuser"


def distribution_version(name: str) -> Optional[str]:
    """The installed version of a distribution as this Python sees it, or None."""
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7: too old for any runtime anyway
        return None
    try:
        return metadata.version(name)
    except Exception:  # PackageNotFoundError, or a broken dist-info: not usable either way
        return None


def probe() -> dict[str, Optional[str]]:
    """What nbinit needs to know before it chooses a runtime for this Python."""
    return {
        "python": ".".join(str(n) for n in sys.version_info[:3]),
        "executable": sys.executable,
        "jupyter_server": distribution_version("jupyter_server"),
        "jupyterhub": distribution_version("jupyterhub"),
    }


def server_path(path: list[str], runtime: str) -> list[str]:
    """sys.path for the server: the image's entries first, the runtime last, no cwd.

    The working directory is the user's home, where a notebook may be called
    `sqlalchemy.py`; a console script like jupyterhub-singleuser has its bin directory
    first, never the home, so no "" (which an image's PYTHONPATH may hold) is kept.
    """
    kept = [entry for entry in path if entry not in ("", ".", os.getcwd(), runtime)]
    return [*kept, runtime]


def pycache_dir() -> str:
    """The runtime's bytecode, in the user's home: it survives restarts, the tree is root's."""
    return os.path.join(os.path.expanduser("~"), ".cache", "nbinit", "pycache")


def import_runtime(runtime: str) -> None:
    """Import jupyterhub's single-user server, its bytecode cached when the runtime is a
    directory (nbinit unpacked it). A zip cannot cache any: every start compiles it.

    sys.pycache_prefix moves every module's bytecode while it is set, so the image's own
    server (already compiled in its site-packages) is imported first, without it, and the
    prefix is put back before the server runs; nothing outside this process sees it.
    """
    if not os.path.isdir(runtime):
        import jupyterhub.singleuser  # noqa: F401

        return
    # nbinit checked for it before the drop; without it jupyterhub says so again below.
    with contextlib.suppress(ImportError):
        import jupyter_server.serverapp  # noqa: F401

    saved = sys.pycache_prefix, sys.dont_write_bytecode
    sys.pycache_prefix, sys.dont_write_bytecode = pycache_dir(), False
    try:
        import jupyterhub.singleuser.extension  # noqa: F401
        import jupyterhub.singleuser.mixins  # noqa: F401
    finally:
        sys.pycache_prefix, sys.dont_write_bytecode = saved


def run(runtime: str, args: list[str]) -> int:
    """Become jupyterhub-singleuser ARGS with the runtime appended to sys.path."""
    if not os.path.exists(runtime):
        sys.stderr.write(
            f"nbinit: {NAME}: the runtime {runtime} is missing: COPY build/nbinit-root/ / "
            "again, or install jupyterhub in the image\n"
        )
        return 1
    sys.path[:] = server_path(sys.path, runtime)
    sys.argv = [NAME, *args]
    import_runtime(runtime)
    from jupyterhub.singleuser import main as singleuser_main

    result = singleuser_main()
    return int(result or 0)


def main(argv: Optional[list[str]] = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["probe"]:
        sys.stdout.write(json.dumps(probe()) + "\n")
        return 0
    if words[:1] == ["run"] and len(words) >= 2:
        return run(words[1], words[2:])
    sys.stderr.write(f"nbinit: usage: {__name__} probe | run RUNTIME [ARGS...]\n")
    return 64


if __name__ == "__main__":
    sys.exit(main())
