"""A clone's .git read as files, without starting git: refs, HEAD, the origin, the index.

Each reader answers only what it is sure of, in the plain forms git and nbinit's own
clones write, and says "ask git" (None, or '') otherwise; every read is bounded. They save
a restart with nothing changed one git process per question per repo.
"""

from __future__ import annotations

import os
import re
from typing import Optional


def read_ref(gitdir: str, name: str) -> str:
    """A ref's sha read from the files (loose, then packed-refs); '' when not found there."""
    for _ in range(5):  # follow a symbolic ref (HEAD -> refs/heads/main) a few levels
        try:
            with open(os.path.join(gitdir, name)) as handle:
                text = handle.read().strip()
        except OSError:
            break
        if not text.startswith("ref: "):
            return text if re.fullmatch(r"[0-9a-f]{40}", text) else ""
        name = text[5:]
    try:
        with open(os.path.join(gitdir, "packed-refs")) as handle:
            for line in handle:
                sha, _, ref = line.strip().partition(" ")
                if ref == name and re.fullmatch(r"[0-9a-f]{40}", sha):
                    return sha
    except OSError:
        pass
    return ""


def current_branch(gitdir: str) -> Optional[str]:
    """The checked-out branch from .git/HEAD; None when HEAD is detached."""
    try:
        with open(os.path.join(gitdir, "HEAD")) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return text[len("ref: refs/heads/") :] if text.startswith("ref: refs/heads/") else None


MAX_CONFIG_BYTES = 1 << 20  # a clone's .git/config is a few hundred bytes
MAX_INDEX_BYTES = 8 << 20  # an index read in Python; a larger one is left to git
MAX_INDEX_ENTRIES = 5000  # beyond this git's own lstat loop is faster than a process start


def read_origin_url(gitdir: str) -> Optional[str]:
    """remote.origin.url from .git/config when the file says it plainly, else None (ask git).

    Saves a git process per repo on every restart. Only the plain form nbinit's own clones
    write is read here: one `[remote "origin"]` section with one unquoted `url = ...`;
    includes, quoting, escapes, continuations, comments after a value or a second value
    are all left to `git config`, so this never reads a value git would not.
    """
    try:
        with open(os.path.join(gitdir, "config"), "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_CONFIG_BYTES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    found: list[str] = []
    in_origin = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            header = re.fullmatch(r'\[([A-Za-z0-9.-]+)(?:\s+"([^"\\]*)")?\]', line)
            if header is None:  # a key on the header's line, escapes, old [remote.origin]
                return None
            section = header.group(1).lower()
            if section.startswith("include"):
                return None
            in_origin = section == "remote" and header.group(2) == "origin"
            continue
        if not in_origin:
            continue
        key, equals, value = line.partition("=")
        if key.strip().lower() != "url":
            continue
        value = value.strip()
        if not equals or not value or any(c in value for c in '"\\;#') or raw.endswith("\\"):
            return None
        found.append(value)
    return found[0] if len(found) == 1 else None


def index_paths(gitdir: str) -> Optional[list[str]]:
    """Every path in .git/index (versions 2 and 3, SHA-1), or None when git must be asked.

    Lets a restart with nothing changed tell that no tracked file was deleted without a
    git process. Anything this reader is not sure of (version 4, a split or sparse index,
    skip-worktree or intent-to-add entries, conflicts, an index that does not add up to
    its own length) returns None, and the caller asks git.
    """
    import struct

    try:
        with open(os.path.join(gitdir, "index"), "rb") as handle:
            data = handle.read(MAX_INDEX_BYTES + 1)
    except FileNotFoundError:
        return []  # a clone of an empty repo, or one whose index git has yet to write
    except OSError:
        return None
    if len(data) > MAX_INDEX_BYTES or len(data) < 32 or data[:4] != b"DIRC":
        return None
    version, count = struct.unpack(">II", data[4:12])
    if version not in (2, 3) or count > MAX_INDEX_ENTRIES:
        return None
    paths = []
    pos = 12
    for _ in range(count):
        fixed = 62  # stat data, mode, sizes, a SHA-1 and the flags
        if pos + fixed > len(data):
            return None
        (flags,) = struct.unpack(">H", data[pos + 60 : pos + 62])
        if flags & 0x3000:  # a merge stage: a conflict git must show
            return None
        if flags & 0x4000:  # extended flags: skip-worktree, intent-to-add
            if version < 3:
                return None
            (extended,) = struct.unpack(">H", data[pos + 62 : pos + 64])
            if extended:
                return None
            fixed += 2
        end = data.find(b"\0", pos + fixed)
        if end < 0:
            return None
        name = data[pos + fixed : end]
        if flags & 0xFFF not in (0xFFF, len(name)):
            return None
        length = (fixed + len(name) + 8) & ~7  # NUL-padded to a multiple of 8
        padding = data[end : pos + length]
        if not name or name.startswith(b"/") or padding.strip(b"\0") or pos + length > len(data):
            return None
        try:
            paths.append(name.decode("utf-8"))
        except UnicodeDecodeError:
            return None
        pos += length
    while len(data) - pos > 20:  # extensions, then the SHA-1 of it all
        signature = data[pos : pos + 4]
        if signature in (b"link", b"sdir") or pos + 8 > len(data):
            return None
        (size,) = struct.unpack(">I", data[pos + 4 : pos + 8])
        pos += 8 + size
    return paths if len(data) - pos == 20 else None
