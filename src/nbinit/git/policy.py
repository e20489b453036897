"""What may be cloned where: URL and destination rules, and the `git` section's typed view.

Root imports this (to plan the repos) as well as the worker, so it runs no process and
imports nothing that does; `GitPolicy` has no defaults of its own: schema.py's are the only ones.
"""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple, Optional
from urllib.parse import urlsplit

from nbinit import schema
from nbinit.errors import NbinitError
from nbinit.urls import public_url

SCHEMES = tuple(schema.GIT["properties"]["allowed_schemes"]["items"]["enum"])
_TRANSPORT = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# scp-like ssh: [user@]host:path, where the colon comes before any slash
_SCP = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>.*)$")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")

PROGRESS_NAME = "repos.json"


class GitPolicy(NamedTuple):
    """The admin's `git` section, as every git process sees it (defaults: schema.GIT only)."""

    allowed_schemes: tuple[str, ...]
    allowed_hosts: tuple[str, ...]
    submodules: bool
    timeout: float
    workers: int
    min_free_mb: int
    credential_helper: str
    mirror: str
    # Not a setting: the URL prefixes the token is offered to, worked out by the repos step.
    token_hosts: tuple[str, ...] = ()

    @classmethod
    def from_section(cls, section: Optional[dict[str, Any]]) -> GitPolicy:
        """The typed view of the validated section; what it leaves out is schema.GIT's default."""
        settings = {**schema.defaults(schema.GIT), **(section or {})}
        return cls(
            allowed_schemes=tuple(s for s in settings["allowed_schemes"] if s in SCHEMES),
            allowed_hosts=tuple(h.lower() for h in settings["allowed_hosts"]),
            submodules=bool(settings["submodules"]),
            timeout=float(settings["timeout"]),
            workers=int(settings["workers"]),
            min_free_mb=int(settings["min_free_mb"]),
            credential_helper=str(settings.get("credential_helper", "")),
            mirror=str(settings.get("mirror", "")),
        )

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GitPolicy:
        data = dict(data)
        for key in ("allowed_schemes", "allowed_hosts", "token_hosts"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


class RepoPlan(NamedTuple):
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
        return public_url(self.url)


class Outcome(NamedTuple):
    """What sync did to one repo; `level` is the log level a person should see it at."""

    dest: str
    outcome: str  # cloned updated unchanged switched backed-up left skipped failed would-*
    message: str
    level: str
    details: dict[str, Any]


def parse_url(url: str) -> tuple[str, str, str, bool]:
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
    _, host, path, _ = parse_url(url)
    parts = [p for p in path.strip("/").split("/") if p]
    if not host or not parts or any(p in (".", "..") or p.startswith("-") for p in parts):
        return "", f"no mirror path for {public_url(url)}"
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


def check_url(url: str, policy: GitPolicy, user_declared: bool) -> None:
    """Refuse a URL outside the policy, with one line that never echoes a secret."""
    fix = "see docs/security.md, 'The git sandbox', for what is allowed"
    if not url:
        raise NbinitError("url is empty", fix)
    shown = public_url(url)
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
    scheme, host, path, has_password = parse_url(url)
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
    name = parse_url(url)[2].rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
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
    item: dict[str, Any], home: str, policy: GitPolicy, declared_by: str = "admin"
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


def free_mb(path: str) -> float:
    """Free space for the user at path, in MB (psutil when present, else statvfs)."""
    try:
        import psutil

        return float(psutil.disk_usage(path).free) / 1e6
    except ImportError:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize / 1e6


def progress_path(home: str) -> str:
    from nbinit.status import user_cache_dir

    return os.path.join(user_cache_dir(home), PROGRESS_NAME)
