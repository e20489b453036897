"""Startup overhead: `nbinit start -- /bin/true` against a bare `/bin/true`.

Both run many times in this one process (alternating, so drift hits both alike); the
figure is the difference of the medians. Nothing to fetch or clone: this is the cost every
pod start pays. Target: at most 60 ms. Run as the image runs it (as root it drops to the
default user when one exists); the status file goes to a temporary directory.

    .venv/bin/python benchmarks/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_MS = 60.0


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    nbinit = shutil.which("nbinit", path=os.path.dirname(sys.executable)) or "nbinit"
    with tempfile.TemporaryDirectory() as state:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "NBINIT_STATUS_FILE": os.path.join(state, "status.json"),
            "NBINIT_STATE_DIR": state,
            "NBINIT_BAKED_CONFIG": os.path.join(state, "absent.yaml"),
            "HOME": state,
        }
        bare, full = ["/bin/true"], [nbinit, "start", "--", "/bin/true"]
        timed(full, env)  # warm the page cache and the .pyc files
        baseline, measured = [], []
        for _ in range(args.runs):
            baseline.append(timed(bare, env))
            measured.append(timed(full, env))
    base_ms = statistics.median(baseline) * 1000
    full_ms = statistics.median(measured) * 1000
    overhead = full_ms - base_ms
    print(
        f"startup_overhead: {overhead:.1f} ms (baseline /bin/true {base_ms:.1f} ms, "
        f"nbinit start {full_ms:.1f} ms, ratio {full_ms / base_ms:.1f}x; target <= {TARGET_MS:g} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
