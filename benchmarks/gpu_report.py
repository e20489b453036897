"""The real GPU report on this machine, and what it costs next to one `nvidia-smi -L`.

Run on a machine with a GPU: `.venv/bin/python benchmarks/gpu_report.py`. It prints the
report nbinit's gpu step would log (table and JSON), then
`gpu_report: <ms> ms (baseline nvidia-smi -L <ms> ms, <ratio>x)`. Without a GPU it still
runs and says so, with `true` as the baseline process.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time

from nbinit import gpu

RUNS = 5


def timed(action) -> float:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    env = dict(os.environ)
    report = gpu.gather(env, timeout=10.0)
    print(gpu.format_table(report))
    print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    print(f"summary: {gpu.summary(report)}")
    smi = shutil.which("nvidia-smi")
    baseline_argv = [smi, "-L"] if smi else ["true"]
    baseline_name = "nvidia-smi -L" if smi else "true (no nvidia-smi here)"
    baseline = timed(lambda: subprocess.run(baseline_argv, capture_output=True, timeout=30))
    measured = timed(lambda: gpu.gather(env, timeout=10.0))
    ratio = measured / baseline if baseline else float("nan")
    print(f"gpu_count: {report.count} GPUs (baseline nvidia-smi: {len(report.gpus)} listed)")
    print(
        f"gpu_report: {measured:.1f} ms (baseline {baseline_name} {baseline:.1f} ms, {ratio:.2f}x)"
    )


if __name__ == "__main__":
    main()
