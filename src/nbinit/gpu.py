"""GPU visibility from evidence: device nodes, the driver library, the kernel driver, nvidia-smi.

Environment variables are context, never proof: CUDA images bake NVIDIA_VISIBLE_DEVICES=all
and a pod that requested no GPU still carries it. The checks follow the order of NVIDIA's
own NGC entrypoint (`50-gpu-driver-check.sh`), with nbinit's words and timeouts. Gathering
(I/O) and judging (`assess`, pure) are separate so the judgement is testable anywhere;
reading NVIDIA's formats and tables is `nbinit.nvidia`'s.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from typing import Any, Optional

from nbinit import privilege
from nbinit.context import Deadline, Identity
from nbinit.nvidia import (
    find_libcuda,
    image_cuda_version,
    parse_driver_version,
    parse_smi_list,
    parse_smi_query,
    required_driver,
    version_tuple,
)

SHM_CONTAINER_DEFAULT = 64 * 1024 * 1024
SMI_QUERY = "index,name,uuid,memory.total,driver_version"
_DEVICE_NAME = re.compile(r"^nvidia(\d+)$")
# Values of NVIDIA_VISIBLE_DEVICES that allocate nothing, and the one baked into images.
_NO_DEVICES = ("", "none", "void")


class Paths:
    """Where the evidence lives; tests point these at fixtures."""

    dev = "/dev"
    proc_version = "/proc/driver/nvidia/version"
    ld_cache = "/etc/ld.so.cache"
    cuda_home = "/usr/local/cuda"
    shm = "/dev/shm"

    def __init__(self, **paths: str) -> None:
        for key, value in paths.items():
            if not hasattr(Paths, key):
                raise TypeError(f"Paths has no {key!r}")
            setattr(self, key, value)


# Report's fields and their defaults, in report order (lists and dicts copied per report).
# A plain class, not a dataclass: `import dataclasses` costs every pod start ~10 ms.
_REPORT_FIELDS: dict[str, Any] = {
    "control_node": False,
    "device_nodes": [],
    "libcuda": None,
    "libcuda_compat": None,
    "driver_version": None,
    "driver_source": "",
    "smi": "not run",  # ok | not found | timeout after Ns | failed: ... | not run
    "gpus": [],
    "nvidia_visible_devices": None,
    "cuda_visible_devices": None,
    "cuda_version": None,
    "cuda_source": "",
    "required_driver": None,
    "compat_floor": None,
    "shm_bytes": None,
    "frameworks": {},
    "count": 0,
    "warnings": [],
    "notes": [],
}


class Report:
    """Everything the GPU report knows; `count` is what the server's environment gets."""

    control_node: bool
    device_nodes: list[str]
    libcuda: Optional[str]
    libcuda_compat: Optional[str]
    driver_version: Optional[str]
    driver_source: str
    smi: str
    gpus: list[dict[str, Any]]
    nvidia_visible_devices: Optional[str]
    cuda_visible_devices: Optional[str]
    cuda_version: Optional[str]
    cuda_source: str
    required_driver: Optional[str]
    compat_floor: Optional[str]
    shm_bytes: Optional[int]
    frameworks: dict[str, dict[str, Any]]
    count: int
    warnings: list[str]
    notes: list[str]

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(_REPORT_FIELDS)
        if unknown:
            raise TypeError(f"Report has no {sorted(unknown)}")
        for key, default in _REPORT_FIELDS.items():
            setattr(self, key, values[key] if key in values else copy.copy(default))

    def as_dict(self) -> dict[str, Any]:
        return {key: copy.deepcopy(getattr(self, key)) for key in _REPORT_FIELDS}

    def evidence(self) -> str:
        """What was looked at, in one clause, for a FATAL line or the log."""
        parts = [
            "/dev/nvidiactl " + ("present" if self.control_node else "missing"),
            f"{len(self.device_nodes)} /dev/nvidia[0-9]* device(s)",
            "libcuda.so.1 " + (f"at {self.libcuda}" if self.libcuda else "not found"),
            "driver " + (self.driver_version or "not detected"),
            f"nvidia-smi {self.smi}",
        ]
        return ", ".join(parts)


# -- judging (pure) ----------------------------------------------------------------------
def listed_devices(value: Optional[str]) -> Optional[list[str]]:
    """The devices NVIDIA_VISIBLE_DEVICES names; None for all/none/void/unset.

    With the device plugin's volume-mounts strategy the value is a path
    (/var/run/nvidia-container-devices), not a list: it names no count either.
    """
    if value is None or value.strip().lower() in (*_NO_DEVICES, "all"):
        return None
    if value.strip().startswith("/"):
        return None
    return [d.strip() for d in value.split(",") if d.strip()]


