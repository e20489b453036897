"""Real containers for tests: `podman run` with the probed flags, observed from the host.

A `Container` is started detached; the test reads its log (`lines("WARNING")`), its
processes as the host's /proc sees them (rootful podman maps no ids, so a uid read there
is the uid inside), and files inside it with `exec`. Every container the fixture started is
removed at the end of the test. The spawner's environment (`hubconfig.hub_env`) and a stand-in
hub API (the `hub_api` fixture) let `jupyterhub-singleuser` listen without a whole JupyterHub.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from helpers import images
from helpers.net import request
from helpers.wait import wait_until

_names = itertools.count()


@dataclass
class Process:
    """One process of a container, as the host's /proc shows it."""

    pid: int
    uid: list[str]
    gid: list[str]
    groups: list[str]
    umask: str
    cmdline: list[str]
    environ: dict[str, str] = field(repr=False)  # long, and a failure message shows the rest

    def runs(self, program: str) -> bool:
        """The process is program itself or a script of that name run by an interpreter
        (`python3 /opt/conda/bin/jupyterhub-singleuser`), not a wrapper naming it later."""
        return any(Path(part).name == program for part in self.cmdline[:2])


def read_process(pid: int) -> Optional[Process]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None  # gone meanwhile
    return Process(
        pid,
        status["Uid"].split(),
        status["Gid"].split(),
        status.get("Groups", "").split(),
        status.get("Umask", ""),
        [part.decode(errors="replace") for part in cmdline if part],
        dict(part.decode(errors="replace").split("=", 1) for part in environ if b"=" in part),
    )


@dataclass
class Container:
    name: str
    image: str
    started: float = field(default_factory=time.monotonic)

    def podman(self, *args: str, timeout: float = 60, check: bool = True):
        return images.podman(*args, timeout=timeout, check=check)

    def logs(self) -> str:
        """Everything the container wrote, stdout and stderr, in order, across restarts."""
        result = subprocess.run(
            ["podman", "logs", self.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one pipe keeps the two streams' order
            text=True,
            timeout=60,
        )
        return result.stdout

    def lines(self, level: str, since: int = 0) -> list[str]:
        """Log lines of one level (start.sh's and nbinit's share the format LEVEL[...])."""
        return [line for line in self.logs()[since:].splitlines() if line.startswith(level + "[")]

    def state(self) -> dict:
        result = self.podman("inspect", "--format", "{{json .State}}", self.name)
        return json.loads(result.stdout)

    def host_pid(self) -> int:
        """PID 1 of the container, as the host numbers it (0 when it is not running)."""
        return int(self.state()["Pid"])

    def processes(self) -> list[Process]:
        """PID 1 and all its descendants."""
        root = self.host_pid()
        found, todo = [], [root] if root else []
        while todo:
            pid = todo.pop()
            process = read_process(pid)
            if process is None:
                continue
            found.append(process)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    todo += [int(child) for child in task.read_text().split()]
        return found

    def running(self) -> bool:
        return bool(self.state().get("Running"))

    def log_tail(self) -> str:
        return f"{self.name}'s log:\n{self.logs()[-6000:]}"

    def wait_for_process(self, match: Callable[[Process], bool], timeout: float = 60.0) -> Process:
        """The first process that matches, polled every 20 ms; fails with the log if none."""
        found = wait_until(
            f"a matching process in {self.name}",
            self.processes,
            lambda processes: any(match(process) for process in processes),
            timeout=timeout,
            interval=0.02,
            alive=self.running,
            context=self.log_tail,
        )
        return next(process for process in found if match(process))

    def wait_http(self, url: str, timeout: float = 60.0) -> dict:
        """Poll url until it answers 200 with JSON; fails with the log if it never does."""

        def answer() -> tuple[int, Any]:
            status, _, body, _ = request(url, timeout=2)
            return status, json.loads(body) if status == 200 else body[-300:]

        return wait_until(
            f"{url} to answer 200 with JSON",
            answer,
            lambda seen: seen[0] == 200,
            timeout=timeout,
            ignore=(OSError, ValueError),
            alive=self.running,
            context=self.log_tail,
        )[1]

    def exec(self, *argv: str, user: str = "0") -> str:
        return self.podman("exec", "--user", user, self.name, *argv).stdout

    def wait_exit(self, timeout: float = 60.0) -> int:
        result = self.podman("wait", self.name, timeout=timeout)
        return int(result.stdout.strip().splitlines()[-1])

    def stop(self, timeout: int = 10) -> None:
        self.podman("stop", "--time", str(timeout), self.name, timeout=timeout + 30)

    def start(self) -> None:
        self.started = time.monotonic()
        self.podman("start", self.name)

    def remove(self) -> None:
        self.podman("rm", "--force", "--time", "0", self.name, check=False)


def run(
    image: str,
    *command: str,
    env: Optional[dict[str, str]] = None,
    user: Optional[str] = None,
    volumes: tuple[str, ...] = (),
    entrypoint: Optional[str] = None,
    network: str = "host",
    extra: tuple[str, ...] = (),
) -> Container:
    """`podman run --detach` with the probed flags; user None keeps the image's USER."""
    name = f"nbinit-test-{os.getpid()}-{next(_names)}"
    args = ["run", "--detach", "--name", name, f"--network={network}", *images.podman_run_flags()]
    if user is not None:
        args += ["--user", user]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    for volume in volumes:
        args += ["--volume", volume]
    container = Container(name, image)
    images.podman(*args, *extra, image, *command)
    return container
