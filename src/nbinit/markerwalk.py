"""The marker walk, run by root in a child process: `python -m nbinit.markerwalk PATH PREFIX`.

Every component of PATH below the trusted PREFIX (the admin's /s) is lstat'ed: the user
controls /s/<user>, so a symlink anywhere there is refused, never followed. It runs in a
child because a hung NFS stat blocks in D-state, where no signal reaches it; the parent
(nbinit.accounts.find_marker) kills it at its timeout. Prints one line, `STATE PATH
[WHY]`; always exits 0. Standard library only.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Optional


def walk(path: str, prefix: str) -> str:
    """The answer line: absent, error, symlink, notdir or present, and where."""
    current = prefix.rstrip("/")
    for part in (c for c in path[len(prefix) :].split("/") if c):
        current = f"{current}/{part}"
        try:
            status = os.lstat(current)
        except FileNotFoundError:
            return f"absent {current}"
        except OSError as exc:
            return f"error {current} {exc.strerror}"
        if stat.S_ISLNK(status.st_mode):
            return f"symlink {current}"
        if not stat.S_ISDIR(status.st_mode):
            return f"notdir {current}"
    return f"present {current}"


def main(argv: Optional[list[str]] = None) -> int:
    path, prefix = (sys.argv[1:] if argv is None else argv)[:2]
    print(walk(path, prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
