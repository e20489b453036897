"""Repo sync figures: 20 repos of ~2 MB from a local git server, nbinit against plain git.

Run as root (it uses the test sandbox, so git runs as jovyan exactly as in a pod):
    .venv/bin/python benchmarks/repos_sync.py [--repos 20] [--mb 2] [--rounds 5]

Prints `name: value unit (baseline value, ratio)`, baselines measured in the same run:
- fresh sync: `nbinit start` for each --workers value (git.workers) vs a sequential
  `git clone --depth 1` loop and `xargs -P8 git clone --depth 1`, all as jovyan, medians of
  --rounds (target: the default within 1.10x of xargs);
- restart with nothing changed upstream, per workers value (target <= 0.3 s for all 20),
  beside its floor measured in the same round: a start without repos plus
  `xargs -P8 git ls-remote` over the same URLs (one parallel ls-remote round, protocol v0
  as nbinit asks for);
- time to exec with one hung server among the repos (target <= deadline + 0.5 s);
- --many N repos (default 100, --many-mb each): time to exec (target < the deadline) and
  the time until the sync, continued in the background, has finished, beside
  `xargs -P8 git clone --depth 1` of the same repos.
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
MANY_DEADLINE = 20  # the default deadline


class InetdGitServer:
    """git:// as xinetd or systemd socket activation serve it: `git daemon --inetd` per
    connection behind a listen backlog of 128.

    `git daemon` itself listens with a backlog of 5: a burst of more simultaneous
    connections than it accepts at once overflows the queue (TcpExtListenOverflows), and
    each dropped SYN costs its client a 1 s retransmit. That measured the server, not the
    client (20 restarts took 1.35 s with 16 workers, 0.29 s with 8), and punished whoever
    opens its connections closest together. Forges listen with 128-511.
    """

    def __init__(self, root: Path) -> None:
        import socketserver
        import subprocess
        import threading

        serve = ["git", "daemon", "--inetd", "--export-all", f"--base-path={root}", str(root)]

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                fd = self.request.fileno()
                subprocess.run(serve, stdin=fd, stdout=fd, stderr=subprocess.DEVNULL, check=False)

        class Server(socketserver.ThreadingTCPServer):
            request_queue_size = 128
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def script(urls: list[str], many: list[str], rounds: int, workers: list[int]) -> str:
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
            # the restart's floor: a start without repos, then one parallel ls-remote round
            "cp /etc/nbinit/none.yaml /etc/nbinit/config.yaml",
            "t0=$(now)",
            "nbinit start -- true 2>/dev/null",
            f"printf '%s\\n' $URLS | xargs -P8 -I{{}} {as_user} "
            "git -c protocol.version=0 ls-remote --symref {} HEAD >/dev/null",
            "t1=$(now)",
            f'echo "\\"floor{r}\\": $(elapsed $t0 $t1),"',
        ]
        for w in workers:
            lines += [
                f"cp /etc/nbinit/workers{w}.yaml /etc/nbinit/config.yaml",
                # nbinit: the whole start up to exec
                f"rm -rf {HOME}/nb {HOME}/.cache",
                "t0=$(now)",
                "nbinit start -- true 2>/dev/null",
                "t1=$(now)",
                f'echo "\\"nbinit{w}_{r}\\": $(elapsed $t0 $t1),"',
                # restart, nothing changed upstream
                "t0=$(now)",
                "nbinit start -- true 2>/dev/null",
                "t1=$(now)",
                f'echo "\\"restart{w}_{r}\\": $(elapsed $t0 $t1),"',
            ]
    lines += [
        # many repos: xargs first, then time to exec and until the background sync finished
        f"MANY={shlex.quote(' '.join(shlex.quote(u) for u in many))}",
        f"rm -rf {HOME}/par; mkdir -p {HOME}/par; chown 1000:100 {HOME}/par",
        "t0=$(now)",
        f"printf '%s\\n' $MANY | xargs -P8 -I{{}} {as_user} sh -c "
        f"'git clone -q --depth 1 {{}} {HOME}/par/$(basename {{}} .git)'",
        "t1=$(now)",
        f"rm -rf {HOME}/par",
        'echo "\\"many_xargs\\": $(elapsed $t0 $t1),"',
        "cp /etc/nbinit/many.yaml /etc/nbinit/config.yaml",
        f"rm -rf {HOME}/nb {HOME}/.cache",
        "t0=$(now)",
        f"NBINIT_DEADLINE={MANY_DEADLINE} nbinit start -- true 2>/dev/null",
        "t1=$(now)",
        'echo "\\"many_exec\\": $(elapsed $t0 $t1),"',
        "n=0",
        f"while ! grep -qs '\"finished\": true' {HOME}/.cache/nbinit/repos.json; do",
        '  n=$((n + 1)); [ "$n" -lt 6000 ] || break; sleep 0.1',  # at most 10 minutes
        "done",
        "t2=$(now)",
        'echo "\\"many_done\\": $(elapsed $t0 $t2),"',
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


def schema_default(section: str, key: str) -> object:
    from nbinit import schema

    return schema.defaults()[section][key]


def config(urls: list[str], workers: int, deadline: int = 120) -> str:
    """The admin config: every repo, git:// and http:// allowed (the hung server is http)."""
    import yaml

    return yaml.safe_dump(
        {
            "version": 1,
            "deadline": deadline,
            "git": {"allowed_schemes": ["git", "http"], "min_free_mb": 0, "workers": workers},
            "repos": [{"url": u, "dest": f"nb/{Path(u).stem}"} for u in urls],
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--mb", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--workers", default="4,8", help="git.workers values to compare (comma-separated)"
    )
    parser.add_argument("--many", type=int, default=100, help="repos in the many-repo case")
    parser.add_argument("--many-mb", type=float, default=0.5)
    parser.add_argument(
        "--server",
        choices=["inetd", "daemon", "http"],
        default="inetd",
        help="git:// per connection behind a normal backlog (inetd), `git daemon`, smart HTTP",
    )
    args = parser.parse_args()
    reason = available()
    if reason:
        print(f"repos_sync: skipped ({reason})", file=sys.stderr)
        return 1
    workers = [int(w) for w in args.workers.split(",")]
    default_workers = int(str(schema_default("git", "workers")))
    with tempfile.TemporaryDirectory(prefix="nbinit-bench-") as tmp:
        root = Path(tmp) / "srv"
        root.mkdir()
        for n in range(args.repos):
            pusher = Pusher(make_bare(root, f"repo{n:02d}"), Path(tmp) / "work" / str(n))
            size = int(args.mb * 1e6)
            pusher.publish({"data.bin": os.urandom(size // 2).hex(), "README.md": f"repo {n}\n"})
        for n in range(args.many):
            pusher = Pusher(make_bare(root, f"many{n:03d}"), Path(tmp) / "work" / f"m{n}")
            size = int(args.many_mb * 1e6)
            pusher.publish({"data.bin": os.urandom(size // 2).hex(), "README.md": f"many {n}\n"})
        server: InetdGitServer | GitDaemon | GitHttpServer
        if args.server == "inetd":
            server = InetdGitServer(root)
        elif args.server == "daemon":
            server = GitDaemon(root)
        else:
            server = GitHttpServer(root).start()
        hang = HangServer()
        urls = [server.url(f"repo{n:02d}") for n in range(args.repos)]
        many = [server.url(f"many{n:03d}") for n in range(args.many)]
        box = Sandbox(Path(tmp) / "box")
        box.add_jovyan()
        box.mkdir(HOME, uid=1000, gid=100)
        for w in workers:
            box.write(f"/etc/nbinit/workers{w}.yaml", config(urls, w))
        box.write("/etc/nbinit/hung.yaml", config([*urls, hang.url("hung")], default_workers))
        box.write("/etc/nbinit/many.yaml", config(many, default_workers, deadline=MANY_DEADLINE))
        box.write("/etc/nbinit/none.yaml", config([], default_workers))
        box.write("/bench.sh", script(urls, many, args.rounds, workers), mode=0o755)
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

    seq, par, floor = median("seq"), median("xargs"), median("floor")
    mb = args.repos * args.mb
    print(
        f"repos: {args.repos} x {args.mb:g} MB ({mb:g} MB) over {args.server}, "
        f"median of {args.rounds} rounds; default git.workers {default_workers}"
    )
    for w in workers:
        nb, restart = median(f"nbinit{w}_"), median(f"restart{w}_")
        mark = " (the default)" if w == default_workers else ""
        print(
            f"fresh_sync_vs_xargs[workers={w}]{mark}: {nb:.2f} s "
            f"(xargs -P8 git clone {par:.2f} s, ratio {nb / par:.2f}; target <= 1.10)"
        )
        print(
            f"fresh_sync_vs_sequential[workers={w}]: {nb:.2f} s "
            f"(git clone loop {seq:.2f} s, ratio {nb / seq:.2f})"
        )
        print(
            f"restart_nothing_changed[workers={w}]: {restart:.2f} s (start without repos + "
            f"xargs -P8 git ls-remote {floor:.2f} s, ratio {restart / floor:.2f}; "
            f"target 0.30 s, ratio {restart / 0.3:.2f})"
        )
    print(
        f"many_repos_time_to_exec: {data['many_exec']:.2f} s ({args.many} repos x "
        f"{args.many_mb:g} MB, deadline {MANY_DEADLINE} s, ratio "
        f"{data['many_exec'] / MANY_DEADLINE:.2f})"
    )
    print(
        f"many_repos_sync_done: {data['many_done']:.2f} s (xargs -P8 git clone "
        f"{data['many_xargs']:.2f} s, ratio {data['many_done'] / data['many_xargs']:.2f})"
    )
    hung = data["hung"]
    print(
        f"time_to_exec_hung_server: {hung:.2f} s "
        f"(deadline {DEADLINE} + 0.5 = {DEADLINE + 0.5:.2f} s, ratio {hung / (DEADLINE + 0.5):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
