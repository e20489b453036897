"""Sync of one repo (clone, fast-forward, merge or report), careful with the user's work."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from typing import Any, Optional

from nbinit import fdwalk
from nbinit.errors import NbinitError
from nbinit.git.gitdir import current_branch, index_paths, read_origin_url, read_ref
from nbinit.git.lock import RepoLock
from nbinit.git.policy import (
    GitPolicy,
    Outcome,
    RepoPlan,
    check_branch,
    ensure_inside,
    free_mb,
    mirror_repo,
    parse_url,
    unused_name,
)
from nbinit.git.runner import GitFailed, Runner
from nbinit.urls import public_url

STALE_INDEX_LOCK = 600.0  # seconds; as nbgitpuller: an index.lock that old is from a dead git
MERGE_MARKER = "nbinit-merging"  # in .git: the merge in progress is ours, safe to conclude
IDENTITY = ("-c", "user.name=nbinit", "-c", "user.email=nbinit@localhost")


def _same_origin(a: str, b: str) -> bool:
    """Two spellings of one remote: case of scheme and host, trailing '/' and '.git' aside."""

    def norm(url: str) -> str:
        url = url.strip().rstrip("/")
        url = url[:-4] if url.endswith(".git") else url
        scheme, host, path, _ = parse_url(url)
        return f"{scheme}|{host}|{path.rstrip('/')}"

    return norm(a) == norm(b)


class RepoSync:
    """Clone or update one repo with nbgitpuller's care for the user's work."""

    def __init__(
        self, plan: RepoPlan, runner: Runner, home: str, policy: GitPolicy, umask: int = 0o022
    ) -> None:
        self.plan = plan
        self.git = runner
        self.home = home
        self.policy = policy
        self.path = plan.path
        self.lock: Optional[RepoLock] = None
        self.umask = umask
        self.current_branch = ""  # the checked-out branch, once why_not_updatable() found one

    def result(self, outcome: str, message: str, level: str = "INFO", **details: Any) -> Outcome:
        return Outcome(self.plan.dest, outcome, message, level, details)

    def left(self, why: str) -> Outcome:
        return self.result("left", f"{self.plan.dest}: {why}: left as is", "WARNING")

    # -- entry ---------------------------------------------------------------------------
    def run(self, dry_run: bool = False) -> Outcome:
        try:
            ensure_inside(self.home, self.path)
            if dry_run:
                return self.dry_run()
            if not os.path.lexists(self.path):
                return self.clone()
            return self.update()
        except (NbinitError, GitFailed) as exc:
            return self.result("failed", f"{self.plan.dest}: {exc}", "WARNING")

    def dry_run(self) -> Outcome:
        if not os.path.lexists(self.path):
            return self.result(
                "would-clone", f"would clone {self.plan.shown} into {self.plan.dest}"
            )
        problem = self.why_not_updatable()
        if problem:
            return self.result("would-leave", f"would leave {self.plan.dest}: {problem}")
        return self.result("would-update", f"would update {self.plan.dest} from {self.plan.shown}")

    # -- clone -----------------------------------------------------------------------------
    def remove_leftovers(self) -> None:
        """A killed clone leaves only a temp dir beside dest; under our lock it is dead."""
        parent, name = os.path.split(self.path)
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(parent):
                if entry.startswith(f".{name}.nbinit-clone-"):
                    fdwalk.remove_tree(os.path.join(parent, entry))

    def clone(self, replacing: bool = False) -> Outcome:
        parent = os.path.dirname(self.path)
        existing = parent
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        free = free_mb(existing)
        if not replacing and free < self.policy.min_free_mb:
            return self.result(
                "skipped",
                f"{self.plan.dest}: only {free:.0f} MB free in the home "
                f"(git.min_free_mb {self.policy.min_free_mb}): new clone skipped",
                "WARNING",
            )
        ensure_inside(self.home, parent, parent=True)
        os.makedirs(parent, exist_ok=True)
        ensure_inside(self.home, parent, parent=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.nbinit-clone-", dir=parent)
        try:
            submodules = (
                ["--recurse-submodules", "--shallow-submodules"]
                if self.policy.submodules
                else ["--no-recurse-submodules"]
            )
            args = ["clone", *submodules, "--single-branch"]
            if self.plan.depth > 0:
                args.append(f"--depth={self.plan.depth}")
            if self.plan.branch:
                args.append(f"--branch={self.plan.branch}")
            if self.git.terminal:
                args.append("--progress")
            mirror_note = self.clone_into(args, tmp)
            # Checked again right before the write that makes the clone visible.
            ensure_inside(self.home, self.path)
            if os.path.lexists(self.path):
                raise NbinitError(f"{self.plan.dest} appeared while cloning", "run sync again")
            self.check_lock()
            os.chmod(tmp, 0o777 & ~self.umask)  # mkdtemp's 0700 is not what git would make
            os.rename(tmp, self.path)
        finally:
            if os.path.lexists(tmp):
                fdwalk.remove_tree(tmp)
        branch = current_branch(os.path.join(self.path, ".git"))
        message = f"cloned {self.plan.shown} into {self.plan.dest} ({branch or 'detached'})"
        if mirror_note:
            return self.result("cloned", f"{message}; {mirror_note}", "WARNING")
        return self.result("cloned", message)

    def clone_into(self, args: list[str], tmp: str) -> str:
        """Clone into tmp, borrowing from git.mirror when there is one; '' or a mirror note.

        With the mirror the server sends only what the mirror lacks; --dissociate then
        copies the borrowed objects, so the clone works after the mirror is gone. A mirror
        that is missing, stale or breaks the clone never fails it: the note (a WARNING)
        says so, and a broken one is dropped for a clone from the server alone.
        """
        source = ["--", self.plan.url, tmp]
        if not self.policy.mirror:
            self.git.run([*args, *source], stream=True)
            return ""
        mirror, problem = mirror_repo(self.policy.mirror, self.plan.url)
        fix = "cloned from the server alone; refresh or fix the mirror (git.mirror)"
        if problem:
            self.git.run([*args, *source], stream=True)
            return f"mirror {mirror or self.policy.mirror}: {problem}: {fix}"
        borrowing = ["--reference-if-able", mirror, "--dissociate"]
        try:
            self.git.run([*args, *borrowing, *source], stream=True)
        except GitFailed as exc:
            fdwalk.remove_tree(tmp)
            try:
                os.mkdir(tmp, 0o700)
            except OSError as error:
                raise NbinitError(
                    f"cannot clone again into {tmp}: {error.strerror}", "run sync again"
                ) from None
            self.git.run([*args, *source], stream=True)
            return f"mirror {mirror}: the clone borrowing from it failed ({exc}): {fix}"
        if not os.path.isdir(mirror):  # --reference-if-able went on without it
            return f"mirror {mirror}: gone while cloning (unmounted or replaced?): {fix}"
        sha = read_ref(os.path.join(tmp, ".git"), "HEAD")
        if not sha or self.git.ok(["--git-dir", mirror, "cat-file", "-e", f"{sha}^{{commit}}"]):
            return ""
        branch = current_branch(os.path.join(tmp, ".git")) or ""
        if branch and read_ref(mirror, f"refs/heads/{branch}") == sha:
            # Its refs name the commit but its objects cannot give it: git fell back on
            # the server for them.
            return f"mirror {mirror}: corrupt (cannot read {sha[:10]}, which it lists): {fix}"
        return (
            f"mirror {mirror}: stale (lacks upstream's {sha[:10]}): the difference came "
            "from the server; refresh the mirror more often (git.mirror)"
        )

    def check_lock(self) -> None:
        if self.lock is not None and self.lock.lost:
            raise NbinitError("the repo lock was broken by another nbinit", "run sync again")

    # -- update ----------------------------------------------------------------------------
    def why_not_updatable(self) -> str:
        """'' when dest is our user's clone of this origin on a branch, else why not.

        On '' the branch is in self.current_branch.
        """
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return "disappeared"
        import stat

        if not stat.S_ISDIR(info.st_mode):
            return "exists and is not a directory"
        if info.st_uid != os.geteuid():
            return "is not owned by you"
        gitdir = os.path.join(self.path, ".git")
        try:
            git_info = os.lstat(gitdir)
        except FileNotFoundError:
            if not os.listdir(self.path):
                return "exists and is empty (not a clone)"
            return "exists and is not a git repository"
        if not stat.S_ISDIR(git_info.st_mode):
            return ".git is not a directory (a worktree, submodule or link)"
        origin = read_origin_url(gitdir)
        if origin is None:  # not in the plain form nbinit writes: git reads it
            result = self.git.run(
                ["config", "--local", "--get", "remote.origin.url"], repo=self.path, check=False
            )
            if result.returncode not in (0, 1):
                return f"is not a readable git repository ({self.git.last_line(result)})"
            origin = result.stdout.decode("utf-8", "replace").strip() or None
        branch = current_branch(gitdir)
        if origin is None or not _same_origin(origin, self.plan.url):
            return f"is a clone of another origin ({public_url(origin or 'none')})"
        if branch is None:
            return "HEAD is detached (someone checked out a commit)"
        self.current_branch = branch
        return ""

    def recover_or_report_busy(self) -> str:
        """Clear what a killed git left; '' when the repo is free, else what is in progress.

        A stale index.lock is deleted and nbinit's own interrupted merge concluded; a
        fresh lock, a rebase, cherry-pick, revert or the user's own merge is reported.
        """
        gitdir = os.path.join(self.path, ".git")
        index_lock = os.path.join(gitdir, "index.lock")
        if os.path.exists(index_lock):
            if time.time() - os.stat(index_lock).st_mtime > STALE_INDEX_LOCK:
                os.unlink(index_lock)  # left by a git that was killed (nbgitpuller#30)
            else:
                return "another git is working in it (.git/index.lock)"
        for name in ("rebase-merge", "rebase-apply", "CHERRY_PICK_HEAD", "REVERT_HEAD"):
            if os.path.exists(os.path.join(gitdir, name)):
                return f"a {name.split('_')[0].split('-')[0].lower()} is in progress"
        if os.path.exists(os.path.join(gitdir, "MERGE_HEAD")):
            if not os.path.exists(os.path.join(gitdir, MERGE_MARKER)):
                return "a merge you started is in progress"
            # Our own merge, interrupted: conclude it keeping the user's side.
            self.commit_all("Merge upstream (nbinit, concluded after an interruption)")
            os.unlink(os.path.join(gitdir, MERGE_MARKER))
        return ""

    def remote_tip(self) -> tuple[str, str]:
        """(branch, sha) upstream: the configured branch, else the remote's HEAD."""
        patterns = ["HEAD"] + ([f"refs/heads/{self.plan.branch}"] if self.plan.branch else [])
        # Protocol v0: the refs come with the server's first answer, one round trip (one
        # HTTP request) instead of v2's two. v2 saves nothing here: git 2.39 sends no
        # ref-prefix for these patterns, so the server lists every ref either way. Over
        # git:// v2 cost 40 ms more per repo besides: its request goes out in small writes
        # that Nagle's algorithm holds until the server's delayed ACK.
        text = self.git.out(
            ["ls-remote", "--symref", self.plan.url, *patterns], config=("protocol.version=0",)
        )
        refs: dict[str, str] = {}
        head_branch = ""
        for line in text.splitlines():
            left, _, name = line.partition("\t")
            if left.startswith("ref: ") and name == "HEAD":
                head_branch = left[5:].strip().removeprefix("refs/heads/")
            else:
                refs[name] = left.strip()
        branch = self.plan.branch or head_branch
        if branch and not self.plan.branch:
            try:  # the server names its HEAD branch: it must be a sane name too
                check_branch(branch)
            except NbinitError as exc:
                raise GitFailed(f"remote HEAD: {exc.problem}") from None
        if not branch:
            raise GitFailed("the remote has no HEAD branch: set `branch:` for this repo")
        sha = refs.get(f"refs/heads/{branch}") or (
            refs.get("HEAD") if not self.plan.branch else None
        )
        if not sha:
            raise GitFailed(f"branch {branch} does not exist upstream")
        return branch, sha

    def has_commit(self, sha: str) -> bool:
        return self.git.ok(["cat-file", "-e", f"{sha}^{{commit}}"], repo=self.path)

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.git.ok(["merge-base", "--is-ancestor", older, newer], repo=self.path)

    def rev(self, ref: str) -> str:
        """A ref's sha: from the files when they say (no process), else from git."""
        found = read_ref(os.path.join(self.path, ".git"), ref)
        if found:
            return found
        return self.git.out(
            ["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], repo=self.path, check=False
        )

    def fetch(self, branch: str, sha: str, base: str) -> None:
        """Fetch branch's tip; on a shallow clone deepen only until it connects to base."""
        refspec = f"+refs/heads/{branch}:refs/nbinit/incoming"
        shallow = os.path.exists(os.path.join(self.path, ".git", "shallow"))
        common = ["fetch", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head"]
        if shallow:
            # A plain --depth fetch cuts the new tip off from what we have (no merge base);
            # deepening in bounded steps keeps the download small even after a force-push.
            self.git.run(
                [*common, f"--depth={max(self.plan.depth, 1)}", self.plan.url, refspec],
                repo=self.path,
            )
            for step in (4, 32, 256, 2048):
                if not base or self.is_ancestor(base, sha):
                    return
                self.git.run([*common, f"--deepen={step}", self.plan.url, refspec], repo=self.path)
        else:
            self.git.run([*common, self.plan.url, refspec], repo=self.path)

    def update(self) -> Outcome:
        problem = self.why_not_updatable()
        if problem:
            return self.left(problem)
        problem = self.recover_or_report_busy()
        if problem:
            return self.left(problem)
        branch, sha = self.remote_tip()
        if branch != self.current_branch:
            return self.switch_branch(branch, sha)
        tracking = f"refs/remotes/origin/{branch}"
        last = self.rev(tracking)  # the upstream commit we last synced to
        head = self.rev("HEAD")
        if sha not in (last, head) and not self.has_commit(sha):
            self.fetch(branch, sha, last or head)
        if last and last != sha and not self.is_ancestor(last, sha):
            return self.diverged(last, sha)
        restored = self.restore_deleted(sha)
        if head == sha or self.is_ancestor(sha, head):
            if last != sha:
                self.git.run(["update-ref", tracking, sha], repo=self.path)
            if restored:
                return self.result(
                    "updated", f"{self.plan.dest}: restored {restored} deleted file(s)"
                )
            return self.result("unchanged", f"{self.plan.dest}: up to date ({branch})")
        renamed = self.rename_clashing_untracked(head, sha)
        self.git.run(["reset", "-q", "--mixed"], repo=self.path)
        committed = False
        if not self.git.ok(["diff-files", "--quiet"], repo=self.path):
            self.commit_all("Automatic commit by nbinit before merging upstream")
            committed = True
        self.merge(sha)
        self.git.run(["update-ref", tracking, sha], repo=self.path)
        if self.policy.submodules:
            self.git.run(
                ["submodule", "update", "--init", "--recursive", "--depth=1"], repo=self.path
            )
        notes = []
        if committed:
            notes.append("your changes kept and auto-committed")
        if renamed:
            notes.append(f"{len(renamed)} clashing file(s) renamed: " + ", ".join(renamed[:3]))
        if restored:
            notes.append(f"{restored} deleted file(s) restored")
        suffix = f" ({'; '.join(notes)})" if notes else ""
        return self.result("updated", f"updated {self.plan.dest} to {sha[:10]}{suffix}")

    def restore_deleted(self, sha: str) -> int:
        """A file the user deleted comes back: upstream's copy, or HEAD's if upstream dropped it."""
        indexed = index_paths(os.path.join(self.path, ".git"))
        if indexed is not None and all(
            os.path.lexists(os.path.join(self.path, rel)) for rel in indexed
        ):
            return 0  # every tracked file is there (the restart's case): no git process
        text = self.git.out(["ls-files", "--deleted", "-z"], repo=self.path)
        deleted = sorted({p for p in text.split("\0") if p})
        if not deleted:
            return 0
        upstream = self.git.out(
            ["ls-tree", "-r", "-z", "--name-only", sha, "--", *deleted], repo=self.path
        )
        in_upstream = [p for p in upstream.split("\0") if p]
        from_head = [p for p in deleted if p not in set(in_upstream)]
        if in_upstream:
            self.git.run(["checkout", sha, "--", *in_upstream], repo=self.path)
            self.git.run(["reset", "-q", "--", *in_upstream], repo=self.path)
        if from_head:
            self.git.run(["checkout", "HEAD", "--", *from_head], repo=self.path)
        return len(deleted)

    def rename_clashing_untracked(self, head: str, sha: str) -> list[str]:
        """Untracked files where upstream adds one move aside (name__<time>.ext), never lost."""
        text = self.git.out(
            ["diff", "--name-only", "--no-renames", "--diff-filter=A", "-z", head, sha],
            repo=self.path,
        )
        stamp = time.strftime("%Y%m%d%H%M%S")
        renamed = []
        for rel in (p for p in text.split("\0") if p):
            # A clash may be the file itself or an untracked file where upstream has a dir.
            parts = rel.split("/")
            for depth in range(1, len(parts) + 1):
                candidate = os.path.join(self.path, *parts[:depth])
                if not os.path.lexists(candidate):
                    break
                if (
                    depth < len(parts)
                    and os.path.isdir(candidate)
                    and not os.path.islink(candidate)
                ):
                    continue
                root, ext = os.path.splitext(candidate)
                target = unused_name(f"{root}__{stamp}", ext, separator="_")
                ensure_inside(self.home, os.path.dirname(candidate), parent=True)
                os.rename(candidate, target)
                renamed.append(os.path.relpath(target, self.path))
                break
        return renamed

    def commit_all(self, message: str) -> None:
        self.git.run(
            [*IDENTITY, "commit", "-q", "-a", "--no-verify", "--allow-empty", "-m", message],
            repo=self.path,
        )

    def merge(self, sha: str) -> None:
        """-Xours: upstream's hunks merge in, clashing hunks keep the user's side."""
        marker = os.path.join(self.path, ".git", MERGE_MARKER)
        with open(marker, "w"):
            pass
        result = self.git.run(
            [
                *IDENTITY,
                "merge",
                "-q",
                "-Xours",
                "--no-edit",
                "--no-verify",
                "-m",
                f"Merge upstream {sha[:10]} (nbinit)",
                sha,
            ],
            repo=self.path,
            check=False,
        )
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode != 0:
            if "CONFLICT (modify/delete)" in output:
                # The user changed a file upstream deleted: keep the user's file.
                self.commit_all(f"Merge upstream {sha[:10]} keeping your files (nbinit)")
            else:
                self.git.run(["merge", "--abort"], repo=self.path, check=False)
                os.unlink(marker)
                raise GitFailed(f"merge failed: {self.git.last_line(result)}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)

    def switch_branch(self, branch: str, sha: str) -> Outcome:
        """The config names another branch: switch when the work tree is clean."""
        status = self.git.out(["status", "--porcelain", "--untracked-files=no"], repo=self.path)
        if status:
            return self.left(
                f"config asks for branch {branch} but {self.current_branch} has local changes"
            )
        if not self.has_commit(sha):
            self.fetch(branch, sha, "")
        self.git.run(["update-ref", f"refs/remotes/origin/{branch}", sha], repo=self.path)
        self.git.run(["remote", "set-branches", "--add", "origin", branch], repo=self.path)
        if self.rev(f"refs/heads/{branch}"):
            result = self.git.run(["checkout", "-q", branch], repo=self.path, check=False)
        else:
            result = self.git.run(
                ["checkout", "-q", "-b", branch, sha], repo=self.path, check=False
            )
        if result.returncode != 0:
            return self.left(f"cannot switch to branch {branch}: {self.git.last_line(result)}")
        message = f"{self.plan.dest}: switched from {self.current_branch} to {branch}"
        if self.rev("HEAD") != sha:
            self.current_branch = branch
            self.merge(sha)
        return self.result("switched", message)

    def diverged(self, last: str, sha: str) -> Outcome:
        if self.plan.on_diverge != "backup":
            return self.left(
                "upstream history was rewritten (force-push); the admin can set "
                "`on_diverge: backup` to back up and clone again"
            )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = unused_name(f"{self.path}.backup-{stamp}")
        ensure_inside(self.home, os.path.dirname(backup), parent=True)
        self.check_lock()
        os.rename(self.path, backup)
        cloned = self.clone(replacing=True)
        if cloned.outcome != "cloned":
            return cloned
        return self.result(
            "backed-up",
            f"upstream of {self.plan.dest} was rewritten: your copy is in "
            f"{os.path.relpath(backup, self.home)}, cloned again",
            "WARNING",
        )
