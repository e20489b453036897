"""The one place a git process starts: built environment, `-c` options, hard timeout, retries.

Refuses to run as root; only the user-side worker imports it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import threading
import time
from typing import Any, Optional

from nbinit import fdwalk, privilege
from nbinit.errors import NbinitError
from nbinit.git.policy import GitPolicy
from nbinit.log import redact


def git_environment(base: dict[str, str], home: str, policy: GitPolicy) -> dict[str, str]:
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


def git_options(policy: GitPolicy, hooks_dir: str, env: dict[str, str]) -> list[str]:
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
        self, policy: GitPolicy, env: dict[str, str], hooks_dir: str, terminal: bool = False
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
            fdwalk.remove_tree(self.trace_dir)

    def run(
        self,
        args: list[str],
        *,
        repo: Optional[str] = None,
        check: bool = True,
        timeout: Optional[float] = None,
        stream: bool = False,
        config: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `git [policy options] [config] [pinned to repo] args`; GitFailed if check fails.

        config: extra `-c` settings for this command only (never a policy option's key).
        """
        argv = ["git", *self.options]
        for setting in config:
            argv += ["-c", setting]
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