def assess(report: Report) -> Report:
    """Decide the count and the warnings (logged) and notes (informational) from evidence."""
    visible = len(report.gpus) if report.smi == "ok" else len(report.device_nodes)
    has_driver = report.control_node and report.libcuda is not None
    report.count = visible if has_driver else 0
    warn, note = report.warnings.append, report.notes.append

    if report.device_nodes and not has_driver:
        missing = [] if report.control_node else ["/dev/nvidiactl"]
        if report.libcuda is None:
            missing.append("libcuda.so.1")
        warn(
            f"GPU device nodes are present but {' and '.join(missing)} not: the NVIDIA driver "
            "was not detected and GPU programs will fail; start the pod through the NVIDIA "
            "container toolkit (a nvidia.com/gpu limit), not with privileged: true"
        )
    elif report.libcuda and not report.device_nodes:
        note(
            f"libcuda.so.1 is in the image ({report.libcuda}) but no GPU device is: "
            "a driver library baked into an image can shadow the one the toolkit injects"
        )
    if report.libcuda_compat and not report.libcuda:
        note(f"only the CUDA forward-compat copy of libcuda exists ({report.libcuda_compat})")

    _assess_visibility(report, visible)
    if report.count == 0:
        return report
    _assess_smi(report)
    _assess_driver(report)
    if report.shm_bytes == SHM_CONTAINER_DEFAULT:
        warn(
            "/dev/shm is 64 MB, the container default: PyTorch data loaders with workers fail "
            "there; mount an emptyDir with medium: Memory at /dev/shm "
            "(singleuser.storage.extraVolumes / extraVolumeMounts)"
        )
    for name, probe in report.frameworks.items():
        seen = probe.get("count")
        if probe.get("error"):
            warn(f"gpu.frameworks: {name}: {probe['error']}")
        elif seen != report.count:
            warn(
                f"gpu.frameworks: {name} sees {seen} GPU(s) but {report.count} are visible: "
                f"check that {name} was built for CUDA (not a CPU-only wheel)"
            )
    return report


