"""Ask a framework for its GPUs, in the image's Python, as the user: one line of JSON.

Run by nbinit.gpu.probe_framework through runtime.foreign_module_command, as
`python DIR nbinit.frameworkprobe NAME`: nbinit's location is on sys.path only while this
module is imported, so the framework is the image's own. Standard library only, and Python 3.7
syntax: the image's interpreter may be older than nbinit's. Prints
`NBINIT-PROBE {...}` ({"error": ...} when the framework is not importable); a crash of
the framework itself is the parent's to report from the exit status and stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Optional

PREFIX = "NBINIT-PROBE "


def torch() -> dict[str, Any]:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"version": torch.__version__, "count": count, "cuda": torch.version.cuda}


def jax() -> dict[str, Any]:
    import jax

    try:
        count = len(jax.devices("gpu"))
    except RuntimeError:
        count = 0
    return {"version": jax.__version__, "count": count}


def tensorflow() -> dict[str, Any]:
    import tensorflow as tf

    return {"version": tf.__version__, "count": len(tf.config.list_physical_devices("GPU"))}


PROBES: dict[str, Callable[[], dict[str, Any]]] = {
    "torch": torch,
    "jax": jax,
    "tensorflow": tensorflow,
}


def main(argv: Optional[list[str]] = None) -> int:
    name = (sys.argv[1:] if argv is None else argv)[0]
    try:
        out = PROBES[name]()
    except ImportError as exc:
        out = {"error": f"not importable ({exc})"}
    sys.stdout.write(PREFIX + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
