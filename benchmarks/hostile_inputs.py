"""Start time and peak memory with a hostile ~/.nbinit.yaml, against a clean start.

Each start is `nbinit start` as PID 1 in the test sandbox (jovyan, as in a pod), with
NBINIT_DEADLINE=5. The start time is how long after PID 1 began the server runs (read by
the server from /proc/1/stat and /proc/uptime: interpreter start-up included). The peak
RSS is the largest resident set of any process of the start (nbinit, the dotfile reader,
anything it ran), measured by a fresh helper process per start from its children's
rusage, so it bounds nbinit's own peak from above. Baseline: the same start with no
dotfile. Targets (issue 9): start <= deadline + 0.5 s, peak RSS <= 100 MB.

Run as root:  .venv/bin/python benchmarks/hostile_inputs.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.sandbox import Sandbox, available  # noqa: E402

DEADLINE = 5.0
HOME = "/home/jovyan"
DOTFILE = f"{HOME}/.nbinit.yaml"
SERVER = (
    "sh",
    "-c",
    "start=$(cut -d' ' -f22 /proc/1/stat); "
    "awk -v s=$start -v t=$(getconf CLK_TCK) '{printf \"%.3f\\n\", $1 - s / t}' /proc/uptime",
)


def _write(content: bytes) -> Callable[[Sandbox], None]:
    return lambda box: box.write(DOTFILE, content, uid=1000, gid=100)


def _chain(box: Sandbox) -> None:
    for i in range(1000):
        box.symlink(f"{HOME}/chain{i}", f"chain{i + 1}", uid=1000, gid=100)
    box.mkdir(f"{HOME}/chain1000", uid=1000, gid=100)
    box.write(
        DOTFILE, "repos: [{url: 'https://h.example/r.git', dest: chain0/x}]\n", uid=1000, gid=100
    )


_ITEMS = ", ".join(["x"] * 999)
_ALIAS_BOMB = f"repos: &a [{_ITEMS}]\n" + "".join(f"k{i}: *a\n" for i in range(11))
# Valid and at the limits (100 repos), from a host git.allowed_hosts refuses: parsing and
# checking cost, not a sync that waits on the network (that one is the deadline's).
_LARGEST_VALID = "repos:\n" + "".join(
    f" - url: https://h.example/{'p' * 300}/{i}.git\n   dest: d/{i}\n   branch: main\n"
    for i in range(100)
)

CASES: dict[str, Callable[[Sandbox], None]] = {
    "clean": lambda box: None,
    "flat-list-1-MiB": _write(b"repos:\n" + b"- a\n" * 262_000),  # just under the old cap
    "flat-list-60-KiB": _write(b"repos:\n" + b"- a\n" * 15_000),
    "alias-expansion": _write(_ALIAS_BOMB.encode()),
    "json-30000-deep": _write(b"[" * 30_000),
    "strings-64-KiB": _write(b"repos: ['" + b"a" * 4000 + b"'" + b", 'a'" * 10_000 + b"]\n"),
    "1000-unknown-keys": _write("".join(f"k{i}: {i}\n" for i in range(1000)).encode()),
    "largest-valid-100-repos": _write(_LARGEST_VALID.encode()),
    "dest-2000-parts": _write(
        b"repos: [{url: 'https://h.example/r.git', dest: '" + b"a/" * 2000 + b"'}]\n"
    ),  # fmt: skip
    "dest-through-1000-links": _chain,
    "float-tag": _write(b"repos: !!float x\n"),
    "binary": _write(bytes(range(256)) * 200),
}


def one_start(case: str) -> dict[str, float]:
    """In a fresh helper process: one start, its time and its largest process's RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        box = Sandbox(Path(tmp) / "container")
        box.add_jovyan()
        box.mkdir(HOME, mode=0o755, uid=1000, gid=100)
        box.write(
            "/etc/nbinit/config.yaml",
            "version: 1\ngit: {allowed_schemes: [https], allowed_hosts: [git.example.org]}\n",
        )
        CASES[case](box)
        result = box.run(
            ["nbinit", "start", "--", *SERVER],
            env={"NBINIT_DEADLINE": str(DEADLINE), "NBINIT_STATUS_FILE": "/tmp/status.json"},
            timeout=60,
        )
        if result.returncode != 0 or "Traceback" in result.stderr:
            raise SystemExit(f"{case}: start failed:\n{result.stderr}")
        rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return {"seconds": float(result.stdout.split()[-1]), "rss_mb": rss_kb / 1024}


def measure(case: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--one", case], capture_output=True, text=True, check=False
    )
    if output.returncode != 0:
        raise SystemExit(output.stderr or output.stdout)
    return json.loads(output.stdout)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_start(args.one)))
        return 0
    reason = available()
    if reason:
        print(f"hostile_inputs: skipped ({reason})")
        return 0
    worst: dict[str, dict[str, float]] = {}
    for _ in range(args.runs):  # rounds over every case, so drift hits all alike
        for case in CASES:
            figures = measure(case)
            seen = worst.setdefault(case, figures)
            for key, value in figures.items():
                seen[key] = max(seen[key], value)
    base = worst.pop("clean")
    for case, figures in worst.items():
        print(
            f"hostile_start[{case}]: {figures['seconds']:.3f} s "
            f"(baseline clean start {base['seconds']:.3f} s, "
            f"ratio {figures['seconds'] / base['seconds']:.2f}; "
            f"peak RSS {figures['rss_mb']:.1f} MB)"
        )
    slowest = max(worst, key=lambda c: worst[c]["seconds"])
    largest = max(worst, key=lambda c: worst[c]["rss_mb"])
    print(
        f"hostile_dotfile_worst_start: {worst[slowest]['seconds']:.3f} s "
        f"(baseline clean start {base['seconds']:.3f} s, "
        f"ratio {worst[slowest]['seconds'] / base['seconds']:.2f}; {slowest}; "
        f"target <= {DEADLINE + 0.5:g} s; worst of {args.runs} runs)"
    )
    print(
        f"hostile_dotfile_peak_rss: {worst[largest]['rss_mb']:.1f} MB "
        f"(baseline clean start {base['rss_mb']:.1f} MB, "
        f"ratio {worst[largest]['rss_mb'] / base['rss_mb']:.2f}; {largest}; "
        "target <= 100 MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
