"""A class starting at once: N concurrent `nbinit start` against one forge and one config server.

Run as root (it uses the test sandbox: one container, N starts in it at the same moment,
each as its own user with its own home, each the zipapp as pods run it):

    .venv/bin/python benchmarks/class_start.py [--starts 50] [--repos 3] [--mb 1]

Loopback only, bounded: at most 64 starts, each with the default 20 s deadline, the whole
run under 10 minutes. The admin config comes over HTTP from a server in this process; the
repos from one git smart-HTTP server in its own process (`tests/helpers/gitserver.py`), whose
CPU seconds (its own and its reaped http-backend/upload-pack children's, from
/proc/PID/stat) and bytes written (/proc/PID/io wchar: the responses, plus the small
request bodies it pipes to http-backend) are what one start costs the forge. Two rounds:
without git.mirror, then with a fresh mirror of the repos in the container. Prints
time to exec p50/p95/max against the deadline, failures, and the forge's cost per start
(the mirror round against the plain one: target at most 5 % of the bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))
sys.path.insert(0, str(PROJECT / "src"))

from helpers.gitserver import GitHttpProcess, Pusher, make_bare  # noqa: E402
from helpers.httpserver import HTTPServer  # noqa: E402
from helpers.sandbox import Sandbox, available  # noqa: E402

from nbinit import bundle  # noqa: E402

MAX_STARTS = 64
DEADLINE = 20
MIRROR = "/srv/git-mirror"
ZIPAPP = "/opt/nbinit/nbinit.pyz"


def admin_config(urls: list[str], mirror: bool) -> bytes:
    git: dict[str, object] = {"allowed_schemes": ["http"], "min_free_mb": 0}
    if mirror:
        git["mirror"] = MIRROR
    document = {
        "version": 1,
        "deadline": DEADLINE,
        "gpu": {"require": False},
        "git": git,
        "repos": [{"url": u, "dest": f"course/{Path(u).stem}"} for u in urls],
    }
    return json.dumps(document).encode()  # JSON is YAML


def forge_cost(pid: int) -> tuple[float, int]:
    """CPU seconds (with reaped children) and bytes written so far by the forge process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return ticks / os.sysconf("SC_CLK_TCK"), int(io["wchar"])


def script(starts: int, round_name: str, config_url: str) -> str:
    """N starts launched together, each as its own user in its own home; then wait for all
    background syncs to finish (bounded), so the forge's cost is complete."""
    env = (
        f"NBINIT_CONFIG_URL={shlex.quote(config_url)} NBINIT_BAKED_CONFIG=/nonexistent "
        f"NBINIT_DEADLINE={DEADLINE}"
    )
    return "\n".join(
        [
            f"R=/var/tmp/{round_name}; rm -rf $R; mkdir -p $R; chmod 777 $R",
            # One user per pod, as a class has: nbinit syncs into the user's home from passwd.
            f"for i in $(seq {starts}); do",
            "  h=/home/class/$i; rm -rf $h; mkdir -p $h; chown $((2000 + i)):100 $h",
            "  getent passwd class$i >/dev/null || "
            "useradd --no-log-init -M -u $((2000 + i)) -g 100 -d $h class$i",
            "done",
            f"for i in $(seq {starts}); do",
            "  (h=/home/class/$i",
            "   t0=$(date +%s.%N)",
            "   setpriv --reuid=$((2000 + i)) --regid=100 --clear-groups env -i PATH=/usr/bin:/bin "
            f"HOME=$h NBINIT_STATUS_FILE=$h/status.json NBINIT_STATE_DIR=$h {env} "
            f"/usr/bin/python3 {ZIPAPP} start -- sh -c 'date +%s.%N > $HOME/exec-time' "
            "2> $R/$i.log",
            '   echo "$i $t0 $?" > $R/$i.start) &',
            "done",
            "wait",
            # the background syncs: until every progress file says finished (at most 5 min)
            "n=0",
            f"while [ $n -lt 3000 ] && [ $(grep -ls '\"finished\": true' "
            f"/home/class/*/.cache/nbinit/repos.json | wc -l) -lt {starts} ]; do",
            "  n=$((n + 1)); sleep 0.1",
            "done",
            f"for i in $(seq {starts}); do",
            "  set -- $(cat $R/$i.start)",
            "  exec_at=$(cat /home/class/$i/exec-time 2>/dev/null || echo 0)",
            "  warnings=$(grep -c -E '^(WARNING|ERROR|FATAL)' $R/$i.log)",
            "  cloned=$(ls -d /home/class/$i/course/*/.git 2>/dev/null | wc -l)",
            # nbinit's own count, from its start: the rest is the interpreter's start
            "  ready=$(sed -n 's/.*nbinit: ready in \\([0-9.]*\\)s.*/\\1/p' $R/$i.log)",
            '  echo "{\\"start\\": $2, \\"exec\\": $exec_at, \\"code\\": $3, '
            '\\"warnings\\": $warnings, \\"cloned\\": $cloned, \\"ready\\": ${ready:-0}}"',
            "done",
        ]
    )


