"""Who provides jupyterhub-singleuser: the image's own, else nbinit's runtime for the hub.

An image with a working `jupyterhub-singleuser` keeps it (`singleuser.runtime: auto`). One
without it (NGC's PyTorch images ship JupyterLab but no jupyterhub) gets nbinit's launcher
instead: the hub is asked for its version, the runtime with the same major version is
chosen (else the nearest, with one WARNING: singleuser itself warns of redirect loops when
the majors differ), and the image's Python is checked for what the runtime needs. All of it
happens before root is dropped, so a problem is one FATAL with its fix, in the status file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from typing import Any, Optional

from nbinit import privilege, runtime
from nbinit.context import Context, Identity
from nbinit.errors import NbinitError
from nbinit.nvidia import version_tuple

RUNTIME_DIR = "/usr/local/lib/nbinit/singleuser"
# Where root unpacks the chosen runtime at start: the server's Python can then keep the
# runtime's bytecode in the user's home across restarts (from a zip it compiles every time).
EXTRACT_DIR = "/run/nbinit/singleuser"
EXTRACTED_STAMP = ".nbinit-extracted"
SOURCE_MTIME = 315532800  # 1980-01-01, as in the zip: the cached bytecode stays valid
LAUNCHER = "nbinit.singleuser_launcher"
SINGLEUSER = "jupyterhub-singleuser"
START_SCRIPTS = ("start-singleuser.sh", "start-singleuser.py")
# Scripts whose `#!` line names the Python that has the image's notebook server.
SERVER_SCRIPTS = ("jupyter-server", "jupyter-lab", "jupyter-notebook", "jupyter")
HUB_VERSION_NAME = "hub-version.json"
HUB_TIMEOUT = 2.0  # the hub answers its version from memory; it is on the pod's network
PROBE_TIMEOUT = 10.0  # one Python start that reads two dist-infos
MAX_ANSWER = 64 * 1024
VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?([.\-+a-z0-9]*)$")
RUNTIME_RE = re.compile(r"^jupyterhub-(\d+\.\d+\.\d+)\.zip$")

FIX_INSTALL = (
    "pip install jupyterhub in the image's Python (or COPY build/nbinit-root/ /, which brings "
    "nbinit's runtime); run `nbinit check` when building the image"
)
FIX_SERVER = (
    "pip install 'jupyter_server>=2' (or jupyterlab 4) in the image's Python; run `nbinit check` "
    "when building the image"
)


def is_singleuser_command(argv0: str) -> bool:
    """The z2jh default command, or docker-stacks' scripts that exec it."""
    return os.path.basename(argv0) in (SINGLEUSER, *START_SCRIPTS)


def python_floor(version: tuple[int, ...]) -> tuple[int, int]:
    """The oldest Python a JupyterHub release runs on (its Requires-Python)."""
    return (3, 10) if version[:1] >= (6,) else (3, 8)


def runtime_dir(env: dict[str, str]) -> str:
    """Where the runtimes are: the tree's path, or NBINIT_SINGLEUSER_DIR (tests, custom trees)."""
    return env.get("NBINIT_SINGLEUSER_DIR") or RUNTIME_DIR


