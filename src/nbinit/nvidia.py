"""What NVIDIA's files, tools and release notes say: the driver each CUDA release needs,
the kernel driver's version, libcuda in the loader's cache, the CUDA version an image was
built for, nvidia-smi's output.

Readers only, pure but for the few files an image records its CUDA version in:
`nbinit.gpu` gathers the evidence with them and judges it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

# Minimum Linux driver for each CUDA toolkit release (GA), from NVIDIA's CUDA Toolkit
# Release Notes, table "CUDA Toolkit and Corresponding Driver Versions".
TOOLKIT_DRIVER: dict[tuple[int, int], str] = {
    (13, 0): "580.65.06",
    (12, 9): "575.51.03",
    (12, 8): "570.26",
    (12, 6): "560.28.03",
    (12, 5): "555.42.02",
    (12, 4): "550.54.14",
    (12, 3): "545.23.06",
    (12, 2): "535.54.03",
    (12, 1): "530.30.02",
    (12, 0): "525.60.13",
    (11, 8): "520.61.05",
    (11, 7): "515.43.04",
    (11, 6): "510.39.01",
    (11, 5): "495.29.05",
    (11, 4): "470.42.01",
    (11, 3): "465.19.01",
    (11, 2): "460.27.03",
    (11, 1): "455.23",
    (11, 0): "450.36.06",
    (10, 2): "440.33",
    (10, 1): "418.39",
    (10, 0): "410.48",
}
# Below this a CUDA major cannot run at all; from here up to the toolkit's own driver it
# runs under "minor version compatibility" (same release notes, table "Minimum Required
# Driver Version for CUDA Minor Version Compatibility"). CUDA 10 had no such mode.
MINOR_COMPAT_FLOOR: dict[int, str] = {13: "580", 12: "525.60.13", 11: "450.80.02"}

_DRIVER_LINE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")
_SMI_LIST_LINE = re.compile(r"^GPU\s+(\d+):\s+(.*?)\s+\(UUID:\s*([^)]+)\)")


def parse_driver_version(text: str) -> Optional[str]:
    """The kernel driver version from /proc/driver/nvidia/version (proprietary or open)."""
    for line in text.splitlines():
        if line.startswith("NVRM"):
            match = _DRIVER_LINE.search(line)
            if match:
                return match.group(1)
    return None


def version_tuple(version: str) -> tuple[int, ...]:
    """'535.104.05' -> (535, 104, 5); non-numeric parts end the tuple."""
    numbers: list[int] = []
    for part in version.strip().split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def cached_library_paths(cache: bytes, name: str) -> list[str]:
    """Paths for a library name in /etc/ld.so.cache (old and new formats alike).

    Both formats keep each path as a NUL-terminated string, so reading the strings is
    what `ldconfig -p` shows, without running a process.
    """
    pattern = re.compile(rb"(/[^\x00]*/" + re.escape(name.encode()) + rb")\x00")
    seen: list[str] = []
    for match in pattern.finditer(cache):
        path = match.group(1).decode("utf-8", "replace")
        if path not in seen:
            seen.append(path)
    return seen


def is_compat_path(path: str) -> bool:
    """The CUDA forward-compat copy of libcuda says nothing about the host's driver."""
    return any("compat" in part for part in path.split("/"))


def find_libcuda(
    cache: bytes, ld_library_path: str, exists: Any = os.path.exists
) -> tuple[Optional[str], Optional[str]]:
    """(the driver's libcuda.so.1, a forward-compat copy on LD_LIBRARY_PATH), each or None."""
    driver: Optional[str] = None
    compat: Optional[str] = None
    for directory in [d for d in ld_library_path.split(":") if d]:
        candidate = os.path.join(directory, "libcuda.so.1")
        if not exists(candidate):
            continue
        if is_compat_path(candidate):
            compat = compat or candidate
        else:
            driver = driver or candidate
    if driver is None:
        for candidate in cached_library_paths(cache, "libcuda.so.1"):
            if not is_compat_path(candidate) and exists(candidate):
                driver = candidate
                break
    return driver, compat


def image_cuda_version(env: dict[str, str], cuda_home: str) -> tuple[Optional[str], str]:
    """The CUDA version the image was built for, and where that came from."""
    if env.get("CUDA_VERSION", "").strip():
        return env["CUDA_VERSION"].strip(), "CUDA_VERSION"
    version_json = os.path.join(cuda_home, "version.json")
    try:
        with open(version_json) as handle:
            found = json.load(handle).get("cuda", {}).get("version")
        if isinstance(found, str) and found:
            return found, version_json
    except (OSError, ValueError, AttributeError):
        pass
    version_txt = os.path.join(cuda_home, "version.txt")
    try:
        with open(version_txt) as handle:
            match = re.search(r"CUDA Version\s+(\d+(?:\.\d+)+)", handle.read(4096))
        if match:
            return match.group(1), version_txt
    except OSError:
        pass
    # pip-assembled toolkits have neither file; the directory name still says the release.
    target = os.path.basename(os.path.realpath(cuda_home))
    match = re.fullmatch(r"cuda-(\d+\.\d+)", target)
    if match and os.path.isdir(cuda_home):
        return match.group(1), os.path.realpath(cuda_home)
    return None, ""


def required_driver(cuda_version: str, env: dict[str, str]) -> tuple[Optional[str], Optional[str]]:
    """(driver the toolkit was released with, least driver its major runs on)."""
    numbers = version_tuple(cuda_version)
    if len(numbers) < 2:
        return None, None
    major, minor = numbers[0], numbers[1]
    # NGC images state their own requirement; prefer it to the table.
    stated = env.get("CUDA_DRIVER_VERSION", "").strip() or None
    known = sorted(k for k in TOOLKIT_DRIVER if k[0] == major and k[1] <= minor)
    table = TOOLKIT_DRIVER[known[-1]] if known else None
    required = stated or table
    floor = MINOR_COMPAT_FLOOR.get(major, required) if required else None
    return required, floor


def parse_smi_query(text: str) -> list[dict[str, Any]]:
    """`nvidia-smi --query-gpu=index,name,uuid,memory.total,driver_version` CSV rows."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        memory = int(fields[3]) if fields[3].isdigit() else None
        gpus.append(
            {
                "index": int(fields[0]),
                "name": fields[1],
                "uuid": fields[2],
                "memory_mib": memory,
                "driver": fields[4] if len(fields) > 4 else None,
            }
        )
    return gpus


def parse_smi_list(text: str) -> list[dict[str, Any]]:
    """`nvidia-smi -L`: 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-...)'."""
    gpus = []
    for line in text.splitlines():
        match = _SMI_LIST_LINE.match(line.strip())
        if match:
            gpus.append(
                {
                    "index": int(match.group(1)),
                    "name": match.group(2),
                    "uuid": match.group(3).strip(),
                    "memory_mib": None,
                    "driver": None,
                }
            )
    return gpus
