"""Start time as pods run it: the zipapp, fresh, with the admin config fetched over HTTP.

For each Python (3.9-3.13 where found, and Debian's python3), one run measures side by side,
alternating so that drift on a busy machine hits every row alike:

    python3 -c pass                               the floor (same interpreter)
    installed, no config URL                      nbinit from a package dir with warm .pyc
    zipapp, no config URL                         the artifact, no cache it could write
    installed, config over HTTP                   + the admin config from a loopback server
    zipapp, config over HTTP                      what every pod does
    zipapp poststart, zipapp ready                the other per-pod commands (HTTP config)

each as `nbinit start -- /bin/true` (median wall time of --runs, peak RSS of the child).
Target: the zipapp rows within 100 ms of `python3 -c pass` on the same Python.

    .venv/bin/python benchmarks/startup.py [--runs 15] [--python PATH ...]

Run as root: as pods do, nbinit runs as root and execs /bin/true as the image's default
user. Where this machine has no such user (jovyan), the whole measurement runs inside one
test sandbox that has it (the interpreters under /root stay reachable: nbinit is root
there until the exec). As another user, it measures that user's start.
The zipapp is built here with bytecode for every interpreter measured; the "installed" dir
is the zipapp's own sources unpacked and compiled once, as pip leaves a site-packages.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))

from nbinit import bundle  # noqa: E402

TARGET_MS = 100.0
CONFIG = b"version: 1\ndeadline: 20\ngpu:\n  require: false\n"


class Sample(NamedTuple):
    wall_ms: float
    cpu_ms: float
    rss_mb: float  # measured in a run of its own (peak_rss), in the "rss" list
    code: int


ROWS = (
    ("installed_no_url", "installed, no config URL"),
    ("zipapp_no_url", "zipapp, no config URL"),
    ("installed_http", "installed, config over HTTP"),
    ("zipapp_http", "zipapp, config over HTTP (every pod)"),
    ("zipapp_poststart", "zipapp poststart, config over HTTP"),
    ("zipapp_ready", "zipapp ready"),
)


def serve_config() -> str:
    """The admin config from a loopback server (the tests' own), for the whole run."""
    sys.path.insert(0, str(PROJECT / "tests"))
    from helpers.httpserver import HTTPServer

    server = HTTPServer()
    server.route("/config.yaml", body=CONFIG, headers={"Content-Type": "application/yaml"})
    return server.url("/config.yaml")


def run_once(argv: list[str], env: dict[str, str]) -> Sample:
    """Wall ms, CPU ms (user + system) and exit code of one child (peak RSS: peak_rss)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    started = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    os.close(devnull)
    cpu = usage.ru_utime + usage.ru_stime
    code = os.waitstatus_to_exitcode(status)
    return Sample(elapsed * 1000, cpu * 1000, 0.0, code)


def peak_rss(argv: list[str], env: dict[str, str]) -> float:
    """Peak RSS in MB of one run, through /usr/bin/time (0 without it).

    A child spawned from this process counts this process's pages until it execs (the
    kernel keeps the larger mark); GNU time is small, so its child's mark is the child's.
    """
    with tempfile.NamedTemporaryFile("r") as out:
        try:
            subprocess.run(
                ["/usr/bin/time", "-f", "%M", "-o", out.name, *argv],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
        except OSError:
            return 0.0
        text = out.read().strip().splitlines()
    return int(text[-1]) / 1024 if text and text[-1].isdigit() else 0.0


def python_version(python: str) -> str:
    result = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def commands(python: str, zipapp: Path, installed: Path) -> dict[str, list[str]]:
    start = ["start", "--", "/bin/true"]
    package = [python, "-c", f"import sys; sys.path.insert(0, {str(installed)!r}); "
               "from nbinit.cli import main; sys.exit(main())"]  # fmt: skip
    return {
        "pass": [python, "-c", "pass"],
        "installed_no_url": [*package, *start],
        "zipapp_no_url": [python, str(zipapp), *start],
        "installed_http": [*package, *start],
        "zipapp_http": [python, str(zipapp), *start],
        "zipapp_poststart": [python, str(zipapp), "poststart"],
        "zipapp_ready": [python, str(zipapp), "ready"],
    }


def needs_sandbox() -> bool:
    """Root without a default user: nbinit would refuse to exec anything as root here."""
    import pwd

    if os.geteuid() != 0 or os.environ.get("NBINIT_BENCH_INSIDE"):
        return False
    try:
        pwd.getpwnam("jovyan")
    except KeyError:
        return True
    return False


def in_sandbox(argv: list[str]) -> int:
    """Run this script again inside one sandbox laid out like an image (with jovyan)."""
    sys.path.insert(0, str(PROJECT / "tests"))
    from helpers.sandbox import Sandbox, available

    reason = available()
    if reason:
        print(f"startup: cannot measure as root without jovyan here ({reason})", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="nbinit-startup-") as tmp:
        box = Sandbox(Path(tmp))
        box.add_jovyan()
        result = box.run(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            env={"NBINIT_BENCH_INSIDE": "1"},
            timeout=3600,
        )
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-3000:])
    return result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--python", action="append", help="interpreter to measure (repeat)")
    args = parser.parse_args()
    if needs_sandbox():
        return in_sandbox(sys.argv[1:])
    pythons = args.python or bundle.find_pythons()
    versions = {p: python_version(p) for p in pythons}
    by_version: dict[str, str] = {}  # one interpreter per minor version, the first found
    for python, version in versions.items():
        minor = ".".join(version.split(".")[:2])
        if version and not any(v.startswith(minor + ".") for v in by_version):
            by_version[version] = python
    url = serve_config()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # noqa: S103 - readable by whoever runs the benchmark's children
        data, used = bundle.build_zipapp(PROJECT / bundle.DEFAULT_WHEELS, list(by_version.values()))
        zipapp = root / "nbinit.pyz"
        zipapp.write_bytes(data)
        installed = root / "installed"
        with zipfile.ZipFile(zipapp) as archive:
            archive.extractall(installed, [n for n in archive.namelist() if "/" in n])
        print(f"zipapp: {len(data)} bytes, bytecode for {len(used)} interpreter(s)")
        base_env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": tmp,
            "NBINIT_STATUS_FILE": str(root / "status.json"),
            "NBINIT_STATE_DIR": tmp,
            "NBINIT_BAKED_CONFIG": str(root / "absent.yaml"),
        }
        http_env = {**base_env, "NBINIT_CONFIG_URL": url}
        envs = {
            "pass": base_env,
            "installed_no_url": base_env,
            "zipapp_no_url": base_env,
            "installed_http": http_env,
            "zipapp_http": http_env,
            "zipapp_poststart": http_env,
            "zipapp_ready": base_env,
        }
        results: dict[str, dict[str, list[Sample]]] = {}
        for version, python in sorted(
            by_version.items(), key=lambda v: [int(x) for x in v[0].split(".")]
        ):
            argvs = commands(python, zipapp, installed)
            # Compile the installed copy once (what pip does), warm the page cache.
            for name, argv in argvs.items():
                run_once(argv, envs[name])
            samples: dict[str, list[Sample]] = {n: [] for n in argvs}
            for _ in range(args.runs):
                for name, argv in argvs.items():
                    samples[name].append(run_once(argv, envs[name]))
            for name, argv in argvs.items():
                samples[f"{name}_rss"] = [Sample(0.0, 0.0, peak_rss(argv, envs[name]), 0)]
            results[version] = samples
        report(results)
    return 0


def report(results: dict[str, dict[str, list[Sample]]]) -> None:
    def median(samples: list[Sample], field: str = "wall_ms") -> float:
        return statistics.median(getattr(s, field) for s in samples)

    def missing(samples: list[Sample]) -> bool:
        return any(s.code == 64 for s in samples)  # a usage error: no such command

    print()
    print(f"{'median wall time (CPU time)':40}" + "".join(f"{v:>22}" for v in results))
    for name, title in (("pass", "python3 -c pass (the floor)"), *ROWS):
        cells = [
            f"{'(no such command)':>22}"
            if missing(r[name])
            else f"{median(r[name]):9.1f} ms ({median(r[name], 'cpu_ms'):5.1f} ms)"
            for r in results.values()
        ]
        print(f"{title:40}" + "".join(cells))
    peaks = [r["zipapp_http_rss"][0].rss_mb for r in results.values()]
    print(f"{'peak RSS, zipapp over HTTP':40}" + "".join(f"{peak:19.1f} MB" for peak in peaks))
    print()
    for version, samples in results.items():
        floor = median(samples["pass"])
        for name, _ in ROWS:
            if missing(samples[name]):
                print(f"{name}[{version}]: not measured (this nbinit has no such command)")
                continue
            value = median(samples[name])
            allowed = (0, 1) if name.endswith("ready") else (0,)  # ready: 1 = no server yet
            failures = sum(1 for s in samples[name] if s.code not in allowed)
            target = f", target <= +{TARGET_MS:g} ms" if name.startswith("zipapp") else ""
            print(
                f"{name}[{version}]: {value:.1f} ms (baseline python3 -c pass {floor:.1f} ms, "
                f"+{value - floor:.1f} ms{target}; CPU {median(samples[name], 'cpu_ms'):.1f} ms "
                f"vs {median(samples['pass'], 'cpu_ms'):.1f} ms; "
                f"peak RSS {samples[f'{name}_rss'][0].rss_mb:.1f} MB "
                f"vs {samples['pass_rss'][0].rss_mb:.1f} MB"
                + (f"; {failures} runs failed" if failures else "")
                + ")"
            )


if __name__ == "__main__":
    sys.exit(main())
