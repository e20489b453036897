"""The one-file nbinit: its size, and what running from it costs next to the installed package.

`.venv/bin/python benchmarks/bundle.py` builds the zipapp (from build/bundle-wheels), then
times, on Debian's /usr/bin/python3, `--version` and `config validate` (which imports
PyYAML) from the zipapp against the same commands from the installed package. A zipapp
cannot cache bytecode, so every start compiles what it imports: this is that price.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nbinit import bundle

RUNS = 9
PROJECT = Path(__file__).resolve().parents[1]


def timed(argv: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, timeout=60)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "nbinit.pyz"
        data, _ = bundle.build_zipapp(PROJECT / bundle.DEFAULT_WHEELS, ["/usr/bin/python3"])
        archive.write_bytes(data)
        config = Path(tmp) / "config.yaml"
        config.write_text("version: 1\n")
        installed = [sys.executable, "-m", "nbinit"]
        wheels = [
            bundle.find_wheel(PROJECT / bundle.DEFAULT_WHEELS, project, version, sha256)
            for project, version, _, sha256 in bundle.PINS
        ]
        wheel_bytes = sum(w.stat().st_size for w in wheels if w is not None)
        print(
            f"bundle_size: {len(data)} bytes "
            f"(baseline the pinned wheels {wheel_bytes} bytes, {len(data) / wheel_bytes:.2f}x)"
        )
        for name, args in (
            ("version", ["--version"]),
            ("config_validate", ["config", "validate", str(config)]),
        ):
            measured = timed(["/usr/bin/python3", "-I", "-S", str(archive), *args])
            baseline = timed([*installed, *args])
            print(
                f"bundle_{name}: {measured:.1f} ms "
                f"(baseline installed package {baseline:.1f} ms, {measured / baseline:.2f}x)"
            )


if __name__ == "__main__":
    main()
