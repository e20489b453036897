"""GPU evidence parsing and judgement: real driver samples, the CUDA driver table, assess()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbinit import gpu, nvidia

SAMPLES = sorted((Path(__file__).parents[1] / "data" / "gpu").glob("*.txt"))


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_driver_version_from_real_proc_samples(sample):
    expected = sample.stem.rsplit("-", 1)[1]
    assert nvidia.parse_driver_version(sample.read_text()) == expected


def test_there_are_several_real_samples():
    assert len(SAMPLES) >= 5
    assert any("open" in s.name for s in SAMPLES) and any("aarch64" in s.name for s in SAMPLES)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("NVRM version: NVIDIA UNIX x86_64 Kernel Module\n", id="no-version"),
        pytest.param("GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", id="gcc-only"),
        pytest.param("Kernel Module  535.104.05\n", id="not-an-nvrm-line"),
    ],
)
def test_driver_version_unreadable(text):
    assert nvidia.parse_driver_version(text) is None


@pytest.mark.parametrize(
    "version,expected",
    [("535.104.05", (535, 104, 5)), ("418.56", (418, 56)), ("12.2.2", (12, 2, 2)), ("x", ())],
)
def test_version_tuple(version, expected):
    assert nvidia.version_tuple(version) == expected


@pytest.mark.parametrize(
    "cuda,env,required,floor",
    [
        pytest.param("12.2.2", {}, "535.54.03", "525.60.13", id="12.2-table"),
        pytest.param("12.4.1", {}, "550.54.14", "525.60.13", id="12.4-table"),
        pytest.param("12.7", {}, "560.28.03", "525.60.13", id="12.7-unknown-uses-12.6"),
        pytest.param("13.0.1", {}, "580.65.06", "580", id="13.0"),
        pytest.param("11.8.0", {}, "520.61.05", "450.80.02", id="11.8"),
        pytest.param("10.2.89", {}, "440.33", "440.33", id="10.2-no-minor-compat"),
        pytest.param("9.0", {}, None, None, id="9.0-not-in-table"),
        pytest.param(
            "12.4.1", {"CUDA_DRIVER_VERSION": "550.54.15"}, "550.54.15", "525.60.13", id="ngc-env"
        ),
    ],
)
def test_required_driver(cuda, env, required, floor):
    assert nvidia.required_driver(cuda, env) == (required, floor)


def _cache(*paths: str) -> bytes:
    """A /etc/ld.so.cache in the new format: a header, entries, NUL-terminated strings."""
    strings = b"".join(p.encode() + b"\x00" for p in paths)
    return b"glibc-ld.so.cache1.1" + b"\x00" * 28 + strings


def test_cache_paths_from_real_ld_so_cache():
    cache = Path("/etc/ld.so.cache")
    if not cache.exists():
        pytest.skip("no /etc/ld.so.cache here")
    found = nvidia.cached_library_paths(cache.read_bytes(), "libc.so.6")
    assert found and all(p.endswith("/libc.so.6") and Path(p).exists() for p in found)


def test_libcuda_from_cache_skips_compat(tmp_path):
    real = tmp_path / "x86_64-linux-gnu" / "libcuda.so.1"
    compat = tmp_path / "cuda" / "compat" / "libcuda.so.1"
    for path in (real, compat):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    assert nvidia.find_libcuda(_cache(str(compat), str(real)), "") == (str(real), None)
    assert nvidia.find_libcuda(_cache(str(compat)), "") == (None, None)


def test_libcuda_from_ld_library_path(tmp_path):
    driver, compat = tmp_path / "driver", tmp_path / "compat" / "lib.real"
    for directory in (driver, compat):
        directory.mkdir(parents=True)
        (directory / "libcuda.so.1").write_bytes(b"")
    assert nvidia.find_libcuda(b"", f"{compat}") == (None, str(compat / "libcuda.so.1"))
    assert nvidia.find_libcuda(b"", f"{compat}:{driver}") == (
        str(driver / "libcuda.so.1"),
        str(compat / "libcuda.so.1"),
    )


def test_libcuda_listed_but_missing_is_not_found(tmp_path):
    assert nvidia.find_libcuda(_cache(str(tmp_path / "gone" / "libcuda.so.1")), "") == (None, None)


def test_image_cuda_version_sources(tmp_path):
    assert nvidia.image_cuda_version({"CUDA_VERSION": "12.4.1"}, str(tmp_path)) == (
        "12.4.1",
        "CUDA_VERSION",
    )
    home = tmp_path / "cuda-12.2"
    home.mkdir()
    link = tmp_path / "cuda"
    link.symlink_to(home)
    assert nvidia.image_cuda_version({}, str(link)) == ("12.2", str(home))
    (home / "version.txt").write_text("CUDA Version 10.2.89\n")
    assert nvidia.image_cuda_version({}, str(link)) == ("10.2.89", str(link / "version.txt"))
    (home / "version.json").write_text(json.dumps({"cuda": {"version": "12.2.2"}}))
    assert nvidia.image_cuda_version({}, str(link)) == ("12.2.2", str(link / "version.json"))
    assert nvidia.image_cuda_version({}, str(tmp_path / "none")) == (None, "")


def test_smi_query_and_list_parsing():
    query = (
        "0, NVIDIA A100-SXM4-40GB, GPU-5f9f3b1c-0c6e-7a0b-3f1e-2c1d4b5a6e7f, 40960, 535.104.05\n"
        "1, NVIDIA A100-SXM4-40GB, GPU-6a0a4c2d-1d7f-8b1c-4a2f-3d2e5c6b7f80, 40960, 535.104.05\n"
    )
    gpus = nvidia.parse_smi_query(query)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0]["memory_mib"] == 40960 and gpus[0]["driver"] == "535.104.05"
    listing = (
        "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5f9f3b1c-0c6e-7a0b-3f1e-2c1d4b5a6e7f)\n"
        "  MIG 1g.5gb      Device  0: (UUID: MIG-1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d)\n"
        "GPU 1: Tesla T4 (UUID: GPU-0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e)\n"
    )
    assert [(g["index"], g["name"]) for g in nvidia.parse_smi_list(listing)] == [
        (0, "NVIDIA A100-SXM4-40GB"),
        (1, "Tesla T4"),
    ]


def _present(**changes) -> gpu.Report:
    """Two GPUs that nvidia-smi listed, driver 535, a large /dev/shm: a clean GPU pod."""
    report = gpu.Report(
        control_node=True,
        device_nodes=["/dev/nvidia0", "/dev/nvidia1"],
        libcuda="/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        driver_version="535.104.05",
        smi="ok",
        gpus=[{"index": 0, "name": "T4"}, {"index": 1, "name": "T4"}],
        shm_bytes=1 << 30,
    )
    for key, value in changes.items():
        setattr(report, key, value)
    return report


def _cuda(version: str, report: gpu.Report) -> gpu.Report:
    report.cuda_version = version
    report.required_driver, report.compat_floor = nvidia.required_driver(version, {})
    return report


@pytest.mark.parametrize(
    "report,count,warnings,notes",
    [
        pytest.param(gpu.Report(), 0, [], [], id="cpu-pod-clean"),
        pytest.param(_present(), 2, [], [], id="gpu-pod-clean"),
        pytest.param(
            gpu.Report(nvidia_visible_devices="all"),
            0,
            [],
            ["NVIDIA_VISIBLE_DEVICES=all is baked into CUDA images"],
            id="baked-all-without-gpu-is-a-note",
        ),
        pytest.param(
            gpu.Report(nvidia_visible_devices="GPU-5f9f3b1c"),
            0,
            ["NVIDIA_VISIBLE_DEVICES=GPU-5f9f3b1c names 1 GPU(s) but 0 are usable"],
            [],
            id="allocated-but-absent",
        ),
        pytest.param(
            gpu.Report(nvidia_visible_devices="/var/run/nvidia-container-devices"),
            0,
            [],
            [],
            id="volume-mounts-strategy-path",
        ),
        pytest.param(
            _present(libcuda=None),
            0,
            ["GPU device nodes are present but libcuda.so.1 not"],
            [],
            id="nodes-without-libcuda",
        ),
        pytest.param(
            _present(smi="timeout after 5s", gpus=[]),
            2,
            ["nvidia-smi timeout after 5s (a GPU in a bad state"],
            [],
            id="smi-hangs-counts-nodes",
        ),
        pytest.param(
            _present(smi="not found", gpus=[]),
            2,
            [],
            ["nvidia-smi is not on PATH"],
            id="smi-missing-note",
        ),
        pytest.param(
            _cuda("12.4.1", _present(driver_version="515.76")),
            2,
            ["driver 515.76 is older than this image's CUDA 12.4.1 needs (at least 525.60.13"],
            [],
            id="driver-too-old",
        ),
        pytest.param(
            _cuda("12.4.1", _present()),
            2,
            [],
            ["driver 535.104.05 is older than CUDA 12.4.1's 550.54.14"],
            id="minor-version-compat-note",
        ),
        pytest.param(
            _cuda("12.4.1", _present(driver_version="515.76", libcuda_compat="/c/libcuda.so.1")),
            2,
            [],
            ["driver 515.76 is older than CUDA 12.4.1 needs (550.54.14); CUDA forward compat"],
            id="forward-compat-note",
        ),
        pytest.param(
            _present(shm_bytes=64 * 1024 * 1024),
            2,
            ["/dev/shm is 64 MB, the container default"],
            [],
            id="shm-64mb",
        ),
        pytest.param(
            _present(cuda_visible_devices="0,3"),
            2,
            ["CUDA_VISIBLE_DEVICES=0,3 names device(s) 3 but only 2 GPU(s) are visible"],
            [],
            id="cuda-visible-beyond",
        ),
        pytest.param(
            _present(cuda_visible_devices="-1"),
            2,
            [],
            ["CUDA_VISIBLE_DEVICES='-1' hides every GPU"],
            id="cuda-visible-hides",
        ),
        pytest.param(
            _present(frameworks={"torch": {"version": "2.4.0+cpu", "count": 0}}),
            2,
            ["gpu.frameworks: torch sees 0 GPU(s) but 2 are visible"],
            [],
            id="framework-cpu-wheel",
        ),
        pytest.param(
            _present(frameworks={"jax": {"error": "not importable (No module named 'jax')"}}),
            2,
            ["gpu.frameworks: jax: not importable"],
            [],
            id="framework-missing",
        ),
    ],
)
def test_assess(report, count, warnings, notes):
    result = gpu.assess(report)
    assert result.count == count
    assert len(result.warnings) == len(warnings), result.warnings
    assert len(result.notes) == len(notes), result.notes
    for expected, got in zip(warnings, result.warnings):
        assert got.startswith(expected), got
    for expected, got in zip(notes, result.notes):
        assert got.startswith(expected), got


def test_device_nodes_skip_uvm_and_caps(tmp_path):
    for name in ("nvidiactl", "nvidia10", "nvidia2", "nvidia-uvm", "nvidia-modeset", "nvidia-caps"):
        (tmp_path / name).write_text("")
    control, nodes = gpu.device_nodes(str(tmp_path))
    assert control is True
    assert nodes == [str(tmp_path / "nvidia2"), str(tmp_path / "nvidia10")]


def test_evidence_line_for_a_cpu_pod():
    assert gpu.Report().evidence() == (
        "/dev/nvidiactl missing, 0 /dev/nvidia[0-9]* device(s), libcuda.so.1 not found, "
        "driver not detected, nvidia-smi not run"
    )
