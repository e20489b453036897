"""The gpu step and `nbinit gpu` in a throwaway container.

Most tests here are SIMULATIONS (marked `simulation`): no GPU exists on the test machines,
so the container gets fake device nodes (mknod on a private /dev), a copy of a real
/proc/driver/nvidia/version, an empty libcuda.so.1 and a shell script posing as
nvidia-smi. They prove nbinit's decisions and timeouts, not that a real driver answers;
benchmarks/gpu_report.py and tests/gpu/ do that on a machine with a GPU.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.sandbox

DATA = Path(__file__).parents[1] / "data" / "gpu"
FAKE_LIB = "/usr/lib/nvidia-fake"
SMI_QUERY_OUTPUT = (
    "0, NVIDIA A100-SXM4-40GB, GPU-5f9f3b1c-0c6e-7a0b-3f1e-2c1d4b5a6e7f, 40960, 535.104.05\n"
    "1, NVIDIA A100-SXM4-40GB, GPU-6a0a4c2d-1d7f-8b1c-4a2f-3d2e5c6b7f80, 40960, 535.104.05\n"
)
FAKE_SMI = f"""#!/bin/sh
case "$1" in
  --query-gpu=*) printf '%s' {shlex.quote(SMI_QUERY_OUTPUT)} ;;
  -L) echo "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5f9f3b1c)" ;;
  *) exit 9 ;;
