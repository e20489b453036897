"""Repo sync figures: 20 repos of ~2 MB from a local git server, nbinit against plain git.

Run as root (it uses the test sandbox, so git runs as jovyan exactly as in a pod):
    .venv/bin/python benchmarks/repos_sync.py [--repos 20] [--mb 2] [--rounds 3]

Prints `name: value unit (baseline value, ratio)`, baselines measured in the same run:
- fresh sync: `nbinit start` (git.workers 8) vs a sequential `git clone --depth 1` loop and
  `xargs -P8 git clone --depth 1`, all as jovyan, medians of --rounds;
- restart with nothing changed upstream (target < 1 s for all 20);
- time to exec with one hung server among the repos (target <= deadline + 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.gitserver import GitDaemon, GitHttpServer, HangServer, Pusher, make_bare  # noqa: E402
from helpers.sandbox import Sandbox, available  # noqa: E402

HOME = "/home/jovyan"
DEADLINE = 5


def script(urls: list[str], rounds: int) -> str:
    """One shell script run inside the container, so its setup is not measured."""
    as_user = f"setpriv --reuid=1000 --regid=100 --clear-groups env HOME={HOME}"
    listing = " ".join(shlex.quote(u) for u in urls)
    lines = [
        "set -e",
        "now() { date +%s.%N; }",
        'elapsed() { awk "BEGIN{print $2 - $1}"; }',  # bc prints .53, not JSON
        f"URLS={shlex.quote(listing)}",
        'echo "{"',
    ]
    for r in range(rounds):
        lines += [
            # sequential git clone loop, as the user
            f"rm -rf {HOME}/seq; mkdir -p {HOME}/seq; chown 1000:100 {HOME}/seq",
            "t0=$(now)",
            f"for u in $URLS; do {as_user} git clone -q --depth 1 "
            f'"$u" {HOME}/seq/$(basename $u .git); done',
            "t1=$(now)",
            f'echo "\\"seq{r}\\": $(elapsed $t0 $t1),"',
            # xargs -P8, as the user
            f"rm -rf {HOME}/par; mkdir -p {HOME}/par; chown 1000:100 {HOME}/par",
            "t0=$(now)",
            f"printf '%s\\n' $URLS | xargs -P8 -I{{}} {as_user} sh -c "
            f"'git clone -q --depth 1 {{}} {HOME}/par/$(basename {{}} .git)'",
            "t1=$(now)",
            f'echo "\\"xargs{r}\\": $(elapsed $t0 $t1),"',
            # nbinit: the whole start up to exec
            f"rm -rf {HOME}/nb {HOME}/.cache",
            "t0=$(now)",
            "nbinit start -- true 2>/dev/null",
            "t1=$(now)",
            f'echo "\\"nbinit{r}\\": $(elapsed $t0 $t1),"',
            # restart, nothing changed upstream
            "t0=$(now)",
            "nbinit start -- true 2>/dev/null",
            "t1=$(now)",
            f'echo "\\"restart{r}\\": $(elapsed $t0 $t1),"',
        ]
    lines += [
        # a hung server among the repos: time to exec against the deadline
        "cp /etc/nbinit/hung.yaml /etc/nbinit/config.yaml",
        f"rm -rf {HOME}/nb {HOME}/.cache",
        "t0=$(now)",
        f"NBINIT_DEADLINE={DEADLINE} nbinit start -- true 2>/dev/null",
        "t1=$(now)",
        'echo "\\"hung\\": $(elapsed $t0 $t1)"',
        'echo "}"',
    ]
    return "\n".join(lines) + "\n"


def config(urls: list[str], workers: int) -> str:
    """The admin config: every repo, git:// and http:// allowed (the hung server is http)."""
    import yaml

    return yaml.safe_dump(
        {
            "version": 1,
            "deadline": 120,
            "git": {"allowed_schemes": ["git", "http"], "min_free_mb": 0, "workers": workers},
            "repos": [{"url": u, "dest": f"nb/{Path(u).stem}"} for u in urls],
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--mb", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--server", choices=["daemon", "http"], default="daemon")
    args = parser.parse_args()
    reason = available()
    if reason:
        print(f"repos_sync: skipped ({reason})", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="nbinit-bench-") as tmp:
        root = Path(tmp) / "srv"
        root.mkdir()
        for n in range(args.repos):
            pusher = Pusher(make_bare(root, f"repo{n:02d}"), Path(tmp) / "work" / str(n))
            size = int(args.mb * 1e6)
            pusher.publish({"data.bin": os.urandom(size // 2).hex(), "README.md": f"repo {n}\n"})
        server = GitDaemon(root) if args.server == "daemon" else GitHttpServer(root).start()
        hang = HangServer()
        urls = [server.url(f"repo{n:02d}") for n in range(args.repos)]
        box = Sandbox(Path(tmp) / "box")
        box.add_jovyan()
        box.mkdir(HOME, uid=1000, gid=100)
        box.write("/etc/nbinit/config.yaml", config(urls, args.workers))
        box.write("/etc/nbinit/hung.yaml", config([*urls, hang.url("hung")], args.workers))
        box.write("/bench.sh", script(urls, args.rounds), mode=0o755)
        result = box.run(["sh", "/bench.sh"], timeout=1800)
        server.stop()
        hang.stop()
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return 1
    try:
        data = json.loads(result.stdout)
    except ValueError:
        print(result.stdout, result.stderr[-3000:], file=sys.stderr)
        return 1

    def median(name: str) -> float:
        return statistics.median(data[f"{name}{r}"] for r in range(args.rounds))

    seq, par, nb, restart = median("seq"), median("xargs"), median("nbinit"), median("restart")
    mb = args.repos * args.mb
    print(
        f"repos: {args.repos} x {args.mb:g} MB ({mb:g} MB) over {args.server}, "
        f"git.workers {args.workers}, median of {args.rounds} rounds"
    )
    print(
        f"fresh_sync_vs_xargs: {nb:.2f} s (xargs -P8 git clone {par:.2f} s, ratio {nb / par:.2f})"
    )
    print(
        f"fresh_sync_vs_sequential: {nb:.2f} s (git clone loop {seq:.2f} s, ratio {nb / seq:.2f})"
    )
    print(f"restart_nothing_changed: {restart:.2f} s (target 1.00 s, ratio {restart:.2f})")
    hung = data["hung"]
    print(
        f"time_to_exec_hung_server: {hung:.2f} s "
        f"(deadline {DEADLINE} + 0.5 = {DEADLINE + 0.5:.2f} s, ratio {hung / (DEADLINE + 0.5):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
