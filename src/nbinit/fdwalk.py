"""Walks over a whole directory tree by fds, never following a link: re-own a home
(`chown_tree`), copy the image's skeleton into one (`copy_tree`), remove a leftover
(`remove_tree`).

The tree half of `privilege`, on its no-follow opens: each walk is one loop over a stack
of directory fds, never recursion, and stops MAX_WALK_DEPTH levels down.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from typing import Callable, Optional

from nbinit.privilege import open_directory_nofollow

# A walk keeps two fds per level open (the directory and its listing); homes nest far less.
MAX_WALK_DEPTH = 128
MAX_REMOVED = 1_000_000  # entries remove_tree looks at: a large clone leftover, many times


def _too_deep() -> OSError:
    return OSError(errno.ELOOP, f"directories nested deeper than {MAX_WALK_DEPTH} levels")


def chown_tree(
    top_fd: int, uid: int, gid: int, time_left: Callable[[], float]
) -> tuple[int, bool, int]:
    """Recursive chown inside an opened directory: (entries changed, finished in time,
    files left because they have more than one hard link).

    One loop over a stack of directory fds, never recursion (os.fwalk recursed per level:
    a home nested a few thousand levels deep raised RecursionError in root). Each
    directory is opened relative to its parent's fd without following symlinks, and chown
    acts on names relative to those fds with follow_symlinks=False, so a symlink the user
    swaps in is re-owned itself, never its target. It stays on the home's file system,
    never re-owns a file with several hard links (the user may have linked /etc/shadow
    in), and deeper than MAX_WALK_DEPTH it stops with OSError(ELOOP).
    """
    device = os.fstat(top_fd).st_dev
    changed = linked = 0
    first = os.dup(top_fd)
    stack: list[tuple[int, Iterator[os.DirEntry[str]]]] = [(first, os.scandir(first))]
    try:
        while stack:
            dir_fd, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                _close_level(dir_fd, entries)
                continue
            if time_left() <= 0:
                return changed, False, linked
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if info.st_dev != device:
                continue  # a mount inside the home: not ours to re-own
            if (info.st_uid, info.st_gid) != (uid, gid):
                if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                    linked += 1
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.chown(entry.name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
                        changed += 1
            if stat.S_ISDIR(info.st_mode):
                if len(stack) >= MAX_WALK_DEPTH:
                    raise _too_deep()
                try:
                    sub = open_directory_nofollow(entry.name, dir_fd=dir_fd)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # gone, or swapped for something else since the stat
                except OSError as exc:
                    if exc.errno != errno.ELOOP:  # ELOOP: swapped for a symlink: not followed
                        raise
                    continue
                stack.append((sub, os.scandir(sub)))
        return changed, True, linked
    finally:
        for dir_fd, entries in stack:
            _close_level(dir_fd, entries)


def _close_level(dir_fd: int, entries: Iterator[os.DirEntry[str]]) -> None:
    close = getattr(entries, "close", None)
    if close:
        close()
    os.close(dir_fd)


def remove_tree(path: str) -> None:
    """Best-effort `rm -rf path` by one loop over a stack of fds: no recursion, no link followed.

    shutil.rmtree recurses per level (RecursionError on a tree a user nested a few thousand
    levels deep, which ignore_errors does not catch). Deeper than MAX_WALK_DEPTH, past
    MAX_REMOVED entries, or whatever cannot be removed, is left where it is.
    """
    try:
        top = open_directory_nofollow(path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)  # a file or a symlink: removed itself, never its target
        return
    # Each level: (its fd, its listing, the fd and name to rmdir it by once it is empty).
    try:
        listing = os.scandir(top)
    except OSError:
        os.close(top)
        return
    stack: list[tuple[int, Iterator[os.DirEntry[str]], Optional[tuple[int, str]]]] = [
        (top, listing, None)
    ]
    seen = 0
    try:
        while stack:
            dir_fd, entries, parent = stack[-1]
            seen += 1
            entry = next(entries, None) if seen <= MAX_REMOVED else None
            if entry is None:
                stack.pop()
                _close_level(dir_fd, entries)
                if parent:
                    with contextlib.suppress(OSError):
                        os.rmdir(parent[1], dir_fd=parent[0])
                continue
            with contextlib.suppress(OSError):
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.name, dir_fd=dir_fd)
                elif len(stack) < MAX_WALK_DEPTH:
                    sub = open_directory_nofollow(entry.name, dir_fd=dir_fd)
                    try:
                        stack.append((sub, os.scandir(sub), (dir_fd, entry.name)))
                    except OSError:
                        os.close(sub)
    finally:
        for dir_fd, entries, _ in reversed(stack):
            _close_level(dir_fd, entries)
        if not stack:
            with contextlib.suppress(OSError):
                os.rmdir(path)


def is_public_image_entry(info: os.stat_result) -> bool:
    """Root's and readable by everyone: a regular file (o+r) or a directory (o+rx, writable
    by root alone, so nobody else can swap what is in it). Never a link, device or fifo."""
    if info.st_uid != 0:
        return False
    if stat.S_ISREG(info.st_mode):
        return bool(info.st_mode & 0o004)
    if stat.S_ISDIR(info.st_mode):
        return info.st_mode & 0o005 == 0o005 and not info.st_mode & 0o022
    return False


def copy_tree(
    source: str, dest_fd: int, uid: int, gid: int, time_left: Callable[[], float]
) -> tuple[int, bool]:
    """Copy the image's skeleton into an empty root-only directory, owned by uid:gid.

    Only what the user could read anyway is copied (is_public_image_entry): a root-only
    file, a link (to /etc/shadow, say) or a user's file in the skeleton is skipped. The
    destination is reached only through fds of directories created here. Other file
    systems (a volume mounted inside the skeleton) are skipped; nothing is moved or
    deleted. One loop over a stack, never recursion; each directory gets its owner and
    mode once its contents are in, also when the copy stops early. Returns (entries
    copied, finished in time).
    """
    device = os.stat(source).st_dev
    copied = 0
    # Each level: (its fd in the home, the source listing, its mode; None for the top).
    stack: list[tuple[int, Iterator[os.DirEntry[str]], Optional[int]]] = [
        (dest_fd, os.scandir(source), None)
    ]
    try:
        while stack:
            target_fd, entries, _ = stack[-1]
            entry = next(entries, None)
            if entry is None:
                _finish_copied_dir(stack.pop(), uid, gid)
                continue
            if time_left() <= 0:
                return copied, False
            info = entry.stat(follow_symlinks=False)
            mode = stat.S_IMODE(info.st_mode) & 0o777  # never copy setuid/setgid bits
            if info.st_dev != device or not is_public_image_entry(info):
                continue
            if stat.S_ISDIR(info.st_mode):
                if len(stack) > MAX_WALK_DEPTH:
                    raise _too_deep()
                os.mkdir(entry.name, 0o700, dir_fd=target_fd)
                sub = open_directory_nofollow(entry.name, dir_fd=target_fd)
                try:
                    listing = os.scandir(entry.path)
                except OSError:
                    os.close(sub)
                    raise
                stack.append((sub, listing, mode))
            elif not _copy_file(entry.path, entry.name, target_fd, uid, gid, mode, info):
                continue
            copied += 1
        return copied, True
    finally:
        while stack:
            with contextlib.suppress(OSError):
                _finish_copied_dir(stack.pop(), uid, gid)


def _finish_copied_dir(
    level: tuple[int, Iterator[os.DirEntry[str]], Optional[int]], uid: int, gid: int
) -> None:
    """A copied directory is done: close its listing; hand it over (the top is the caller's)."""
    fd, entries, mode = level
    close = getattr(entries, "close", None)
    if close:
        close()
    if mode is None:
        return
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _copy_file(
    path: str, name: str, dest_fd: int, uid: int, gid: int, mode: int, info: os.stat_result
) -> bool:
    """Copy one file; False (nothing written) when what was opened is not what was checked."""
    source = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        opened = os.fstat(source)
        if not is_public_image_entry(opened) or not stat.S_ISREG(opened.st_mode):
            return False
        target = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dest_fd,
        )
        try:
            while os.sendfile(target, source, None, 1 << 20) > 0:
                pass
            os.fchown(target, uid, gid)
            os.fchmod(target, mode)
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(target)
    finally:
        os.close(source)
    return True
