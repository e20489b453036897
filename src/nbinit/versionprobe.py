"""A version as the image's Python sees it, for `nbinit check`: one line on stdout.

    PYTHON DIR nbinit.versionprobe          this Python's version, e.g. 3.12.1
    PYTHON DIR nbinit.versionprobe MODULE   MODULE.__version__, as importing it says

Run by nbinit.doctor through runtime.foreign_module_command. The package is asked, not
its metadata nor its script: in extension mode (jupyter_server 2) `jupyterhub-singleuser
--version` prints jupyter-server's version. Exits 1, saying why on stderr, when MODULE
does not import. Standard library only, Python 3.7 syntax.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional


def version(module: Optional[str] = None) -> str:
    if module is None:
        return ".".join(str(n) for n in sys.version_info[:3])
    return str(getattr(importlib.import_module(module), "__version__", ""))


def main(argv: Optional[list[str]] = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    try:
        found = version(*words[:1])
    except Exception as exc:  # anything the package raises on import: it does not run
        sys.stderr.write(f"nbinit: cannot import {words[0]}: {type(exc).__name__}: {exc}\n")
        return 1
    sys.stdout.write(found + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
