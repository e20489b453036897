"""The user-side process: many repos, bounded parallelism, progress, one JSON event per line.

Started by nbinit.git.launcher as `python -I -m nbinit.git.worker` (from the zipapp too),
already as the user; the plan comes as JSON on stdin.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from typing import IO, Any, Callable, Optional

from nbinit import fdwalk, privilege
from nbinit.errors import NbinitError
from nbinit.git.lock import Heartbeats, RepoLock, lock_name, locks_directory
from nbinit.git.policy import GitPolicy, Outcome, RepoPlan
from nbinit.git.repo import RepoSync
from nbinit.git.runner import Runner, git_environment

# Seconds between two rewrites of the progress file. A restart where nothing changed ends
# 20 repos in about that time: rewriting the whole file at each repo's start and end (40
# rewrites) cost more than the repos themselves. The last state always lands: a change
# that comes too soon is written by a timer, and finish() writes at once.
PROGRESS_INTERVAL = 0.25


class Progress:
    """The worker's progress file in the user's cache, which `nbinit status` shows."""

    def __init__(self, path: str, plans: list[RepoPlan]) -> None:
        self.path = path
        self.mutex = threading.Lock()
        self.data: dict[str, Any] = {
            "pid": os.getpid(),
            "host": os.uname().nodename,  # socket.gethostname(), without the import
            "started": time.time(),
            "updated": time.time(),
            "finished": False,
            "repos": [
                {"dest": p.dest, "url": p.shown, "state": "waiting", "outcome": "", "message": ""}
                for p in plans
            ],
        }
        self.written = 0.0  # time.monotonic() of the last write
        self.pending: Optional[threading.Timer] = None

    def set(self, dest: str, **fields: Any) -> None:
        with self.mutex:
            for entry in self.data["repos"]:
                if entry["dest"] == dest:
                    entry.update(fields)
            self.data["updated"] = time.time()
            wait = self.written + PROGRESS_INTERVAL - time.monotonic()
            if wait <= 0:
                self.write()
            elif self.pending is None:
                self.pending = threading.Timer(wait, self.write_pending)
                self.pending.daemon = True
                self.pending.start()

    def write_pending(self) -> None:
        with self.mutex:
            if self.pending is not None:
                self.pending = None
                self.write()

    def finish(self) -> None:
        with self.mutex:
            if self.pending is not None:
                self.pending.cancel()
                self.pending = None
            self.data["finished"] = True
            self.data["updated"] = time.time()
            self.write()

    def write(self) -> None:
        self.written = time.monotonic()
        if not self.path:
            return
        from nbinit import status

        # Atomic but not fsync'd: it is rewritten at every repo's start and end, under the
        # mutex the workers share, and only reports progress. A full disk must not stop the
        # sync itself.
        with contextlib.suppress(OSError):
            status.write_json_atomic(self.path, self.data, mode=0o644, durable=False)


Reporter = Callable[[Outcome], None]


def sync_all(
    plans: list[RepoPlan],
    policy: GitPolicy,
    home: str,
    env: dict[str, str],
    report: Reporter,
    *,
    dry_run: bool = False,
    terminal: bool = False,
    progress_file: str = "",
) -> list[Outcome]:
    """Sync every repo with at most policy.workers at once; report each as it finishes."""
    from concurrent.futures import ThreadPoolExecutor

    umask = os.umask(0o022)  # read once, before any thread creates files
    os.umask(umask)
    git_env = git_environment(env, home, policy)
    hooks_dir = tempfile.mkdtemp(prefix="nbinit-no-hooks-")
    progress = Progress("" if dry_run else progress_file, plans)
    progress.write()
    heartbeats = Heartbeats()
    runner = Runner(policy, git_env, hooks_dir, terminal)

    def one(plan: RepoPlan) -> Outcome:
        sync = RepoSync(plan, runner, home, policy, umask)
        if dry_run:
            outcome = sync.run(dry_run=True)
            report(outcome)
            return outcome
        lock = RepoLock(locks_directory(home), lock_name(plan.dest))
        try:
            holder = lock.acquire()
        except OSError as exc:
            holder = f"no lock possible ({exc.strerror})"
        if holder:
            outcome = sync.result("skipped", f"{plan.dest}: {holder} is syncing it", "INFO")
        else:
            heartbeats.add(lock)
            sync.lock = lock
            progress.set(plan.dest, state="running")
            try:
                sync.remove_leftovers()
                outcome = sync.run()
            finally:
                heartbeats.remove(lock)
                lock.release()
        progress.set(plan.dest, state="done", outcome=outcome.outcome, message=outcome.message)
        report(outcome)
        return outcome

    try:
        workers = max(1, min(policy.workers, len(plans) or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gitsync") as pool:
            outcomes = list(pool.map(one, plans))
    finally:
        heartbeats.stop.set()
        progress.finish()
        runner.close()
        fdwalk.remove_tree(hooks_dir)
    return outcomes


def worker_main(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """`python -m nbinit.git.worker`: the plan as JSON on stdin, one JSON event per line out."""
    import signal

    from nbinit.log import Log

    def stop(signum: int, frame: Any) -> None:
        privilege.kill_children()
        os._exit(143)

    signal.signal(signal.SIGTERM, stop)
    job = json.loads(stdin.read().decode("utf-8"))
    home = job["home"]
    policy = GitPolicy.from_dict(job["policy"])
    plans = [RepoPlan(**item) for item in job["repos"]]
    log = Log.from_env()
    log.step = "repos"
    orphaned = threading.Event()  # nbinit has exec'd the server: nobody reads stdout now
    out_lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        with out_lock:
            if not orphaned.is_set():
                try:
                    stdout.write(json.dumps(event).encode() + b"\n")
                    stdout.flush()
                    return
                except (BrokenPipeError, OSError, ValueError):
                    orphaned.set()
        if event.get("event") == "repo":  # continuing in the background: the pod log
            log.emit(event["level"], event["message"] + " (background)")

    def report(outcome: Outcome) -> None:
        emit({"event": "repo", **outcome._asdict()})

    emit({"event": "started", "pid": os.getpid()})
    try:
        outcomes = sync_all(
            plans,
            policy,
            home,
            dict(os.environ),
            report,
            dry_run=job.get("dry_run", False),
            terminal=job.get("terminal", False),
            progress_file=job.get("progress_file", ""),
        )
    except NbinitError as exc:
        emit({"event": "error", "message": str(exc)})
        return 1
    problems_file = job.get("problems")
    if problems_file:  # the start's problems file, with this sync's outcome, as the user
        from nbinit import problems

        try:
            problems.update(
                home,
                problems_file["name"],
                problems_file["run"],
                repos=[o.message for o in outcomes if o.level != "INFO"],
            )
        except OSError as exc:
            log.warning(f"cannot update the problems file: {exc.strerror or exc}")
    emit({"event": "finished"})
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.stdin.buffer, sys.stdout.buffer))