def run_round(box: Sandbox, forge: GitHttpProcess, urls: list[str], starts: int, mirror: bool):
    name = "mirror" if mirror else "plain"
    server = HTTPServer()
    server.route("/config.yaml", body=admin_config(urls, mirror))
    config_url = server.url("/config.yaml")
    try:
        box.write(f"/{name}.sh", script(starts, name, config_url), mode=0o755)
        cpu0, bytes0 = forge_cost(forge.process.pid)
        result = box.run(["sh", f"/{name}.sh"], timeout=600)
        cpu1, bytes1 = forge_cost(forge.process.pid)
    finally:
        server.stop()
    if result.returncode != 0:
        raise SystemExit(f"class_start: the {name} round failed: {result.stderr[-2000:]}")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return rows, cpu1 - cpu0, bytes1 - bytes0


def report(name: str, rows: list[dict], cpu: float, sent: int, repos: int) -> float:
    starts = len(rows)
    times = sorted(r["exec"] - r["start"] for r in rows if r["exec"] > 0)
    failed = sum(1 for r in rows if r["code"] != 0 or r["exec"] <= 0 or r["cloned"] != repos)
    warned = sum(1 for r in rows if r["warnings"])

    def pct(p: float) -> float:
        return times[min(len(times) - 1, int(round(p * (len(times) - 1))))] if times else 0.0

    per_start = sent / starts
    own = sorted(r["ready"] for r in rows if r["ready"])
    own_max = own[-1] if own else 0.0
    print(
        f"class_start[{name}]: time to exec p50 {pct(0.5):.2f} s, p95 {pct(0.95):.2f} s, "
        f"max {pct(1.0):.2f} s (deadline {DEADLINE} s, ratio {pct(1.0) / DEADLINE:.2f}; "
        f"by nbinit's own clock, from its start, max {own_max:.2f} s); "
        f"{failed}/{starts} failed, {warned} with a WARNING; forge CPU {cpu:.1f} s "
        f"({cpu / starts * 1000:.0f} ms per start), sent {sent / 1e6:.1f} MB "
        f"({per_start / 1e3:.0f} KB per start)"
    )
    return per_start


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--starts", type=int, default=50)
    parser.add_argument("--repos", type=int, default=3)
    parser.add_argument("--mb", type=float, default=1.0, help="size of each repo")
    args = parser.parse_args()
    starts = max(1, min(args.starts, MAX_STARTS))
    reason = available()
    if reason:
        print(f"class_start: skipped ({reason})", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="nbinit-class-") as tmp:
        root = Path(tmp) / "srv"
        root.mkdir()
        names = [f"course{n}" for n in range(args.repos)]
        for name in names:
            pusher = Pusher(make_bare(root, name), Path(tmp) / "work" / name)
            size = int(args.mb * 1e6)
            pusher.publish({"data.txt": os.urandom(size // 2).hex(), "README.md": f"{name}\n"})
        forge = GitHttpProcess(root)
        try:
            urls = [forge.url(name) for name in names]
            box = Sandbox(Path(tmp) / "box")
            box.add_jovyan()
            box.mkdir("/home/class", mode=0o755)
            data, used = bundle.build_zipapp(PROJECT / bundle.DEFAULT_WHEELS, ["/usr/bin/python3"])
            box.write(ZIPAPP, data, mode=0o755)
            for url, name in zip(urls, names):
                target = box.host_view(f"{MIRROR}/127.0.0.1/{name}.git")
                target.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(
                    ["git", "clone", "-q", "--mirror", url, str(target)], check=True, timeout=120
                )
            print(
                f"class: {starts} concurrent starts (zipapp, {used[0] if used else 'sources'}), "
                f"{args.repos} repos x {args.mb:g} MB from one git smart-HTTP server, "
                f"admin config over HTTP, {os.cpu_count()} CPUs"
            )
            plain = report(
                "without mirror", *run_round(box, forge, urls, starts, False), args.repos
            )
            mirrored = report(
                "with git.mirror", *run_round(box, forge, urls, starts, True), args.repos
            )
        finally:
            forge.kill()
    print(
        f"class_start_mirror_bytes: {mirrored / 1e3:.1f} KB per start "
        f"(baseline without mirror {plain / 1e3:.1f} KB, ratio {mirrored / plain:.3f}; "
        "target <= 0.05)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
