"""Reading what root may trust: a config file no other user could have written or planted.

The baked config, the admin config given as a path, the last good copy and the cached hub
version are all read through here, by root, before any user code runs.
"""

from __future__ import annotations

import os
import stat
from typing import Optional

from nbinit.errors import NbinitError

FIX_REGULAR = "make it a regular root-owned file"


def read_trusted_file(path: str, max_bytes: int, what: str = "config") -> Optional[bytes]:
    """Read root-trusted config only from a file no other user could have written or planted.

    The file and its directory must belong to root (or to us when not root) and not be
    writable by group or others; a symlink at the last component is refused. None when
    the file does not exist. Reads at most max_bytes + 1 so callers can see it is too big.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = "a symlink, not trusted" if os.path.islink(path) else exc.strerror
        raise NbinitError(f"cannot read {what} {path}: {problem}", FIX_REGULAR) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        parent = os.stat(os.path.dirname(os.path.abspath(path)))
        if not stat.S_ISREG(info.st_mode):
            raise NbinitError(f"{what} {path} is not a regular file", FIX_REGULAR)
        for kind, st in (("file", info), ("directory", parent)):
            if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
                raise NbinitError(
                    f"{what} {path}: the {kind} is writable by a non-root user, not trusted",
                    "make it root-owned and not group/other-writable",
                )
        return handle.read(max_bytes + 1)
