"""The user's ~/.nbinit.yaml: read and checked as the user, in a child under hard limits.

Root never parses what a user wrote. `python -I -m nbinit.dotfile PATH` runs as the user
(privilege.run_as_user: the user's groups, a clean environment, a wall-clock timeout on
its process group), caps its own CPU time and address space before it reads a byte, reads
the file without following a symlink, parses it with the loader's structural caps and
validates it, and prints one JSON object: `{"repos": [...], "warnings": [...]}` or
`{"error": ..., "fix": ...}`. Root reads a bounded reply and checks it again against the
dotfile schema, so even a child that went wrong hands root nothing it would not accept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Optional

from nbinit.context import Identity
from nbinit.errors import NbinitError

NAME = ".nbinit.yaml"
SHOWN = f"~/{NAME}"
CPU_SECONDS = 2  # parsing 64 KiB takes milliseconds; the wall clock is the deadline's
ADDRESS_SPACE = 96 << 20  # the child peaks near 12 MB on the largest dotfile allowed
MAX_REPLY = 1 << 20  # 100 repos of bounded strings, as JSON, fit many times over
FIX = f"fix {SHOWN} (`nbinit config validate --dotfile ~/{NAME}` shows what is wrong)"


def read(identity: Optional[Identity], home: str, timeout: float) -> tuple[list[Any], list[str]]:
    """The repos the user's dotfile declares and its warnings; ([], []) when there is none.

    NbinitError (naming the file and the fix) when it is unreadable, invalid, or takes
    more than its limits: the caller reports it and goes on with the admin's repos.
    """
    from nbinit import config, privilege, runtime, schema

    path = os.path.join(home, NAME)
    if not os.path.lexists(path):
        # lstat follows nothing: the common case (no dotfile) costs no process as the user.
        return [], []
    if timeout <= 0:
        raise NbinitError(f"{SHOWN} was not read: the deadline has passed", FIX)
    try:
        result = privilege.run_as_user(
            identity,
            [*runtime.module_command("nbinit.dotfile"), path, str(CPU_SECONDS), str(ADDRESS_SPACE)],
            env=privilege.clean_environment(identity, dict(os.environ)),
            timeout=timeout,
            cwd="/",
        )
    except subprocess.TimeoutExpired:
        raise NbinitError(f"{SHOWN} took longer than {timeout:.1f}s to read", FIX) from None
    except OSError as exc:
        raise NbinitError(f"cannot read {SHOWN}: {exc.strerror}", FIX) from None
    reply: Any = None
    if result.returncode == 0 and len(result.stdout) <= MAX_REPLY:
        try:
            reply = config.parse_json(result.stdout, SHOWN)
        except NbinitError:
            reply = None
    if not isinstance(reply, dict):
        limits = f"{CPU_SECONDS} s of CPU, {ADDRESS_SPACE >> 20} MB"
        raise NbinitError(f"{SHOWN} could not be read within its limits ({limits})", FIX)
    if "error" in reply:
        raise NbinitError(str(reply.get("error")), str(reply.get("fix", FIX)))
    repos, warnings = reply.get("repos"), reply.get("warnings")
    checked, _ = config.check_config({"repos": repos}, SHOWN, schema.DOTFILE)
    shown = [str(w) for w in warnings] if isinstance(warnings, list) else []
    return checked.get("repos", []), shown


def _limit_self(cpu_seconds: int, address_space: int) -> None:
    """Hard limits on this process before it reads anything the user wrote."""
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def check(path: str, address_space: int = ADDRESS_SPACE) -> dict[str, Any]:
    """In the child: the reply for the file at path."""
    from nbinit import config, privilege

    try:
        data = privilege.read_regular_file(path, config.MAX_DOTFILE_BYTES, follow=False)
        if data is None:
            return {"repos": [], "warnings": []}
        repos, warnings = config.parse_dotfile(data, SHOWN)
    except NbinitError as exc:
        return {"error": exc.problem, "fix": exc.fix}
    except MemoryError:
        return {"error": f"{SHOWN} needs more than {address_space >> 20} MB to read", "fix": FIX}
    return {"repos": repos, "warnings": warnings}


def main(argv: list[str]) -> int:
    """`python -m nbinit.dotfile PATH CPU_SECONDS ADDRESS_SPACE`: root picks the limits."""
    path, cpu_seconds, address_space = argv[0], int(argv[1]), int(argv[2])
    _limit_self(cpu_seconds, address_space)
    sys.stdout.write(json.dumps(check(path, address_space), ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