esac
"""
HUNG_SMI = "#!/bin/sh\nexec sleep 600\n"


def message(line: str) -> str:
    """The message of a text log line, without level and time."""
    return line.split("] nbinit: ", 1)[1]


def fake_gpu(
    sandbox,
    devices: int = 2,
    driver_sample: str = "proprietary-515.76.txt",
    smi: str = FAKE_SMI,
    shm_mb: int = 1024,
    libcuda: bool = True,
) -> dict[str, str]:
    """Simulated GPU: private /dev with nvidia nodes, /proc/driver/nvidia, nvidia-smi, libcuda.

    Returns the environment the container needs (LD_LIBRARY_PATH to the fake libcuda, the
    way NGC's driver check also accepts it). /dev is replaced inside the container's mount
    namespace only; the host's /dev never changes.
    """
    sample = DATA / driver_sample
    lines = [
        # The test machines carry a CUDA toolkit at /usr/local/cuda; an image here has none
        # unless a test says so (CUDA_VERSION). rm in the overlay only leaves a whiteout.
        "rm -f $R/usr/local/cuda",
        "mount -t tmpfs -o mode=755 nbinit-fake-dev $R/dev",
        "for n in null zero full random urandom tty; do "
        "touch $R/dev/$n; mount --bind /dev/$n $R/dev/$n; done",
        "mkdir $R/dev/shm $R/dev/pts",
        f"mount -t tmpfs -o size={shm_mb}m,mode=1777 shm $R/dev/shm",
        "ln -s /proc/self/fd $R/dev/fd",
        "mknod -m 666 $R/dev/nvidiactl c 195 255",
        "mknod -m 666 $R/dev/nvidia-uvm c 510 0",
        "mknod -m 666 $R/dev/nvidia-modeset c 195 254",
        "mount -t tmpfs -o mode=755 nbinit-fake-driver $R/proc/driver",
        "mkdir $R/proc/driver/nvidia",
        f"cp {shlex.quote(str(sample))} $R/proc/driver/nvidia/version",
    ]
    lines += [f"mknod -m 666 $R/dev/nvidia{i} c 195 {i}" for i in range(devices)]
    sandbox.setup.extend(lines)
    if smi:
        sandbox.write("/usr/bin/nvidia-smi", smi, mode=0o755)
    if libcuda:
        sandbox.write(f"{FAKE_LIB}/libcuda.so.1", b"", mode=0o644)
    return {"LD_LIBRARY_PATH": FAKE_LIB}


def bake(sandbox, text: str) -> None:
    sandbox.write("/etc/nbinit/config.yaml", text)


SHOW_ENV_AND_STATUS = "echo count=$NBINIT_GPU_COUNT; cat /run/nbinit/status.json"


@pytest.mark.simulation
def test_start_reports_two_gpus_and_exports_the_count(sandbox):
    """Simulation: two fake GPUs, nvidia-smi answers; a clean start logs no WARNING."""
    sandbox.add_jovyan()
    env = fake_gpu(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", SHOW_ENV_AND_STATUS], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "count=2"
    assert result.lines("WARNING") == []
    gpu_lines = [message(line) for line in result.lines("INFO") if "nbinit: gpu:" in line]
    assert gpu_lines == [
        "gpu: 2 GPU(s): NVIDIA A100-SXM4-40GB 40960 MiB; NVIDIA A100-SXM4-40GB 40960 MiB, "
        "driver 515.76; NBINIT_GPU_COUNT=2"
    ]
    status = json.loads(result.stdout.split("\n", 1)[1])
    step = next(s for s in status["steps"] if s["name"] == "gpu")
    assert step["outcome"] == "ok"
    assert step["details"]["count"] == 2
    assert step["details"]["device_nodes"] == ["/dev/nvidia0", "/dev/nvidia1"]
    assert step["details"]["driver_version"] == "515.76"
    assert step["details"]["libcuda"] == f"{FAKE_LIB}/libcuda.so.1"
    assert [g["uuid"] for g in step["details"]["gpus"]] == [
        "GPU-5f9f3b1c-0c6e-7a0b-3f1e-2c1d4b5a6e7f",
        "GPU-6a0a4c2d-1d7f-8b1c-4a2f-3d2e5c6b7f80",
    ]


def test_cpu_pod_exports_zero_and_no_warning(sandbox):
    """No simulation: this machine has no GPU, so the container has none either."""
    sandbox.add_jovyan()
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "echo count=$NBINIT_GPU_COUNT"],
        env={"NVIDIA_VISIBLE_DEVICES": "all"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "count=0\n"
    assert result.lines("WARNING") == []
    infos = [message(line) for line in result.lines("INFO") if "nbinit: gpu:" in line]
    assert infos[1] == (
        "gpu: NVIDIA_VISIBLE_DEVICES=all is baked into CUDA images, it is not an allocation: "
        "this pod has no GPU"
    )


def test_required_gpu_absent_is_fatal_and_the_server_never_starts(sandbox):
    """gpu.require: true on a machine without a GPU: exit 1, FATAL with the evidence."""
    sandbox.add_jovyan()
    bake(sandbox, "version: 1\ngpu:\n  require: true\n")
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "echo started; touch /var/tmp/server-started"]
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "/var/tmp/server-started" not in sandbox.changed_paths()
    fatal = [message(line) for line in result.lines("FATAL")]
    assert fatal == [
        "gpu.require is true but no usable GPU: /dev/nvidiactl missing, "
        "0 /dev/nvidia[0-9]* device(s), libcuda.so.1 not found, driver not detected, "
        "nvidia-smi not run: request a GPU for this server (nvidia.com/gpu in the profile's "
        "extra_resource_limits) on a node with the NVIDIA device plugin, or set "
        "gpu.require: auto",
        "not starting the server: fix the problem above and restart",
    ]


def test_required_gpu_is_checked_even_after_the_deadline_passed(sandbox):
    """A deadline spent before the gpu step must not turn `require: true` into a GPU-less server."""
    sandbox.add_jovyan()
    bake(sandbox, "version: 1\ngpu:\n  require: true\n")
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "touch /var/tmp/server-started"],
        env={"NBINIT_DEADLINE": "0.01"},
    )
    assert result.returncode == 1, result.stderr
    assert "/var/tmp/server-started" not in sandbox.changed_paths()
    assert [message(line) for line in result.lines("FATAL")][0].startswith(
        "gpu.require is true but no usable GPU"
    )
    assert not any("gpu: skipped" in line for line in result.lines("WARNING"))


def test_required_gpu_absent_in_poststart_still_exits_zero(sandbox):
    """postStart must never fail (a failing hook kills the container): ERROR, exit 0."""
    sandbox.add_jovyan()
    bake(sandbox, "version: 1\ngpu:\n  require: true\n")
    result = sandbox.run(["nbinit", "poststart"])
    assert result.returncode == 0
    assert [message(line) for line in result.lines("ERROR")][0].startswith(
        "gpu.require is true but no usable GPU"
    )


@pytest.mark.simulation
def test_required_gpu_present_starts(sandbox):
    """Simulation: gpu.require: true and two fake GPUs: the server starts."""
    sandbox.add_jovyan()
    bake(sandbox, "version: 1\ngpu:\n  require: true\n")
    env = fake_gpu(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", "echo $NBINIT_GPU_COUNT"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2\n"


@pytest.mark.simulation
def test_hung_nvidia_smi_is_cut_off_and_the_server_still_starts(sandbox):
    """Simulation: nvidia-smi hangs; after gpu.timeout the start goes on within its deadline."""
    sandbox.add_jovyan()
    bake(sandbox, "version: 1\ngpu:\n  timeout: 1\n")
    env = fake_gpu(sandbox, smi=HUNG_SMI)
    env["NBINIT_DEADLINE"] = "8"
    started = time.monotonic()
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "echo $NBINIT_GPU_COUNT; ps -e -o comm="],
        env=env,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "2"  # counted from the device nodes
    assert "sleep" not in lines[1:]  # the hung process group was killed, not left behind
    assert [message(line) for line in result.lines("WARNING")] == [
        "gpu: nvidia-smi timeout after 1s (a GPU in a bad state, or an Xid error?): "
        "counted 2 device node(s) instead"
    ]
    assert elapsed < 8 + 10  # deadline plus a generous margin for the sandbox itself


@pytest.mark.simulation
def test_small_dev_shm_warns(sandbox):
    """Simulation: a GPU pod with the 64 MB /dev/shm default gets NGC's warning, in words."""
    sandbox.add_jovyan()
    env = fake_gpu(sandbox, shm_mb=64)
    result = sandbox.run(["nbinit", "start", "--", "true"], env=env)
    assert result.returncode == 0, result.stderr
    assert [message(line) for line in result.lines("WARNING")] == [
        "gpu: /dev/shm is 64 MB, the container default: PyTorch data loaders with workers fail "
        "there; mount an emptyDir with medium: Memory at /dev/shm "
        "(singleuser.storage.extraVolumes / extraVolumeMounts)"
    ]


@pytest.mark.simulation
def test_device_nodes_without_driver_library_warns_and_counts_zero(sandbox):
    """Simulation: a privileged pod sees /dev/nvidia* but the toolkit injected no libcuda."""
    sandbox.add_jovyan()
    env = fake_gpu(sandbox, libcuda=False)
    result = sandbox.run(["nbinit", "start", "--", "sh", "-c", "echo $NBINIT_GPU_COUNT"], env=env)
    assert result.returncode == 0
    assert result.stdout == "0\n"
    assert [message(line) for line in result.lines("WARNING")] == [
        "gpu: GPU device nodes are present but libcuda.so.1 not: the NVIDIA driver was not "
        "detected and GPU programs will fail; start the pod through the NVIDIA container "
        "toolkit (a nvidia.com/gpu limit), not with privileged: true"
    ]


@pytest.mark.simulation
def test_gpu_command_json_with_old_driver_for_the_image_cuda(sandbox):
    """Simulation: `nbinit gpu --json` on a CUDA 12.4 image with a 515 driver: exit 2."""
    env = fake_gpu(sandbox)
    env["CUDA_VERSION"] = "12.4.1"
    result = sandbox.run(["nbinit", "gpu", "--json"], env=env)
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["count"] == 2
    assert report["driver_version"] == "515.76"
    assert report["driver_source"] == "/proc/driver/nvidia/version"
    assert (report["required_driver"], report["compat_floor"]) == ("550.54.14", "525.60.13")
    assert report["warnings"] == [
        "driver 515.76 is older than this image's CUDA 12.4.1 needs (at least 525.60.13, "
        "550.54.14 for all features): CUDA programs will fail with 'driver version is "
        "insufficient'; run on nodes with a newer driver or use an image built for an older CUDA"
    ]


@pytest.mark.simulation
def test_gpu_command_table(sandbox):
    """Simulation: the table a person reads, exit 0 when nothing is wrong."""
    env = fake_gpu(sandbox, driver_sample="open-580.95.05.txt")
    result = sandbox.run(["nbinit", "gpu"], env=env)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0] == "GPUs usable             2"
    assert "driver                  580.95.05 (/proc/driver/nvidia/version)" in rows
    assert (
        "  GPU 1                 NVIDIA A100-SXM4-40GB  "
        "GPU-6a0a4c2d-1d7f-8b1c-4a2f-3d2e5c6b7f80  40960 MiB" in rows
    )


