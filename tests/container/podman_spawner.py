"""A JupyterHub spawner that starts each server as a podman container, the way KubeSpawner
starts a pod: the image's own ENTRYPOINT, `cmd` as the container's args, `--user 0`, the
hub's environment (and nothing of the hub's own PATH), the marker as a volume, and the
host's network so the server and the hub meet on loopback. Loaded by the hub's config in
tests/container/test_hub_spawn.py.
"""

from __future__ import annotations

import asyncio
import os

from jupyterhub.spawner import Spawner
from jupyterhub.utils import random_port
from traitlets import List, Unicode


class PodmanSpawner(Spawner):
    image = Unicode(help="the image to run").tag(config=True)
    run_flags = List(Unicode(), help="podman run flags this host needs").tag(config=True)
    volumes = List(Unicode(), help="--volume arguments (the marker, the state)").tag(config=True)

    @property
    def container_name(self) -> str:
        return f"nbinit-hub-{os.getpid()}-{self.user.name}"  # the test knows the hub's pid

    async def podman(self, *args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            "podman",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode or 0, output.decode(errors="replace")

    async def start(self) -> tuple[str, int]:
        self.port = random_port()
        await self.podman("rm", "--force", "--time", "0", self.container_name)
        args = ["run", "--detach", "--name", self.container_name, "--network=host"]
        args += [*self.run_flags, "--user", "0"]
        for key, value in self.get_env().items():
            args += ["--env", f"{key}={value}"]
        for volume in self.volumes:
            args += ["--volume", volume]
        code, output = await self.podman(*args, self.image, *self.cmd, *self.get_args())
        if code != 0:
            raise RuntimeError(f"podman run failed: {output[-2000:]}")
        return ("127.0.0.1", self.port)

    async def poll(self) -> int | None:
        code, output = await self.podman(
            "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", self.container_name
        )
        if code != 0:
            return 0
        running, exit_code = output.split()
        return None if running == "true" else int(exit_code)

    async def stop(self, now: bool = False) -> None:
        await self.podman("stop", "--time", "0" if now else "5", self.container_name)
