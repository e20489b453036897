"""A JupyterHub spawner that starts each server as a real container on the host's network.

LocalProcessSpawner whose process is `podman run --rm --network=host ... IMAGE CMD`: the hub
polls that podman process as its child, and stops the container with `podman stop` (SIGTERM
to PID 1, tini, then SIGKILL after the grace time). The container starts the way KubeSpawner
starts a pod with z2jh's `singleuser.uid: 0`: as root, with the hub's environment (passed by
name, so no token shows in the host's process list) and the marker volume.

Configured by `hubconfig.podman_spawner(...)`; used by tests/e2e/hub_driver.py --podman and
by the hubs of tests/container.
"""

from __future__ import annotations

import asyncio
import os
import subprocess

from jupyterhub.spawner import LocalProcessSpawner
from jupyterhub.utils import random_port
from traitlets import Bool, List, Unicode


class PodmanSpawner(LocalProcessSpawner):
    image = Unicode(help="The image to run.").tag(config=True)
    podman_flags = List(Unicode(), help="Extra `podman run` flags (the probed ones).").tag(
        config=True
    )
    volumes = List(Unicode(), help="`--volume` values; {username} is the user's name.").tag(
        config=True
    )
    name_template = Unicode(
        "nbinit-hub-{pid}-{username}", help="The container's name; {pid} is the hub's pid."
    ).tag(config=True)
    remove = Bool(True, help="`--rm`; False keeps an exited container for the test.").tag(
        config=True
    )

    @property
    def container_name(self) -> str:
        return self.name_template.format(pid=os.getpid(), username=self.user.name)

    def make_preexec_fn(self, name):
        return None  # podman runs as the hub's user (root); the container drops root itself

    def user_env(self, env):
        return env  # the user has no account on the host, only in the container

    async def start(self):
        if self.port == 0:
            self.port = random_port()
        env = self.get_env()
        argv = ["podman", "run", *(["--rm"] if self.remove else []), "--name", self.container_name]
        argv += ["--network=host"]
        argv += ["--user", "0", *self.podman_flags]
        for name in sorted(env):
            if name.startswith(("JUPYTERHUB_", "JPY_")) or name in self.environment:
                argv += ["--env", name]  # the value comes from podman's own environment
        for volume in self.volumes:
            argv += ["--volume", volume.format(username=self.user.name)]
        argv += [self.image, *self.cmd, *self.get_args()]
        self.log.info("Spawning %s", " ".join(argv))
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, start_new_session=True)
        self.pid = self.proc.pid
        return (self.ip or "127.0.0.1", self.port)

    async def stop(self, now=False):
        if await self.poll() is None:
            grace = "0" if now else str(self.term_timeout)
            await asyncio.to_thread(
                subprocess.run,
                ["podman", "stop", "--time", grace, self.container_name],
                capture_output=True,
                timeout=60,
            )
        await super().stop(now=True)  # reaps the podman client (or kills it if it hangs)