def _assess_visibility(report: Report, visible: int) -> None:
    """NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES against the evidence."""
    nvd = report.nvidia_visible_devices
    listed = listed_devices(nvd)
    if listed is not None and len(listed) != report.count:
        report.warnings.append(
            f"NVIDIA_VISIBLE_DEVICES={nvd} names {len(listed)} GPU(s) but {report.count} "
            "are usable here: the container runtime did not inject what was allocated "
            "(is the node's runtime nvidia, and the device plugin healthy?)"
        )
    elif nvd is not None and nvd.strip().lower() == "all" and report.count == 0:
        report.notes.append(
            "NVIDIA_VISIBLE_DEVICES=all is baked into CUDA images, it is not an allocation: "
            "this pod has no GPU"
        )
    elif nvd is not None and nvd.strip().lower() in _NO_DEVICES and visible:
        report.notes.append(
            f"NVIDIA_VISIBLE_DEVICES={nvd!r} asks for no GPU, yet {visible} device(s) are "
            "present (a privileged pod sees the node's devices)"
        )
    cvd = report.cuda_visible_devices
    if cvd is None or report.count == 0:
        return
    if cvd.strip() in ("", "-1", "NoDevFiles"):
        report.notes.append(f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU from CUDA programs")
        return
    indices = [d.strip() for d in cvd.split(",") if d.strip()]
    beyond = [d for d in indices if d.isdigit() and int(d) >= report.count]
    if beyond:
        report.warnings.append(
            f"CUDA_VISIBLE_DEVICES={cvd} names device(s) {','.join(beyond)} but only "
            f"{report.count} GPU(s) are visible (CUDA numbers them 0..{report.count - 1})"
        )


def _assess_smi(report: Report) -> None:
    if report.smi.startswith("timeout"):
        report.warnings.append(
            f"nvidia-smi {report.smi} (a GPU in a bad state, or an Xid error?): counted "
            f"{len(report.device_nodes)} device node(s) instead"
        )
    elif report.smi.startswith("failed"):
        report.warnings.append(f"nvidia-smi {report.smi}")
    elif report.smi == "not found":
        report.notes.append(
            "nvidia-smi is not on PATH: add utility to NVIDIA_DRIVER_CAPABILITIES to get it"
        )


def _assess_driver(report: Report) -> None:
    if report.driver_version is None:
        report.warnings.append(
            "the NVIDIA driver version could not be read from /proc/driver/nvidia/version "
            "or nvidia-smi"
        )
        return
    if not (report.cuda_version and report.required_driver and report.compat_floor):
        return
    have = version_tuple(report.driver_version)
    cuda = f"CUDA {report.cuda_version}"
    if report.libcuda_compat and have < version_tuple(report.required_driver):
        report.notes.append(
            f"driver {report.driver_version} is older than {cuda} needs "
            f"({report.required_driver}); CUDA forward compatibility is in use "
            f"({report.libcuda_compat}), which works on data-center GPUs only"
        )
    elif have < version_tuple(report.compat_floor):
        report.warnings.append(
            f"driver {report.driver_version} is older than this image's {cuda} needs "
            f"(at least {report.compat_floor}, {report.required_driver} for all features): "
            "CUDA programs will fail with 'driver version is insufficient'; run on nodes "
            "with a newer driver or use an image built for an older CUDA"
        )
    elif have < version_tuple(report.required_driver):
        report.notes.append(
            f"driver {report.driver_version} is older than {cuda}'s {report.required_driver}: "
            "running under minor version compatibility (PTX JIT of newer code fails)"
        )


# -- gathering (I/O) ---------------------------------------------------------------------
def device_nodes(dev: str) -> tuple[bool, list[str]]:
    """(/dev/nvidiactl exists, the /dev/nvidiaN nodes), skipping -uvm, -modeset, -caps."""
    control = os.path.exists(os.path.join(dev, "nvidiactl"))
    try:
        names = os.listdir(dev)
    except OSError:
        names = []
    found = sorted(
        (n for n in names if _DEVICE_NAME.match(n)),
        key=lambda n: int(_DEVICE_NAME.match(n).group(1)),  # type: ignore[union-attr]
    )
    return control, [os.path.join(dev, n) for n in found]


def _read(path: str, limit: int = 1 << 20) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except OSError:
        return None


def shm_size(path: str) -> Optional[int]:
    try:
        info = os.statvfs(path)
    except OSError:
        return None
    return info.f_blocks * info.f_frsize


def run_smi(
    identity: Optional[Identity], env: dict[str, str], timeout: float
) -> tuple[str, list[dict[str, Any]]]:
    """Ask nvidia-smi as the user, with one timeout for both calls; (status, gpus)."""
    clean = privilege.clean_environment(identity, env)
    smi = shutil.which("nvidia-smi", path=clean.get("PATH"))
    if smi is None:
        return "not found", []
    budget = Deadline(timeout)
    attempts = (
        ([smi, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"], parse_smi_query),
        ([smi, "-L"], parse_smi_list),
    )
    problem = ""
    for argv, parse in attempts:
        try:
            result = privilege.run_as_user(
                identity, argv, env=clean, timeout=budget.remaining(), cwd="/"
            )
        except subprocess.TimeoutExpired:
            # A hung query means a hung GPU: -L would hang as well.
            return f"timeout after {timeout:g}s", []
        except OSError as exc:
            return f"failed: {exc.strerror or exc}", []
        if result.returncode == 0:
            return "ok", parse(result.stdout.decode("utf-8", "replace"))
        output = (result.stdout + result.stderr).decode("utf-8", "replace").strip()
        problem = problem or (output.splitlines() or [f"exit {result.returncode}"])[0][:160]
    return f"failed: {problem}", []


def probe_framework(
    name: str, identity: Optional[Identity], env: dict[str, str], timeout: float
) -> dict[str, Any]:
    """Import a framework in the image's python, as the user, and ask it for GPUs."""
    clean = privilege.clean_environment(identity, env)
    python = shutil.which("python3", path=clean.get("PATH")) or shutil.which(
        "python", path=clean.get("PATH")
    )
    if python is None:
        return {"error": "no python3 on PATH to import it with"}
    from nbinit import frameworkprobe, runtime

    argv = [*runtime.foreign_module_command([python], "nbinit.frameworkprobe"), name]
    try:
        result = privilege.run_as_user(identity, argv, env=clean, timeout=timeout, cwd="/")
    except subprocess.TimeoutExpired:
        return {"error": f"did not answer within {timeout:g}s"}
    except OSError as exc:
        return {"error": f"cannot run {python}: {exc.strerror or exc}"}
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith(frameworkprobe.PREFIX):
            try:
                data: dict[str, Any] = json.loads(line[len(frameworkprobe.PREFIX) :])
            except ValueError:
                break
            return data
    tail = result.stderr.decode("utf-8", "replace").strip().splitlines()
    return {"error": f"probe failed: {tail[-1][:160] if tail else result.returncode}"}


def gather(
    env: dict[str, str],
    *,
    identity: Optional[Identity] = None,
    timeout: float = 5.0,
    frameworks: tuple[str, ...] = (),
    frameworks_timeout: float = 30.0,
    paths: Optional[Paths] = None,
) -> Report:
    """Collect the evidence and judge it; every process runs as identity within its timeout."""
    paths = paths or Paths()
    report = Report()
    report.control_node, report.device_nodes = device_nodes(paths.dev)
    report.libcuda, report.libcuda_compat = find_libcuda(
        _read(paths.ld_cache) or b"", env.get("LD_LIBRARY_PATH", "")
    )
    version_text = _read(paths.proc_version, 4096)
    if version_text is not None:
        report.driver_version = parse_driver_version(version_text.decode("utf-8", "replace"))
        report.driver_source = paths.proc_version if report.driver_version else ""
    report.nvidia_visible_devices = env.get("NVIDIA_VISIBLE_DEVICES")
    report.cuda_visible_devices = env.get("CUDA_VISIBLE_DEVICES")
    report.cuda_version, report.cuda_source = image_cuda_version(env, paths.cuda_home)
    if report.cuda_version:
        report.required_driver, report.compat_floor = required_driver(report.cuda_version, env)
    report.shm_bytes = shm_size(paths.shm)
    # nvidia-smi only where there is something to ask: on a CPU pod it would only fail.
    if report.control_node or report.device_nodes:
        report.smi, report.gpus = run_smi(identity, env, timeout)
        if report.driver_version is None and report.gpus and report.gpus[0].get("driver"):
            report.driver_version = report.gpus[0]["driver"]
            report.driver_source = "nvidia-smi"
    usable = report.control_node and report.libcuda is not None and report.device_nodes
    if frameworks and usable:
        budget = Deadline(frameworks_timeout)
        for name in frameworks:
            report.frameworks[name] = probe_framework(name, identity, env, budget.remaining())
    return assess(report)


# -- presenting ------------------------------------------------------------------------
def summary(report: Report) -> str:
    """One log line: the count and what backs it."""
    if report.count == 0:
        return f"no GPU ({report.evidence()})"
    names = [
        f"{g['name']}" + (f" {g['memory_mib']} MiB" if g.get("memory_mib") else "")
        for g in report.gpus
    ]
    listed = f": {'; '.join(names)}" if names else ""
    driver = f", driver {report.driver_version}" if report.driver_version else ""
    cuda = f", image CUDA {report.cuda_version}" if report.cuda_version else ""
    return f"{report.count} GPU(s){listed}{driver}{cuda}"


def format_table(report: Report) -> str:
    """The report as a person reads it in a terminal."""
    rows: list[tuple[str, str]] = [
        ("GPUs usable", str(report.count)),
        ("/dev/nvidiactl", "present" if report.control_node else "missing"),
        ("device nodes", ", ".join(report.device_nodes) or "none"),
        ("libcuda.so.1", report.libcuda or "not found (compat copies not counted)"),
        (
            "driver",
            f"{report.driver_version} ({report.driver_source})"
            if report.driver_version
            else "not detected",
        ),
        ("nvidia-smi", report.smi),
    ]
    for gpu in report.gpus:
        memory = f"  {gpu['memory_mib']} MiB" if gpu.get("memory_mib") else ""
        rows.append((f"  GPU {gpu['index']}", f"{gpu['name']}  {gpu['uuid']}{memory}"))
    if report.cuda_version:
        needs = (
            f"; needs driver >= {report.compat_floor} ({report.required_driver} for all features)"
            if report.required_driver
            else ""
        )
        rows.append(("image CUDA", f"{report.cuda_version} ({report.cuda_source}){needs}"))
    else:
        rows.append(("image CUDA", "none found"))
    if report.shm_bytes is not None:
        rows.append(("/dev/shm", f"{report.shm_bytes // (1024 * 1024)} MiB"))
    for name in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        value = getattr(report, name.lower())
        rows.append((name, "(unset)" if value is None else repr(value)))
    for name, probe in report.frameworks.items():
        shown = probe.get("error") or f"{probe.get('version')} sees {probe.get('count')} GPU(s)"
        rows.append((f"framework {name}", str(shown)))
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    lines += [f"WARNING: {w}" for w in report.warnings]
    lines += [f"NOTE: {n}" for n in report.notes]
    return "\n".join(lines)
