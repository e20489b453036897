"""jupyterhub-singleuser from nbinit's runtime against an installed one, on the same Python.

The time from exec to the server answering `GET /user/alice/api`, for
  installed  `jupyterhub-singleuser` of a venv with jupyterhub installed (the baseline), and
  runtime    the image's Python running nbinit's launcher with the runtime zip appended,
both with the same jupyter_server on Debian's Python 3, the same JupyterHub version and a
stand-in hub API on loopback; alternating runs, medians. Target: within 1.2x. Then the size
of the runtimes the tree carries. A zip cannot cache bytecode, so every start compiles
what it imports from the runtime: that is most of the difference.

    .venv/bin/python benchmarks/singleuser.py [--runs N] [--version 5.5.4]

The runtime's Python is build/lab-venv (scripts/setup.sh); the baseline's venv,
build/bench-singleuser-venv, is made on first use with pip: the lab venv's packages, same
versions, plus jupyterhub (so "the same image, with jupyterhub installed").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nbinit import runtime, singleuser
from nbinit.bundle.runtimes import (
    DEFAULT_RUNTIME_WHEELS,
    RUNTIME_DIR,
    RUNTIMES,
    build_runtimes,
    runtime_name,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.httpserver import HTTPServer, serve_hub_api  # noqa: E402
from helpers.hubconfig import hub_env  # noqa: E402
from helpers.net import free_port, request  # noqa: E402
from helpers.wait import stop_process, wait_until  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
LAB = PROJECT / "build" / "lab-venv"
INSTALLED = PROJECT / "build" / "bench-singleuser-venv"
TARGET_RATIO = 1.2


def time_to_answer(argv: list[str], api_url: str, home: str, timeout: float = 120.0) -> float:
    """Seconds from exec to a 200 on the server's API; the server is stopped after.

    `home` persists across runs, as a user's home volume does (the runtime's bytecode).
    """
    port = free_port()
    env = {
        **hub_env("alice", api_url, port, token="bench-token"),
        "PATH": "/usr/bin:/bin",
        "HOME": home,
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [*argv, "--allow-root"],  # the benchmark runs as root; the server would refuse
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/user/alice/api"
        wait_until(
            f"{argv[0]} to answer {url}",
            lambda: request(url, timeout=1).status,
            lambda status: status == 200,
            timeout=timeout,
            interval=0.02,
            alive=lambda: process.poll() is None,
            context=lambda: f"{argv[0]} exit status: {process.poll()}",
        )
        return time.perf_counter() - started
    finally:
        stop_process(process, 10)


def ensure_installed(version: str) -> Path:
    """The lab venv's packages (pip freeze), plus jupyterhub installed the ordinary way."""
    script = INSTALLED / "bin" / "jupyterhub-singleuser"
    marker = INSTALLED / f".jupyterhub-{version}"
    if not marker.exists():
        frozen = subprocess.check_output(
            [str(LAB / "bin" / "python"), "-m", "pip", "freeze", "--disable-pip-version-check"],
            text=True,
        )
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", str(INSTALLED)], check=True)
        requirements = INSTALLED / "requirements.txt"
        requirements.write_text(frozen + f"jupyterhub=={version}\n")
        subprocess.run(
            [str(INSTALLED / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
            + ["--requirement", str(requirements)],
            check=True,
        )
        marker.touch()
    return script


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--version", default="5.5.4", choices=list(RUNTIMES))
    args = parser.parse_args()
    if not (LAB / "bin" / "python").exists():
        sys.stderr.write(f"{LAB} is missing: run scripts/setup.sh\n")
        return 1
    runtimes = build_runtimes(PROJECT / DEFAULT_RUNTIME_WHEELS)
    with tempfile.TemporaryDirectory() as directory:
        zip_path = Path(directory) / runtime_name(args.version)
        zip_path.write_bytes(runtimes[f"{RUNTIME_DIR}/{zip_path.name}"])
        os.chmod(directory, 0o755)
        started = time.perf_counter()
        unpacked = singleuser.extract_runtime(str(zip_path), root=str(Path(directory) / "run"))
        unpack = time.perf_counter() - started
        installed = [str(ensure_installed(args.version))]
        launcher = runtime.foreign_module_command(
            [str(LAB / "bin" / "python")], singleuser.LAUNCHER
        )
        from_runtime = [*launcher, "run", unpacked]
        from_zip = [*launcher, "run", str(zip_path)]
        homes = {name: Path(directory) / name for name in ("installed", "runtime", "zip")}
        for home in homes.values():
            home.mkdir()
        hub = HTTPServer()  # answers the version check singleuser makes before it listens
        api_url = serve_hub_api(hub, args.version)
        try:
            time_to_answer(installed, api_url, str(homes["installed"]))  # warm the page cache
            first = time_to_answer(from_runtime, api_url, str(homes["runtime"]))
            baseline, measured, zipped = [], [], []
            for _ in range(args.runs):
                baseline.append(time_to_answer(installed, api_url, str(homes["installed"])))
                measured.append(time_to_answer(from_runtime, api_url, str(homes["runtime"])))
                zipped.append(time_to_answer(from_zip, api_url, str(homes["zip"])))
        finally:
            hub.stop()
    base, mine = statistics.median(baseline), statistics.median(measured)
    ratio = mine / base
    print(
        f"singleuser_exec_to_answer: {mine:.2f} s (baseline installed jupyterhub-singleuser "
        f"{args.version} {base:.2f} s, ratio {ratio:.2f}; target <= {TARGET_RATIO})"
    )
    print(
        f"singleuser_exec_to_answer_first_start: {first:.2f} s (baseline {base:.2f} s, "
        f"ratio {first / base:.2f}; compiles the runtime once into the home)"
    )
    zip_median = statistics.median(zipped)
    print(
        f"singleuser_exec_to_answer_from_zip: {zip_median:.2f} s (baseline {base:.2f} s, "
        f"ratio {zip_median / base:.2f}; not root: no unpacking, no bytecode cache)"
    )
    print(f"singleuser_unpack: {unpack * 1000:.0f} ms (baseline 0, before exec, as root)")
    probes = []
    for _ in range(args.runs):
        started = time.perf_counter()
        singleuser.probe_python([str(LAB / "bin" / "python")], None, {"PATH": "/usr/bin"}, 30)
        probes.append(time.perf_counter() - started)
    print(
        f"singleuser_probe: {statistics.median(probes) * 1000:.0f} ms (baseline 0, before exec: "
        "the image's Python asked for its version and jupyter_server's)"
    )
    total = 0
    for name, data in sorted(runtimes.items()):
        total += len(data)
        print(f"singleuser_runtime_size: {len(data) / 1e6:.2f} MB ({Path(name).name})")
    print(f"singleuser_tree_size: {total / 1e6:.2f} MB (baseline 0, all runtimes together)")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
