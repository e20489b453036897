"""The per-repo lock, held across pods that share the home over NFS."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from typing import Any, Optional

from nbinit import fdwalk

HEARTBEAT = 5.0  # seconds between touches of a held lock's owner file
STALE = 60.0  # a lock whose owner file is this much older than a fresh file is dead


def _process_start(pid: int) -> str:
    """The process's start time (clock ticks since boot): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


class RepoLock:
    """A lock that holds across hosts sharing the home over NFS.

    mkdir is atomic on NFS, so the lock is a directory; its `owner` file names the host,
    pid, process start time and a token, and a heartbeat thread touches it every few
    seconds. A lock is stale only if its owner is a dead process on this host, or its
    heartbeat is STALE seconds older than a file we touch now (both mtimes come from the
    same file server, so clocks that disagree between pods do not matter). Breaking one
    takes a second lock (`.break`) and re-reads the token under it, so two breakers can
    never remove a lock that a third has just taken, and a live owner is never stolen from.
    """

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, name + ".lock")
        # What uuid4() and socket.gethostname() return, without importing either module
        # into the worker's start.
        self.token = os.urandom(16).hex()
        self.host = os.uname().nodename
        self.held = False
        self.lost = False

    def owner(self) -> Optional[dict[str, Any]]:
        try:
            with open(os.path.join(self.path, "owner")) as handle:
                data = json.load(handle)
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def _now_on_disk(self) -> float:
        probe = os.path.join(self.directory, f".clock-{self.host}-{os.getpid()}")
        with open(probe, "w"):
            pass
        mtime = os.stat(probe).st_mtime
        with contextlib.suppress(OSError):
            os.unlink(probe)
        return mtime

    def _age(self, path: str) -> float:
        try:
            return self._now_on_disk() - os.stat(path).st_mtime
        except FileNotFoundError:
            return 0.0

    def is_stale(self, owner: Optional[dict[str, Any]]) -> bool:
        if owner is None:  # between mkdir and writing owner, or a crash right there
            return self._age(self.path) > STALE
        if owner.get("host") == self.host:
            pid = int(owner.get("pid", 0))
            return not pid or _process_start(pid) != owner.get("start")
        return self._age(os.path.join(self.path, "owner")) > STALE

    def acquire(self) -> Optional[str]:
        """None when held now; else who holds it, in words."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for _ in range(2):
            try:
                os.mkdir(self.path, 0o700)
            except FileExistsError:
                owner = self.owner()
                if self.is_stale(owner) and self._break(owner):
                    continue
                who = owner or {}
                return f"another nbinit (host {who.get('host', '?')}, pid {who.get('pid', '?')})"
            info = {
                "host": self.host,
                "pid": os.getpid(),
                "start": _process_start(os.getpid()),
                "token": self.token,
                "since": time.time(),
            }
            tmp = os.path.join(self.path, f"owner.{self.token}")
            with open(tmp, "w") as handle:
                json.dump(info, handle)
            os.replace(tmp, os.path.join(self.path, "owner"))
            self.held = True
            return None
        return "another nbinit that just took it"

    def _break(self, seen: Optional[dict[str, Any]]) -> bool:
        breaker = self.path + ".break"
        try:
            os.mkdir(breaker)
        except FileExistsError:
            if self._age(breaker) > STALE:
                with contextlib.suppress(OSError):
                    os.rmdir(breaker)
            return False
        try:
            now = self.owner()
            if (now or {}).get("token") != (seen or {}).get("token") or not self.is_stale(now):
                return False
            graveyard = f"{self.path}.stale-{self.token}"
            os.rename(self.path, graveyard)
            fdwalk.remove_tree(graveyard)
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(breaker)

    def heartbeat(self) -> None:
        if not self.held:
            return
        owner = self.owner()
        if owner is None or owner.get("token") != self.token:
            self.lost = True  # broken by someone who judged us dead: stop before writing
            return
        with contextlib.suppress(OSError):
            os.utime(os.path.join(self.path, "owner"))

    def release(self) -> None:
        if self.held and not self.lost:
            # Renamed first, so nobody ever sees the lock without its owner file.
            graveyard = f"{self.path}.done-{self.token}"
            with contextlib.suppress(OSError):
                os.rename(self.path, graveyard)
                try:  # what acquire() left in it: the owner file alone
                    os.unlink(os.path.join(graveyard, "owner"))
                    os.rmdir(graveyard)
                except OSError:
                    fdwalk.remove_tree(graveyard)
        self.held = False


class Heartbeats:
    """One thread that keeps every lock this worker holds alive."""

    def __init__(self) -> None:
        self.locks: set[RepoLock] = set()
        self.mutex = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(HEARTBEAT):
            with self.mutex:
                locks = list(self.locks)
            for lock in locks:
                lock.heartbeat()

    def add(self, lock: RepoLock) -> None:
        with self.mutex:
            self.locks.add(lock)

    def remove(self, lock: RepoLock) -> None:
        with self.mutex:
            self.locks.discard(lock)


def locks_directory(home: str) -> str:
    from nbinit.status import user_cache_dir

    return os.path.join(user_cache_dir(home), "locks")


def lock_name(dest: str) -> str:
    import hashlib

    readable = re.sub(r"[^A-Za-z0-9._-]", "_", dest)[:60]
    return f"{readable}-{hashlib.sha256(dest.encode()).hexdigest()[:10]}"
