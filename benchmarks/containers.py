"""Real containers: time from `podman run` to the server process running as the user.

For each image family (tests/helpers/images.py) the image plus the one COPY line is started
as KubeSpawner starts a pod (`--user 0`, the hub's environment, NB_UID/NB_GID, the marker
volume), and the clock stops when the host's /proc shows the server's process with alice's
uid. The baseline, in the same run and alternating with it, is the same image without
nbinit started straight as that uid (`--user 4321:4321`: the runtime's own switch, no
account, no home). nbinit's own share is the `ready in` figure of its summary line (from
its start to the exec of the server). Medians of --runs starts each; images are built first
(cached), so this measures starts, not builds.

    .venv/bin/python benchmarks/containers.py [--runs N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import containers, images  # noqa: E402
from helpers.hubconfig import hub_env  # noqa: E402
from helpers.net import free_port  # noqa: E402

UID = "4321"
# The server program, and the command with nbinit (z2jh's singleuser.cmd); the baseline runs
# the program alone. NGC has no jupyterhub (issue 11 brings one): its own JupyterLab.
SINGLEUSER = ["jupyterhub-singleuser"]
SERVERS = {
    "docker-stacks": ("jupyterhub-singleuser", SINGLEUSER),  # start.sh's hook hands over
    "ngc": ("jupyter-lab", ["jupyter-lab", "--no-browser"]),  # the entrypoint.d part does
    "plain-python": ("jupyterhub-singleuser", ["nbinit", "start", "--", *SINGLEUSER]),
}
READY = re.compile(r"nbinit: ready in ([0-9.]+)s")


def start_once(tag: str, program: str, command: list[str], marker: Path, nbinit: bool):
    """Seconds from `podman run` to `program` running as UID, and nbinit's `ready in`."""
    env = hub_env("alice", "http://127.0.0.1:9/hub/api", free_port())
    env.update(NB_UID=UID, NB_GID=UID)
    if nbinit:
        options = {"user": "0", "volumes": (f"{marker}:/s/alice/jupyterhub",)}
    else:
        options = {"user": f"{UID}:{UID}"}
        command = command[command.index("--") + 1 :] if "--" in command else command
    started = time.perf_counter()
    container = containers.run(tag, *command, env=env, **options)
    try:
        container.wait_for_process(lambda p: p.runs(program) and p.uid[0] == UID, 60)
        elapsed = time.perf_counter() - started
        found = READY.search(container.logs())
        return elapsed, float(found.group(1)) if found else None
    finally:
        container.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    why = images.unavailable()
    if why:
        print(f"containers: skipped: {why}")
        return 0
    with tempfile.TemporaryDirectory() as marker:
        for family, (program, command) in SERVERS.items():
            with_nbinit, without = images.image(family), images.image(family, nbinit=False)
            measured, baseline, shares = [], [], []
            start_once(with_nbinit, program, command, Path(marker), True)  # warm the caches
            for _ in range(args.runs):
                elapsed, share = start_once(with_nbinit, program, command, Path(marker), True)
                measured.append(elapsed)
                shares.append(share or 0.0)
                baseline.append(start_once(without, program, command, Path(marker), False)[0])
            total, base = statistics.median(measured), statistics.median(baseline)
            share = statistics.median(shares)
            print(
                f"{family}: {total:.2f} s from podman run to the server as uid {UID} "
                f"(baseline without nbinit, --user {UID}: {base:.2f} s, ratio {total / base:.2f}); "
                f"nbinit's own share {share:.3f} s ({100 * share / total:.0f}%)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