@pytest.mark.simulation
def test_framework_probe_reports_what_torch_sees(sandbox):
    """Simulation: a fake `torch` module that sees one of the two GPUs."""
    bake(sandbox, "version: 1\ngpu:\n  frameworks: [torch]\n")
    sandbox.write(
        "/opt/fakepy/torch/__init__.py",
        "__version__ = '2.4.0'\n"
        "class cuda:\n"
        "    is_available = staticmethod(lambda: True)\n"
        "    device_count = staticmethod(lambda: 1)\n"
        "class version:\n"
        "    cuda = '12.4'\n",
    )
    env = fake_gpu(sandbox)
    env["PYTHONPATH"] = "/opt/fakepy"
    result = sandbox.run(["nbinit", "gpu", "--json"], env=env)
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["frameworks"] == {"torch": {"version": "2.4.0", "count": 1, "cuda": "12.4"}}
    assert report["warnings"] == [
        "gpu.frameworks: torch sees 1 GPU(s) but 2 are visible: check that torch was built "
        "for CUDA (not a CPU-only wheel)"
    ]


@pytest.mark.simulation
@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc to build a stand-in libcuda")
def test_libcuda_found_through_the_loader_cache(sandbox, tmp_path):
    """Simulation: an ELF with soname libcuda.so.1, registered by a real ldconfig run."""
    built = tmp_path / "libcuda.so.1"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(built), "-x", "c", "-"],
        input=b"int cuInit(unsigned int flags) { return 100; }\n",
        check=True,
    )
    fake_gpu(sandbox, libcuda=False)
    sandbox.write("/usr/lib/x86_64-linux-gnu/libcuda.so.1", built.read_bytes(), mode=0o755)
    sandbox.setup.append("chroot $R ldconfig")
    result = sandbox.run(["nbinit", "gpu", "--json"])
    report = json.loads(result.stdout)
    # merged /usr: ldconfig may record the /lib alias of the same file
    assert report["libcuda"] in (
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/lib/x86_64-linux-gnu/libcuda.so.1",
    )
    assert report["count"] == 2


