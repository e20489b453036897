"""Every git operation nbinit performs, behind one policy that no caller can bypass.

Design, and why:

* **A worker that already is the user.** Root never runs git: `start_worker` starts
  `python -I -m nbinit.gitsync` (from the zipapp too) through
  `privilege.spawn_detached_as_user` (uid, gid, the user's own groups never root's, the
  user's HOME and umask). Every file nbinit writes in the home
  (clones, renamed-aside files, backups, locks, the progress file) is written by that
  worker, so no root-owned file lands in the home, git's "dubious ownership" check never
  fires, and a symlink the user planted can only redirect the user's own writes. The
  worker reads a JSON plan on stdin and writes one JSON line per event on stdout.
* **Detached, so it can outlive the deadline.** The worker is not nbinit's child (double
  fork): what is unfinished when the spawn deadline comes keeps running after nbinit has
  exec'd the server, as the user, and its progress file (`~/.cache/nbinit/repos.json`)
  shows how far it got until it ends. Nothing is killed halfway.
* **One runner, hard timeouts.** Every git process goes through `Runner.run`, which uses
  `privilege.run_as_user`: own process group, killed as a group on timeout (`git.timeout`),
  because GitPython's `kill_after_timeout` does not apply to `clone_from` and git has no
  HTTP timeout of its own (`http.lowSpeedLimit/Time` are set as well).
* **No GitPython in the sync path (decided, and measured).** GitPython cannot set the
  subprocess user, its `kill_after_timeout` does not cover `clone_from`, its unsafe-option
  guard is a denylist (bypassed many times) that does not cover the environment, and
  `import git` itself runs `git version` outside any timeout and took 0.10-0.17 s in the
  worker on the 2-core test machine, 10-15 % of the 1 s budget of a restart where nothing
  changed. What the worker needs to inspect (HEAD, refs, origin) it reads from `.git`'s
  files or asks `git` through the runner. Nothing imports `git`, so GitPython is not a
  dependency at all: shipping it into every image would only offer a second way to run git.
* **The policy.** URLs: allowed schemes (`git.allowed_schemes`), allowed hosts for
  user-declared repos (`git.allowed_hosts`), `ext::`/`fd::`/any `transport::` never,
  `file` only when the admin lists it, nothing that starts with `-`, no password in a
  URL. Destinations: relative, inside the home after symlinks are resolved, checked
  again right before each write. Every git process gets a clean, built environment (not
  the pod's `GIT_*`), `GIT_ALLOW_PROTOCOL`, `-c protocol.*.allow`, an empty hooks
  directory, no submodules unless `git.submodules`, `transfer.credentialsInUrl=die`, no
  system or global git config, no prompts. Credentials come from `git.credential_helper`,
  `~/.netrc` or the token in `git.token_env`, never from the URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Callable, Optional
from urllib.parse import urlsplit

from nbinit import privilege
from nbinit.context import Identity
from nbinit.errors import NbinitError
from nbinit.log import redact

# -- the policy ------------------------------------------------------------------------------

SCHEMES = ("https", "http", "ssh", "git", "file")
DEFAULT_SCHEMES = ("https", "ssh")
_TRANSPORT = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# scp-like ssh: [user@]host:path, where the colon comes before any slash
_SCP = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>.*)$")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")

PROGRESS_NAME = "repos.json"
STALE_INDEX_LOCK = 600.0  # seconds; as nbgitpuller: an index.lock that old is from a dead git
MERGE_MARKER = "nbinit-merging"  # in .git: the merge in progress is ours, safe to conclude
IDENTITY = ("-c", "user.name=nbinit", "-c", "user.email=nbinit@localhost")


@dataclass(frozen=True)
class Policy:
    """The admin's `git` section, as every git process sees it."""

    allowed_schemes: tuple[str, ...] = DEFAULT_SCHEMES
    allowed_hosts: tuple[str, ...] = ()
    submodules: bool = False
    timeout: float = 60.0
    workers: int = 8
    min_free_mb: int = 500
    credential_helper: str = ""
    token_hosts: tuple[str, ...] = ()
    mirror: str = ""

    @classmethod
    def from_section(cls, section: Optional[dict[str, Any]]) -> Policy:
        section = section or {}
        schemes = tuple(s for s in section.get("allowed_schemes", DEFAULT_SCHEMES) if s in SCHEMES)
        return cls(
            allowed_schemes=schemes,
            allowed_hosts=tuple(h.lower() for h in section.get("allowed_hosts", ())),
            submodules=bool(section.get("submodules", False)),
            timeout=float(section.get("timeout", 60)),
            workers=int(section.get("workers", 8)),
            min_free_mb=int(section.get("min_free_mb", 500)),
            credential_helper=str(section.get("credential_helper", "")),
            mirror=str(section.get("mirror", "")),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        data = dict(data)
        for key in ("allowed_schemes", "allowed_hosts", "token_hosts"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


@dataclass
class RepoPlan:
    """One checked repo: what to clone where, and who declared it."""

    url: str
    dest: str  # relative to the home, normalised
    path: str  # absolute
    branch: Optional[str] = None
    depth: int = 1
    on_diverge: str = "report"
    declared_by: str = "admin"

    @property
    def shown(self) -> str:
        return shown_url(self.url)


@dataclass
class Outcome:
    """What sync did to one repo; `level` is the log level a person should see it at."""

    dest: str
    outcome: str  # cloned updated unchanged switched backed-up left skipped failed would-*
    message: str
    level: str = "INFO"
    details: dict[str, Any] = field(default_factory=dict)


def shown_url(url: str) -> str:
    """The URL as it may appear in a log or status file: no credentials."""
    return redact(url)


def _parse(url: str) -> tuple[str, str, str, bool]:
    """(scheme, host, path, has_password) of a git URL in any of git's forms."""
    match = _SCHEME.match(url)
    if match:
        scheme = match.group(1).lower()
        parts = urlsplit(url)
        netloc = parts.netloc
        userinfo, _, hostport = netloc.rpartition("@")
        host = hostport
        if host.startswith("["):
            host = host[1 : host.find("]")] if "]" in host else host
        elif ":" in host:
            host = host.split(":", 1)[0]
        return scheme, host.lower(), parts.path, ":" in userinfo
    first_slash = url.find("/")
    colon = url.find(":")
    if colon > 0 and (first_slash < 0 or colon < first_slash):
        scp = _SCP.match(url)
        if scp:
            return "ssh", scp.group("host").lower(), scp.group("path"), False
    return "file", "", url, False


def mirror_repo(mirror: str, url: str) -> tuple[str, str]:
    """(path of url's mirror under the mirror root, '' or why it cannot be used).

    `https://git.example.org/team/tutorials.git` -> `<mirror>/git.example.org/team/tutorials.git`:
    the layout `git clone --mirror URL <mirror>/<host>/<path>` leaves (a CronJob keeps it
    fresh with `git remote update`). Only a bare repository's shape is checked here (no
    process); a mirror that breaks the clone is found by the clone, which then runs alone.
    """
    _, host, path, _ = _parse(url)
    parts = [p for p in path.strip("/").split("/") if p]
    if not host or not parts or any(p in (".", "..") or p.startswith("-") for p in parts):
        return "", f"no mirror path for {shown_url(url)}"
    if not parts[-1].endswith(".git"):
        parts[-1] += ".git"
    repo = os.path.join(mirror, host, *parts)
    if not os.path.isdir(mirror):
        return repo, "missing (no such directory: is the volume mounted?)"
    if not os.path.exists(repo):
        return repo, "missing (no mirror of this repo)"
    if not (
        os.path.isfile(os.path.join(repo, "HEAD")) and os.path.isdir(os.path.join(repo, "objects"))
    ):
        return repo, "not a bare git repository (corrupt?)"
    return repo, ""


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for rule in allowed:
        if rule.startswith("*.") and host.endswith(rule[1:]) and host != rule[2:]:
            return True
        if host == rule:
            return True
    return False


def check_url(url: str, policy: Policy, user_declared: bool) -> None:
    """Refuse a URL outside the policy, with one line that never echoes a secret."""
    fix = "see docs/security.md, 'The git sandbox', for what is allowed"
    if not url:
        raise NbinitError("url is empty", fix)
    shown = shown_url(url)
    if url.startswith("-"):
        raise NbinitError(f"url {shown[:60]!r} starts with '-' (an option, not a URL)", fix)
    transport = _TRANSPORT.match(url)
    if transport:
        raise NbinitError(
            f"url {shown[:60]!r}: transport '{transport.group(1)}::' is never allowed",
            "use an https:// or ssh:// URL",
        )
    if any(ord(c) < 32 or c.isspace() for c in url):
        raise NbinitError("url contains spaces or control characters", fix)
    scheme, host, path, has_password = _parse(url)
    if has_password:
        raise NbinitError(
            f"url {shown!r} carries a password, which would end up in .git/config",
            "drop the user:password@ part and use git.token_env, a credential helper or ~/.netrc",
        )
    if scheme not in policy.allowed_schemes:
        raise NbinitError(
            f"url {shown!r}: scheme {scheme} is not allowed "
            f"(git.allowed_schemes: {', '.join(policy.allowed_schemes) or 'none'})",
            "use an allowed scheme, or ask the admin to allow it",
        )
    if scheme != "file":
        if not host or host.startswith("-"):
            raise NbinitError(f"url {shown!r}: host is missing or starts with '-'", fix)
        if path.startswith("-"):
            raise NbinitError(f"url {shown!r}: path starts with '-'", fix)
    if user_declared and scheme != "file" and not _host_allowed(host, policy.allowed_hosts):
        raise NbinitError(
            f"url {shown!r}: host {host} is not in git.allowed_hosts "
            f"({', '.join(policy.allowed_hosts) or 'empty: user repos are off'})",
            "use a repo on an allowed host, or ask the admin to allow this one",
        )


def check_branch(branch: str) -> None:
    if (
        not _BRANCH.fullmatch(branch)  # `$` alone would accept a trailing newline
        or branch.startswith(("-", "/", "."))
        or branch.endswith(("/", ".", ".lock"))
        or ".." in branch
        or "//" in branch
        or "/." in branch
    ):
        raise NbinitError(
            f"branch {branch[:60]!r} is not a valid branch name",
            "use letters, digits, '.', '_', '-' and '/', not starting with '-'",
        )


def default_dest(url: str) -> str:
    name = _parse(url)[2].rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return name[:-4] if name.endswith(".git") else name


MAX_DEST_CHARS = 1024
MAX_DEST_PARTS = 16


def check_dest(home: str, dest: str) -> str:
    """The absolute path of dest: relative, no '..', inside the home after symlinks.

    Its length and depth are capped before any file system call: resolving a path of
    hundreds of thousands of parts costs root time quadratic in its length.
    """
    fix = "give a directory relative to the home, e.g. `dest: notebooks/course`"
    if len(dest) > MAX_DEST_CHARS or dest.count("/") >= MAX_DEST_PARTS:
        raise NbinitError(
            f"dest {dest[:60]!r}... is longer than {MAX_DEST_CHARS} characters or "
            f"{MAX_DEST_PARTS} directories deep",
            fix,
        )
    if not dest or any(ord(c) < 32 for c in dest):
        raise NbinitError("dest is empty or contains control characters", fix)
    if os.path.isabs(dest):
        raise NbinitError(f"dest {dest[:60]!r} is absolute", fix)
    parts = dest.split("/")
    if any(p == ".." for p in parts):
        raise NbinitError(f"dest {dest[:60]!r} leaves the home ('..')", fix)
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        raise NbinitError(f"dest {dest[:60]!r} is the home itself", fix)
    if any(p.startswith("-") for p in parts) or any(p.lower() == ".git" for p in parts):
        raise NbinitError(f"dest {dest[:60]!r}: a part starts with '-' or is .git", fix)
    path = os.path.join(home, *parts)
    ensure_inside(home, path)
    return path


def unused_name(stem: str, ext: str = "", separator: str = "-") -> str:
    """stem+ext, else stem-1+ext, stem-2+ext...: a name nothing holds, not even a dead link."""
    name, counter = f"{stem}{ext}", 1
    while os.path.lexists(name):
        name, counter = f"{stem}{separator}{counter}{ext}", counter + 1
    return name


def resolve(path: str) -> str:
    """path with its symlinks resolved by the kernel, the part that does not exist appended.

    os.path.realpath resolves links itself, one lstat per part, recursing into each
    link's target: a home holding a chain of a thousand links raises RecursionError and a
    web of them keeps root busy for minutes. The kernel gives up after 40 links (ELOOP).
    """
    missing: list[str] = []
    head = os.path.abspath(path)
    while True:
        try:
            fd = os.open(head, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            if os.path.islink(head):  # a link to nothing: where a write would land is theirs
                raise NbinitError(
                    f"{head} is a symlink to nothing", "remove the symlink or choose another dest"
                ) from None
            head, tail = os.path.split(head)
            missing.append(tail)
            continue
        except OSError as exc:
            raise NbinitError(
                f"{path} cannot be resolved: {exc.strerror}", "remove the symlinks in the way"
            ) from None
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc: bounded by MAX_DEST_PARTS, but links are the kernel's
            try:
                real = os.path.realpath(head)
            except RecursionError:
                raise NbinitError(f"{path}: too many symlinks", "remove them") from None
        finally:
            os.close(fd)
        return os.path.join(real, *reversed(missing))


def ensure_inside(home: str, path: str, parent: bool = False) -> None:
    """path must resolve inside home (or be it, for a parent); re-checked before every write."""
    real_home = resolve(home)
    real = resolve(path)
    if parent and real == real_home:
        return
    if real == real_home or not real.startswith(real_home.rstrip("/") + "/"):
        raise NbinitError(
            f"dest {os.path.relpath(path, home)!r} resolves outside the home (through a symlink)",
            "remove the symlink or choose another dest",
        )


def plan_repo(
    item: dict[str, Any], home: str, policy: Policy, declared_by: str = "admin"
) -> RepoPlan:
    """Check one config item against the policy; NbinitError says what was refused."""
    url = str(item.get("url", "")).strip()
    check_url(url, policy, user_declared=declared_by == "user")
    branch = item.get("branch")
    if branch is not None:
        check_branch(str(branch))
    dest = str(item.get("dest") or default_dest(url))
    path = check_dest(home, dest)
    on_diverge = item.get("on_diverge", "report") if declared_by == "admin" else "report"
    return RepoPlan(
        url=url,
        dest=os.path.relpath(path, home),
        path=path,
        branch=branch,
        depth=int(item.get("depth", 1)),
        on_diverge=on_diverge,
        declared_by=declared_by,
    )


def git_environment(base: dict[str, str], home: str, policy: Policy) -> dict[str, str]:
    """Built from nothing: the pod's GIT_*, SSH_* and proxy settings never reach git."""
    env = {
        "PATH": base.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C",
        "LC_ALL": "C",  # git's messages are parsed (CONFLICT lines)
        "GIT_TERMINAL_PROMPT": "0",  # with `tty: true` git would wait forever on /dev/tty
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_ALLOW_PROTOCOL": ":".join(policy.allowed_schemes) or "none",
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        # ~/.gitconfig could redirect an allowed host elsewhere (url.*.insteadOf)
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=10",
        "GIT_NO_REPLACE_OBJECTS": "1",
    }
    for key in ("USER", "LOGNAME", "NBINIT_GIT_TOKEN", "NBINIT_GIT_USERNAME"):
        if base.get(key):
            env[key] = base[key]
    return env


# A shell credential helper that prints the token from git's environment (not a password).
_TOKEN_HELPER = (
    '!f() { test "$1" = get || exit 0; '  # noqa: S105
    'echo "username=${NBINIT_GIT_USERNAME:-x-access-token}"; '
    'echo "password=$NBINIT_GIT_TOKEN"; }; f'
)


def git_options(policy: Policy, hooks_dir: str, env: dict[str, str]) -> list[str]:
    """`-c` options on every git command line: they outrank any config in the clone."""
    low_speed_time = str(int(max(1, min(30, policy.timeout))))
    options = ["protocol.allow=never"]
    options += [f"protocol.{scheme}.allow=always" for scheme in policy.allowed_schemes]
    options += [
        f"core.hooksPath={hooks_dir}",  # no hook from a clone (or planted in one) ever runs
        "core.fsmonitor=false",
        "transfer.credentialsInUrl=die",
        "http.lowSpeedLimit=1000",
        f"http.lowSpeedTime={low_speed_time}",
        f"submodule.recurse={'true' if policy.submodules else 'false'}",
        "fetch.recurseSubmodules=" + ("on-demand" if policy.submodules else "false"),
        "commit.gpgSign=false",
        "gc.auto=0",  # an auto gc detaches and would outlive the timeout
        "maintenance.auto=false",
        "advice.detachedHead=false",
        "credential.helper=",  # reset: only the helpers below
    ]
    if policy.credential_helper:
        options.append(f"credential.helper={policy.credential_helper}")
    if env.get("NBINIT_GIT_TOKEN"):
        # Scoped: offered only to these URL prefixes (scheme://host[:port]), never elsewhere.
        for prefix in policy.token_hosts:
            options.append(f"credential.{prefix}.helper={_TOKEN_HELPER}")
    return [word for option in options for word in ("-c", option)]


# -- the runner ------------------------------------------------------------------------------


class GitFailed(Exception):
    """A git command failed or timed out; the message is one redacted line."""


# A reset or an empty reply is usually a blip (a proxy or load balancer dropping one
# connection), and HTTP 429/502/503/504 a server busy with a class starting at once: network
# commands are retried with the config fetch's jittered exponential backoff (so pods that
# failed together do not come back together), the server's Retry-After as a floor, inside
# their own time limit. A failed clone leaves its (temporary, empty) target directory, so
# the retry clones into it again. git 2.39 neither retries nor shows Retry-After: curl's
# trace (headers only, credentials redacted by git) goes to a private file that is read
# after a busy answer and deleted.
RETRIED = ("ls-remote", "fetch", "clone")
TRANSIENT = ("Empty reply from server", "Connection reset by peer", "Recv failure")
_BUSY = re.compile(r"(?:returned error:|HTTP) (?:429|502|503|504)\b")
_RETRY_AFTER = re.compile(rb"Recv header: Retry-After: *(\d{1,6})\s", re.IGNORECASE)
RETRY_ATTEMPTS = 4


class Runner:
    """The only way nbinit starts git: policy options, built environment, hard timeout."""

    def __init__(
        self, policy: Policy, env: dict[str, str], hooks_dir: str, terminal: bool = False
    ) -> None:
        if os.geteuid() == 0:
            # Root never runs git in a user's home: see R-ARCH-1 in the research notes.
            raise NbinitError("refusing to run git as root", "run sync as the notebook user")
        self.policy = policy
        # A git without a repo (ls-remote, clone) runs in the empty hooks directory and
        # never looks above it: a ~/.git/config (url.*.insteadOf, core.sshCommand) in the
        # home, or a repo around the target, is never read.
        self.empty_dir = hooks_dir
        self.env = {**env, "GIT_CEILING_DIRECTORIES": os.path.dirname(hooks_dir)}
        self.options = git_options(policy, hooks_dir, env)
        self.terminal = terminal
        self.secrets = tuple(v for k, v in env.items() if k == "NBINIT_GIT_TOKEN" and v)
        self.trace_dir = ""  # made on the first network command, removed by close()

    def close(self) -> None:
        if self.trace_dir:
            privilege.remove_tree(self.trace_dir)

    def run(
        self,
        args: list[str],
        *,
        repo: Optional[str] = None,
        check: bool = True,
        timeout: Optional[float] = None,
        stream: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = ["git", *self.options]
        if repo is not None:
            # Pinned: git never walks up to an enclosing repository (nbgitpuller#388).
            argv += ["-C", repo, f"--git-dir={repo}/.git", f"--work-tree={repo}"]
        argv += args
        limit = self.policy.timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            if args[0] not in RETRIED:
                result = self._run_once(argv, repo, limit, stream)
            else:
                result = self._run_retried(argv, repo, limit, stream, started)
        except subprocess.TimeoutExpired:
            raise GitFailed(f"git {args[0]} timed out after {limit:g}s") from None
        if check and result.returncode != 0:
            raise GitFailed(f"git {args[0]} failed: {self.last_line(result)}")
        return result

    def _run_retried(
        self, argv: list[str], repo: Optional[str], limit: float, stream: bool, started: float
    ) -> subprocess.CompletedProcess[bytes]:
        """A network command: retried while transient and there is time; never past limit."""
        from nbinit.fetch import backoff_seconds

        if not self.trace_dir:
            self.trace_dir = tempfile.mkdtemp(prefix="nbinit-git-trace-")
        attempt = 0
        while True:
            attempt += 1
            trace = os.path.join(self.trace_dir, f"{threading.get_ident()}-{attempt}")
            left = limit - (time.monotonic() - started)
            try:
                result = self._run_once(argv, repo, left, stream, trace)
                if attempt == RETRY_ATTEMPTS or not self._transient(result):
                    return result
                wait = backoff_seconds(attempt, self._retry_after(trace))
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(trace)
            if limit - (time.monotonic() - started) - wait < 1.0:
                return result  # no time for another try: report this one
            time.sleep(wait)

    def _run_once(
        self,
        argv: list[str],
        repo: Optional[str],
        limit: float,
        stream: bool,
        trace: str = "",
    ) -> subprocess.CompletedProcess[bytes]:
        env = self.env
        if trace:
            env = {**env, "GIT_TRACE_CURL": trace, "GIT_TRACE_CURL_NO_DATA": "1"}
        return privilege.run_as_user(
            None,
            argv,
            env=env,
            timeout=limit,
            cwd=repo or self.empty_dir,
            capture=not (stream and self.terminal),
        )

    @staticmethod
    def _transient(result: subprocess.CompletedProcess[bytes]) -> bool:
        if result.returncode == 0:
            return False
        text = (result.stderr or b"").decode("utf-8", "replace")
        return any(sign in text for sign in TRANSIENT) or _BUSY.search(text) is not None

    @staticmethod
    def _retry_after(trace: str) -> Optional[float]:
        """The last Retry-After (in seconds) a server sent in this command, if any."""
        try:
            with open(trace, "rb") as handle:
                text = handle.read(1 << 20)  # headers only: small; bounded all the same
        except OSError:
            return None
        found = _RETRY_AFTER.findall(text)
        return float(found[-1]) if found else None

    def last_line(self, result: subprocess.CompletedProcess[bytes]) -> str:
        text = (result.stderr or b"").decode("utf-8", "replace")
        lines = [
            line.strip()
            for line in text.replace("\r", "\n").splitlines()
            if line.strip() and not line.startswith(("hint:", "remote: "))
        ]
        line = lines[-1] if lines else f"exit {result.returncode}"
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                line = line[len(prefix) :]
        return redact(line, self.secrets)[:200]

    def out(self, args: list[str], repo: Optional[str] = None, **kwargs: Any) -> str:
        return self.run(args, repo=repo, **kwargs).stdout.decode("utf-8", "replace").strip()

    def ok(self, args: list[str], repo: Optional[str] = None) -> bool:
        return self.run(args, repo=repo, check=False).returncode == 0


# -- the per-repo lock -------------------------------------------------------------------------

HEARTBEAT = 5.0  # seconds between touches of a held lock's owner file
STALE = 60.0  # a lock whose owner file is this much older than a fresh file is dead


def _process_start(pid: int) -> str:
    """The process's start time (clock ticks since boot): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


class RepoLock:
    """A lock that holds across hosts sharing the home over NFS.

    mkdir is atomic on NFS, so the lock is a directory; its `owner` file names the host,
    pid, process start time and a token, and a heartbeat thread touches it every few
    seconds. A lock is stale only if its owner is a dead process on this host, or its
    heartbeat is STALE seconds older than a file we touch now (both mtimes come from the
    same file server, so clocks that disagree between pods do not matter). Breaking one
    takes a second lock (`.break`) and re-reads the token under it, so two breakers can
    never remove a lock that a third has just taken, and a live owner is never stolen from.
    """

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, name + ".lock")
        import socket  # the worker's alone: root only plans and starts it
        import uuid

        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.held = False
        self.lost = False

    def owner(self) -> Optional[dict[str, Any]]:
        try:
            with open(os.path.join(self.path, "owner")) as handle:
                data = json.load(handle)
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def _now_on_disk(self) -> float:
        probe = os.path.join(self.directory, f".clock-{self.host}-{os.getpid()}")
        with open(probe, "w"):
            pass
        mtime = os.stat(probe).st_mtime
        with contextlib.suppress(OSError):
            os.unlink(probe)
        return mtime

    def _age(self, path: str) -> float:
        try:
            return self._now_on_disk() - os.stat(path).st_mtime
        except FileNotFoundError:
            return 0.0

    def is_stale(self, owner: Optional[dict[str, Any]]) -> bool:
        if owner is None:  # between mkdir and writing owner, or a crash right there
            return self._age(self.path) > STALE
        if owner.get("host") == self.host:
            pid = int(owner.get("pid", 0))
            return not pid or _process_start(pid) != owner.get("start")
        return self._age(os.path.join(self.path, "owner")) > STALE

    def acquire(self) -> Optional[str]:
        """None when held now; else who holds it, in words."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for _ in range(2):
            try:
                os.mkdir(self.path, 0o700)
            except FileExistsError:
                owner = self.owner()
                if self.is_stale(owner) and self._break(owner):
                    continue
                who = owner or {}
                return f"another nbinit (host {who.get('host', '?')}, pid {who.get('pid', '?')})"
            info = {
                "host": self.host,
                "pid": os.getpid(),
                "start": _process_start(os.getpid()),
                "token": self.token,
                "since": time.time(),
            }
            tmp = os.path.join(self.path, f"owner.{self.token}")
            with open(tmp, "w") as handle:
                json.dump(info, handle)
            os.replace(tmp, os.path.join(self.path, "owner"))
            self.held = True
            return None
        return "another nbinit that just took it"

    def _break(self, seen: Optional[dict[str, Any]]) -> bool:
        breaker = self.path + ".break"
        try:
            os.mkdir(breaker)
        except FileExistsError:
            if self._age(breaker) > STALE:
                with contextlib.suppress(OSError):
                    os.rmdir(breaker)
            return False
        try:
            now = self.owner()
            if (now or {}).get("token") != (seen or {}).get("token") or not self.is_stale(now):
                return False
            graveyard = f"{self.path}.stale-{self.token}"
            os.rename(self.path, graveyard)
            privilege.remove_tree(graveyard)
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(breaker)

    def heartbeat(self) -> None:
        if not self.held:
            return
        owner = self.owner()
        if owner is None or owner.get("token") != self.token:
            self.lost = True  # broken by someone who judged us dead: stop before writing
            return
        with contextlib.suppress(OSError):
            os.utime(os.path.join(self.path, "owner"))

    def release(self) -> None:
        if self.held and not self.lost:
            graveyard = f"{self.path}.done-{self.token}"
            with contextlib.suppress(OSError):
                os.rename(self.path, graveyard)
                privilege.remove_tree(graveyard)
        self.held = False


class Heartbeats:
    """One thread that keeps every lock this worker holds alive."""

    def __init__(self) -> None:
        self.locks: set[RepoLock] = set()
        self.mutex = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(HEARTBEAT):
            with self.mutex:
                locks = list(self.locks)
            for lock in locks:
                lock.heartbeat()

    def add(self, lock: RepoLock) -> None:
        with self.mutex:
            self.locks.add(lock)

    def remove(self, lock: RepoLock) -> None:
        with self.mutex:
            self.locks.discard(lock)


# -- sync of one repo --------------------------------------------------------------------------


def _same_origin(a: str, b: str) -> bool:
    """Two spellings of one remote: case of scheme and host, trailing '/' and '.git' aside."""

    def norm(url: str) -> str:
        url = url.strip().rstrip("/")
        url = url[:-4] if url.endswith(".git") else url
        scheme, host, path, _ = _parse(url)
        return f"{scheme}|{host}|{path.rstrip('/')}"

    return norm(a) == norm(b)


def free_mb(path: str) -> float:
    """Free space for the user at path, in MB (psutil when present, else statvfs)."""
    try:
        import psutil

        return float(psutil.disk_usage(path).free) / 1e6
    except ImportError:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize / 1e6


def read_ref(gitdir: str, name: str) -> str:
    """A ref's sha read from the files (loose, then packed-refs); '' when not found there."""
    for _ in range(5):  # follow a symbolic ref (HEAD -> refs/heads/main) a few levels
        try:
            with open(os.path.join(gitdir, name)) as handle:
                text = handle.read().strip()
        except OSError:
            break
        if not text.startswith("ref: "):
            return text if re.fullmatch(r"[0-9a-f]{40}", text) else ""
        name = text[5:]
    try:
        with open(os.path.join(gitdir, "packed-refs")) as handle:
            for line in handle:
                sha, _, ref = line.strip().partition(" ")
                if ref == name and re.fullmatch(r"[0-9a-f]{40}", sha):
                    return sha
    except OSError:
        pass
    return ""


def current_branch(gitdir: str) -> Optional[str]:
    """The checked-out branch from .git/HEAD; None when HEAD is detached."""
    try:
        with open(os.path.join(gitdir, "HEAD")) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return text[len("ref: refs/heads/") :] if text.startswith("ref: refs/heads/") else None


class RepoSync:
    """Clone or update one repo with nbgitpuller's care for the user's work."""

    def __init__(
        self, plan: RepoPlan, runner: Runner, home: str, policy: Policy, umask: int = 0o022
    ) -> None:
        self.plan = plan
        self.git = runner
        self.home = home
        self.policy = policy
        self.path = plan.path
        self.lock: Optional[RepoLock] = None
        self.umask = umask

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
        problem = self.check_existing()
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
                    privilege.remove_tree(os.path.join(parent, entry))

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
                privilege.remove_tree(tmp)
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
            privilege.remove_tree(tmp)
            try:
                os.mkdir(tmp, 0o700)
            except OSError as error:
                raise NbinitError(
                    f"cannot clone again into {tmp}: {error.strerror}", "run sync again"
                ) from None
            self.git.run([*args, *source], stream=True)
            return f"mirror {mirror}: the clone borrowing from it failed ({exc}): {fix}"
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
    def check_existing(self) -> str:
        """'' when dest is a clone of this origin nbinit may update, else why not."""
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
        result = self.git.run(
            ["config", "--local", "--get", "remote.origin.url"], repo=self.path, check=False
        )
        if result.returncode not in (0, 1):
            return f"is not a readable git repository ({self.git.last_line(result)})"
        origin = result.stdout.decode("utf-8", "replace").strip() or None
        branch = current_branch(gitdir)
        if origin is None or not _same_origin(origin, self.plan.url):
            return f"is a clone of another origin ({shown_url(origin or 'none')})"
        if branch is None:
            return "HEAD is detached (someone checked out a commit)"
        self.current_branch = branch
        return ""

    def busy_state(self) -> str:
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
        text = self.git.out(["ls-remote", "--symref", self.plan.url, *patterns])
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
        problem = self.check_existing()
        if problem:
            return self.left(problem)
        problem = self.busy_state()
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


# -- the worker: many repos, bounded parallelism, progress ------------------------------------


def locks_directory(home: str) -> str:
    from nbinit.status import user_cache_dir

    return os.path.join(user_cache_dir(home), "locks")


def progress_path(home: str) -> str:
    from nbinit.status import user_cache_dir

    return os.path.join(user_cache_dir(home), PROGRESS_NAME)


def lock_name(dest: str) -> str:
    import hashlib

    readable = re.sub(r"[^A-Za-z0-9._-]", "_", dest)[:60]
    return f"{readable}-{hashlib.sha256(dest.encode()).hexdigest()[:10]}"


class Progress:
    """The worker's progress file in the user's cache, which `nbinit status` shows."""

    def __init__(self, path: str, plans: list[RepoPlan]) -> None:
        import socket

        self.path = path
        self.mutex = threading.Lock()
        self.data: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "updated": time.time(),
            "finished": False,
            "repos": [
                {"dest": p.dest, "url": p.shown, "state": "waiting", "outcome": "", "message": ""}
                for p in plans
            ],
        }

    def set(self, dest: str, **fields: Any) -> None:
        with self.mutex:
            for entry in self.data["repos"]:
                if entry["dest"] == dest:
                    entry.update(fields)
            self.data["updated"] = time.time()
            self.write()

    def finish(self) -> None:
        with self.mutex:
            self.data["finished"] = True
            self.data["updated"] = time.time()
            self.write()

    def write(self) -> None:
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
    policy: Policy,
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
        privilege.remove_tree(hooks_dir)
    return outcomes


def _plan_to_dict(plan: RepoPlan) -> dict[str, Any]:
    return asdict(plan)


def worker_main(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """`python -m nbinit.gitsync`: the plan as JSON on stdin, one JSON event per line out."""
    import signal

    from nbinit.log import Log

    def stop(signum: int, frame: Any) -> None:
        privilege.kill_children()
        os._exit(143)

    signal.signal(signal.SIGTERM, stop)
    job = json.loads(stdin.read().decode("utf-8"))
    home = job["home"]
    policy = Policy.from_dict(job["policy"])
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
        emit({"event": "repo", **asdict(outcome)})

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


# -- the root side: start the worker as the user and read its events ---------------------------


MAX_EVENT_BYTES = 1 << 20  # one event line; each is a few hundred bytes


class Worker:
    """A running worker: events are read until a deadline; after it, the worker carries on."""

    def __init__(self, pgid: int, fd: int) -> None:
        self.pgid = pgid
        self.fd = fd
        self.buffer = b""
        self.finished = False

    def events(self, until: Optional[float]) -> Any:
        """Yield events until the worker ends or the monotonic time `until` passes."""
        while not self.finished:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                with contextlib.suppress(ValueError, RecursionError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        yield event
            if len(self.buffer) > MAX_EVENT_BYTES:  # a process of the user's: root bounds it
                self.buffer = b""
            wait = None if until is None else until - time.monotonic()
            if wait is not None and wait <= 0:
                return
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                return
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.finished = True
                privilege.forget_detached(self.pgid)
                os.close(self.fd)
                return
            self.buffer += chunk

    def hand_over(self) -> None:
        """Right before exec: the worker goes on alone (its writes to stdout just stop)."""
        privilege.forget_detached(self.pgid)
        if not self.finished:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.finished = True


def start_worker(
    identity: Optional[Identity],
    plans: list[RepoPlan],
    policy: Policy,
    env: dict[str, str],
    *,
    dry_run: bool = False,
    terminal: bool = False,
    timeout: float = 10.0,
    problems_file: Optional[dict[str, str]] = None,
) -> Worker:
    """Start `python -m nbinit.gitsync` as the user, detached, and hand it the plan.

    problems_file ({name, run}): the worker updates the start's problems file when done.
    """
    home = identity.home if identity else env.get("HOME", "")
    job = {
        "home": home,
        "policy": policy.as_dict(),
        "repos": [_plan_to_dict(p) for p in plans],
        "dry_run": dry_run,
        "terminal": terminal,
        "progress_file": progress_path(home),
        "problems": problems_file,
    }
    worker_env = privilege.clean_environment(identity, env)
    for key in ("NBINIT_LOG_FORMAT", "NBINIT_DEBUG", "NBINIT_GIT_TOKEN", "NBINIT_GIT_USERNAME"):
        if env.get(key):
            worker_env[key] = env[key]
    from nbinit import runtime  # `python -I -m nbinit.gitsync`, from the zipapp too

    pgid, fd = privilege.spawn_detached_as_user(
        identity,
        runtime.module_command("nbinit.gitsync"),
        env=worker_env,
        cwd=home if os.path.isdir(home) else "/",
        stdin_data=json.dumps(job).encode(),
        timeout=timeout,
    )
    return Worker(pgid, fd)


if __name__ == "__main__":
    sys.exit(worker_main(sys.stdin.buffer, sys.stdout.buffer))