def list_runtimes(directory: str) -> list[tuple[tuple[int, ...], str]]:
    """The runtimes in the tree, oldest first: (version, path)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        match = RUNTIME_RE.match(name)
        if match:
            found.append((version_tuple(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def show(version: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in version)


def choose_runtime(
    runtimes: list[tuple[tuple[int, ...], str]],
    hub: Optional[tuple[int, ...]],
    python: tuple[int, ...],
) -> tuple[tuple[int, ...], str, str]:
    """(version, path, warning or "") of the runtime to run for this hub on this Python.

    The hub's major version if carried and runnable; else the nearest major (the newer one
    on a tie); without a hub version, the newest. Raises when the Python runs none.
    """
    usable = [r for r in runtimes if python[:2] >= python_floor(r[0])]
    if not runtimes:
        raise NbinitError(
            f"nbinit's singleuser runtimes are missing from {RUNTIME_DIR}", FIX_INSTALL
        )
    if not usable:
        carried = ", ".join(show(v) for v, _ in runtimes)
        raise NbinitError(
            f"the image's Python {show(python)} is too old for every runtime nbinit carries "
            f"(JupyterHub {carried}; JupyterHub 4 and 5 need Python 3.8, 6 needs 3.10)",
            "use Python 3.10 or newer for the notebook server, or pip install jupyterhub in "
            "the image",
        )
    if hub is None:
        return (*usable[-1], "")
    same = [r for r in usable if r[0][:1] == hub[:1]]
    if same:
        return (*same[-1], "")
    version, path = min(reversed(usable), key=lambda r: abs(r[0][0] - hub[0]))
    why = (
        "which this Python cannot run"
        if any(r[0][:1] == hub[:1] for r in runtimes)
        else "which nbinit does not carry"
    )
    warning = (
        f"the hub runs JupyterHub {show(hub)}, but no runtime for JupyterHub {hub[0]} "
        f"({why}): using {show(version)}; singleuser may warn of redirect loops. Install "
        f"jupyterhub {hub[0]}.x in the image, or update nbinit"
    )
    return version, path, warning


# -- the hub's version ----------------------------------------------------------------------


def _cache_path(env: dict[str, str]) -> str:
    from nbinit import lastgood

    return os.path.join(os.path.dirname(lastgood.path(env)), HUB_VERSION_NAME)


def ask_hub(env: dict[str, str], timeout: float) -> str:
    """GET {JUPYTERHUB_API_URL}/: the version the hub answers (no token needed)."""
    import ssl
    import urllib.request

    url = env["JUPYTERHUB_API_URL"].rstrip("/") + "/"
    context = None
    if url.startswith("https:"):  # internal_ssl: the hub's CA and the server's own cert
        context = ssl.create_default_context(cafile=env.get("JUPYTERHUB_SSL_CLIENT_CA") or None)
        if env.get("JUPYTERHUB_SSL_CERTFILE") and env.get("JUPYTERHUB_SSL_KEYFILE"):
            context.load_cert_chain(env["JUPYTERHUB_SSL_CERTFILE"], env["JUPYTERHUB_SSL_KEYFILE"])
    # The hub is on the pod's own network: a proxy from the environment is never right.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    if not url.startswith(("http:", "https:")):
        raise ValueError(f"JUPYTERHUB_API_URL is not http(s): {url[:60]!r}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with opener.open(request, timeout=timeout) as response:
        body = response.read(MAX_ANSWER + 1)
    if len(body) > MAX_ANSWER:
        raise ValueError(f"answer larger than {MAX_ANSWER} bytes")
    version = json.loads(body).get("version")
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise ValueError("no version in the answer")
    return version


def hub_version(ctx: Context) -> tuple[Optional[str], str]:
    """(the hub's version, where it came from); the last answer is kept in the state dir."""
    env = ctx.env
    cache = _cache_path(env)
    if env.get("JUPYTERHUB_API_URL"):
        timeout = ctx.deadline.cap(HUB_TIMEOUT, floor=0.5)
        try:
            version = ask_hub(env, timeout)
        except Exception as exc:  # any failure means: fall back to the last answer
            reason = getattr(exc, "reason", None) or exc
            problem = f"{type(exc).__name__}: {str(reason)[:120]}"
        else:
            if ctx.is_root:
                _save(cache, env["JUPYTERHUB_API_URL"], version)
            return version, "the hub"
    else:
        problem = "JUPYTERHUB_API_URL is not set"
    cached = _load(cache)
    if cached:
        ctx.log.info(f"cannot ask the hub for its version ({problem}): using the last answer")
        return cached, f"the last answer ({cache})"
    ctx.log.warning(
        f"cannot learn the hub's version ({problem}) and none is cached: using the newest "
        "runtime; install jupyterhub in the image to match the hub yourself"
    )
    return None, "unknown"


def _save(path: str, url: str, version: str) -> None:
    data = json.dumps({"url": url, "version": version, "asked": time.time()}).encode()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        privilege.write_file_atomic(path, data, mode=0o600, durable=False)
    except OSError:
        pass  # a cache: the next start asks again


def _load(path: str) -> Optional[str]:
    from nbinit.trusted import read_trusted_file

    try:
        data = read_trusted_file(path, MAX_ANSWER, what="cached hub version")
        version = json.loads(data or b"{}").get("version")
    except (NbinitError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) and VERSION_RE.match(version) else None


# -- the image's Python -----------------------------------------------------------------------


def script_interpreter(script: str) -> Optional[list[str]]:
    """The Python of a `#!` script (`/usr/bin/env python3` kept as two words), or None."""
    try:
        with open(script, "rb") as handle:
            first = handle.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        words = words[:1] + [w for w in words[1:] if not w.startswith("-")][:1]
    program = words[1] if len(words) > 1 and os.path.basename(words[0]) == "env" else words[0]
    if not os.path.basename(program).startswith("python"):
        return None  # a shell wrapper has no Python to offer
    return words


def server_python(path: Optional[str]) -> Optional[list[str]]:
    """The image's notebook-server Python: that of jupyter-server/-lab, else python3."""
    for name in SERVER_SCRIPTS:
        script = shutil.which(name, path=path)
        interpreter = script_interpreter(script) if script else None
        if interpreter:
            return interpreter
    found = shutil.which("python3", path=path) or shutil.which("python", path=path)
    return [found] if found else None


def probe_python(
    interpreter: list[str], identity: Optional[Identity], env: dict[str, str], timeout: float
) -> dict[str, Any]:
    """Ask the image's Python, as the user, what it runs (nbinit.singleuser_launcher probe)."""
    argv = [*runtime.foreign_module_command(interpreter, LAUNCHER), "probe"]
    shown = " ".join(interpreter)
    try:
        result = privilege.run_as_user(
            identity, argv, env=privilege.clean_environment(identity, env), timeout=timeout, cwd="/"
        )
    except subprocess.TimeoutExpired:
        raise NbinitError(
            f"the image's Python {shown} did not answer within {timeout:.1f}s",
            "check that it starts in the image (run it by hand)",
        ) from None
    except OSError as exc:
        raise NbinitError(
            f"cannot run the image's Python {shown}: {exc.strerror}", FIX_SERVER
        ) from None
    try:
        answer = json.loads(result.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
        if result.returncode != 0 or not isinstance(answer, dict):
            raise ValueError
    except (ValueError, IndexError):
        said = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise NbinitError(
            f"the image's Python {shown} cannot run nbinit's launcher (exit "
            f"{result.returncode}: {(said or ['no output'])[-1][:160]})",
            "use Python 3.8 or newer for the notebook server, or pip install jupyterhub in "
            "the image",
        ) from None
    return answer


def requirement_problem(answer: dict[str, Any], shown: str) -> Optional[str]:
    """What the image's Python lacks for any runtime, in words; None when it has it all."""
    server = answer.get("jupyter_server")
    python = answer.get("python", "?")
    if not server:
        return f"the image's Python {shown} ({python}) has no jupyter_server"
    if version_tuple(str(server))[:1] < (2,):
        return f"the image's jupyter_server {server} ({shown}) is older than 2"
    return None


# -- unpacking ------------------------------------------------------------------------------


def extract_runtime(zip_path: str, root: str = EXTRACT_DIR) -> str:
    """The runtime unpacked into a root-owned directory (reused while the zip is the same).

    Files get the zip's fixed time, so bytecode cached from an earlier start stays valid.
    Unpacked next to the target, then renamed: a start never sees half a runtime.
    """
    import shutil
    import tempfile
    import zipfile

    name = os.path.basename(zip_path)[: -len(".zip")]
    target = os.path.join(root, name)
    info = os.stat(zip_path)
    stamp = f"{info.st_size} {info.st_mtime_ns}\n"
    try:
        with open(os.path.join(target, EXTRACTED_STAMP)) as handle:
            if handle.read() == stamp:
                return target
    except OSError:
        pass
    os.makedirs(root, mode=0o755, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{name}.", dir=root)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for entry in archive.infolist():
                parts = entry.filename.split("/")
                if entry.is_dir() or entry.filename.startswith("/") or ".." in parts:
                    continue  # the image's own zip: nothing else is expected in it
                path = os.path.join(work, *parts)
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                with open(path, "wb") as handle:
                    handle.write(archive.read(entry))
                os.utime(path, (SOURCE_MTIME, SOURCE_MTIME))
        with open(os.path.join(work, EXTRACTED_STAMP), "w") as handle:
            handle.write(stamp)
        os.chmod(work, 0o755)  # noqa: S103 - code the user's server reads, root-owned
        if os.path.lexists(target):
            shutil.rmtree(target)
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def runtime_path(ctx: Context, zip_path: str) -> str:
    """What the launcher appends to sys.path: the unpacked runtime as root, else the zip."""
    if not ctx.is_root:
        return zip_path
    try:
        return extract_runtime(zip_path)
    except OSError as exc:
        ctx.log.info(
            f"cannot unpack {zip_path} into {EXTRACT_DIR} ({exc.strerror}): the server runs "
            "from the zip and compiles it at every start"
        )
        return zip_path


# -- the decision -------------------------------------------------------------------------------


class Plan:
    """The server command chosen, and what the status file and the log say about it."""

    def __init__(self, command: list[str], details: dict[str, Any], message: str = "") -> None:
        self.command = command
        self.details = details
        self.message = message


def plan(ctx: Context, argv: list[str], found: Optional[str]) -> Plan:
    """The command that serves the hub: the image's own singleuser, else nbinit's launcher.

    `found` is argv[0] as the user resolves it on PATH (None: not there for the user).
    """
    settings = ctx.section("singleuser") or {}
    choice = settings.get("runtime", "auto")
    path = ctx.env.get("PATH")
    own = found
    if found and os.path.basename(found) in START_SCRIPTS:
        # docker-stacks' scripts exec jupyterhub-singleuser: theirs works only if it is there.
        own = found if privilege.find_executable(SINGLEUSER, path, ctx.user) else None
    if choice != "nbinit" and own:
        return Plan(argv, {"runtime": "image", "command": found})
    if choice == "image":
        raise NbinitError(
            f"{argv[0]} is not on PATH for {_who(ctx)} and singleuser.runtime is image",
            f"{FIX_INSTALL}; or set singleuser.runtime: auto to use nbinit's runtime",
        )
    if ctx.env.get("JUPYTERHUB_SINGLEUSER_EXTENSION", "").strip() == "0":
        raise NbinitError(
            "JUPYTERHUB_SINGLEUSER_EXTENSION=0 asks for the legacy notebook-server mode, which "
            "cannot run from nbinit's zipped runtime",
            "unset it (jupyter_server 2 runs the extension mode), or pip install jupyterhub in "
            "the image",
        )
    runtimes = list_runtimes(runtime_dir(ctx.env))
    if not runtimes:
        raise NbinitError(
            f"{argv[0]} is not on PATH for {_who(ctx)}, and no singleuser runtime of nbinit is "
            f"in {runtime_dir(ctx.env)} to stand in for it",
            FIX_INSTALL,
        )
    interpreter = server_python(path)
    if interpreter is None:
        raise NbinitError(f"{argv[0]} is not on PATH, and neither is python3", FIX_INSTALL)
    shown = " ".join(interpreter)
    answer = probe_python(
        interpreter, ctx.user, ctx.env, ctx.deadline.cap(PROBE_TIMEOUT, floor=2.0)
    )
    problem = requirement_problem(answer, shown)
    if problem:
        raise NbinitError(
            f"{argv[0]} is not on PATH for {_who(ctx)}, and nbinit's runtime cannot run "
            f"instead: {problem}",
            FIX_SERVER,
        )
    hub, source = hub_version(ctx)
    hub_tuple = version_tuple(hub) if hub else None
    version, zip_path, warning = choose_runtime(
        runtimes, hub_tuple, version_tuple(str(answer["python"]))
    )
    if warning:
        ctx.log.warning(warning)
    args = server_args(argv, ctx.env)
    served = runtime_path(ctx, zip_path)
    command = [*runtime.foreign_module_command(interpreter, LAUNCHER), "run", served, *args]
    why = "singleuser.runtime is nbinit" if choice == "nbinit" else f"no {argv[0]} in the image"
    hub_words = f"the hub runs {hub} ({source})" if hub else "the hub's version unknown"
    message = (
        f"{why}: nbinit's runtime JupyterHub {show(version)} ({hub_words}) on {shown} "
        f"(Python {answer['python']}, jupyter_server {answer['jupyter_server']})"
    )
    details = {
        "runtime": "nbinit",
        "version": show(version),
        "path": zip_path,
        "served_from": served,
        "hub": hub,
        "python": answer["python"],
        "jupyter_server": answer["jupyter_server"],
    }
    return Plan(command, details, message)


def server_args(argv: list[str], env: dict[str, str]) -> list[str]:
    """jupyterhub-singleuser's arguments; for docker-stacks' start-singleuser.* also what
    start-singleuser.py adds, NOTEBOOK_ARGS split like a shell, first."""
    if os.path.basename(argv[0]) not in START_SCRIPTS:
        return argv[1:]
    import shlex  # only for docker-stacks' scripts: every start imports this module

    try:
        return [*shlex.split(env.get("NOTEBOOK_ARGS", "")), *argv[1:]]
    except ValueError as exc:
        raise NbinitError(
            f"NOTEBOOK_ARGS cannot be split into arguments ({exc})",
            "fix its quoting (it is split like a shell command line)",
        ) from None


def _who(ctx: Context) -> str:
    return ctx.user.name if ctx.user else f"uid {os.geteuid()}"