NGC_ENTRYPOINT = """#!/bin/bash
# Shaped like /opt/nvidia/nvidia_entrypoint.sh: source entrypoint.d/*.sh, then exec "$@".
shopt -s nullglob extglob
for part in /opt/nvidia/entrypoint.d/*@(.txt|.sh); do
  case "$part" in *.txt) cat "$part" >&2 ;; *.sh) source "$part" ;; esac
done
if [[ $# -eq 0 ]]; then exec /bin/bash; else exec "$@"; fi
"""
NGC_COMPAT_PART = """# Like NGC's CUDA forward-compat part: it only exports, the exec comes later.
export LD_LIBRARY_PATH="/usr/local/cuda/compat/lib.real${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NVIDIA_CPU_ONLY=1
"""


def test_ngc_entrypoint_runs_first_and_execs_nbinit(sandbox):
    """KubeSpawner sets only args: the NGC ENTRYPOINT runs, then execs `nbinit start`.

    What the entrypoint exported (forward-compat LD_LIBRARY_PATH) reaches the server, and
    the compat copy of libcuda is not taken for a driver.
    """
    sandbox.add_jovyan()
    sandbox.write("/opt/nvidia/nvidia_entrypoint.sh", NGC_ENTRYPOINT, mode=0o755)
    sandbox.write("/opt/nvidia/entrypoint.d/10-banner.txt", "== PyTorch (simulated NGC) ==\n")
    sandbox.write("/opt/nvidia/entrypoint.d/60-compat.sh", NGC_COMPAT_PART)
    sandbox.write("/usr/local/cuda/compat/lib.real/libcuda.so.1", b"")
    result = sandbox.run(
        [
            "/opt/nvidia/nvidia_entrypoint.sh",
            "nbinit",
            "start",
            "--",
            "sh",
            "-c",
            "echo $LD_LIBRARY_PATH $NVIDIA_CPU_ONLY $NBINIT_GPU_COUNT; cat /proc/1/comm",
        ],
        env={"CUDA_VERSION": "12.4.1", "NVIDIA_VISIBLE_DEVICES": "all"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/usr/local/cuda/compat/lib.real", "1", "0", "tini"]
    assert result.stderr.startswith("== PyTorch (simulated NGC) ==\n")
    assert result.lines("WARNING") == []
    notes = [message(line) for line in result.lines("INFO") if "nbinit: gpu:" in line]
    assert (
        "gpu: only the CUDA forward-compat copy of libcuda exists "
        "(/usr/local/cuda/compat/lib.real/libcuda.so.1)" in notes
    )
