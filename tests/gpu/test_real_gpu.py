"""On a machine with a real NVIDIA GPU: nbinit's report agrees with nvidia-smi itself.

Skipped everywhere else (the CI and development machines have no GPU).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from nbinit import gpu, nvidia

pytestmark = pytest.mark.skipif(
    not (os.path.exists("/dev/nvidiactl") and shutil.which("nvidia-smi")),
    reason="needs a real NVIDIA GPU, its driver and nvidia-smi",
)


def smi(*args: str) -> str:
    return subprocess.run(
        ["nvidia-smi", *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def test_count_and_driver_agree_with_nvidia_smi():
    listed = [line for line in smi("-L").splitlines() if line.startswith("GPU ")]
    driver = smi("--query-gpu=driver_version", "--format=csv,noheader").splitlines()[0].strip()
    report = gpu.gather(dict(os.environ), timeout=30.0)
    assert report.smi == "ok"
    assert report.count == len(listed) > 0
    assert report.driver_version == driver
    assert report.libcuda is not None and not nvidia.is_compat_path(report.libcuda)
    assert [g["uuid"] for g in report.gpus] == [
        line.split("UUID: ")[1].rstrip(")") for line in listed
    ]


def test_gpu_command_reports_the_gpus():
    result = subprocess.run(
        [sys.executable, "-m", "nbinit", "gpu", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 2), result.stderr
    assert json.loads(result.stdout)["count"] > 0
