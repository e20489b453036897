"""`nbinit check`: can this image serve JupyterHub? Each check is PASS, WARN or FAIL.

Meant for `RUN nbinit check` in a Dockerfile: no network, no hub, only the image's own
files and programs, each program under a timeout. Every FAIL carries its fix in one line.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from typing import Any, NamedTuple, Optional

from nbinit import config, gpu, privilege, schema, singleuser
from nbinit.context import Identity
from nbinit.errors import NbinitError

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
PROGRAM_TIMEOUT = 30.0  # importing a server stack on a cold layer can take seconds
NGC_ENTRYPOINT = "/opt/nvidia/nvidia_entrypoint.sh"
FIX_SINGLEUSER = (
    "pip install jupyterhub jupyterlab (or conda install -c conda-forge jupyterhub-singleuser "
    "jupyterlab) in the image's Python, so jupyterhub-singleuser is on PATH"
)
FIX_GIT = "apt-get install git (or conda install git)"


class Check(NamedTuple):
    name: str
    result: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return self._asdict()


def _which(name: str, env: dict[str, str]) -> Optional[str]:
    return shutil.which(name, path=env.get("PATH", os.defpath))


def _run(argv: list[str], env: dict[str, str], identity: Optional[Identity] = None) -> Any:
    """A program of the image, with a clean environment and a timeout; None if it hung."""
    clean = privilege.clean_environment(identity, env)
    # These choose which server jupyterhub-singleuser starts (and so what --version says).
    clean.update({k: v for k, v in env.items() if k.startswith("JUPYTERHUB_SINGLEUSER_")})
    try:
        return privilege.run_as_user(identity, argv, env=clean, timeout=PROGRAM_TIMEOUT, cwd="/")
    except subprocess.TimeoutExpired:
        return None


def _last_line(data: bytes) -> str:
    """The line that says why: the last `SomeError: ...` of a traceback, else the last line."""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return (errors or lines or [""])[-1][:200]


# -- the checks ----------------------------------------------------------------------------
def check_singleuser(
    env: dict[str, str], hub_version: Optional[str], settings: Optional[dict[str, Any]] = None
) -> Check:
    name = "jupyterhub-singleuser"
    path = _which(name, env)
    choice = ((settings or {}).get("singleuser") or {}).get("runtime", "auto")
    runtimes = singleuser.list_runtimes(singleuser.runtime_dir(env))
    if runtimes and choice != "image" and (path is None or choice == "nbinit"):
        return check_runtime(env, hub_version, runtimes, path)
    if path is None:
        return Check(
            name,
            FAIL,
            f"not on PATH ({env.get('PATH', '')}): the spawn fails with "
            '`exec: "jupyterhub-singleuser": executable file not found in $PATH`',
            FIX_SINGLEUSER,
        )
    result = _run([path, "--version"], env)
    if result is None:
        return Check(
            name,
            FAIL,
            f"`{path} --version` did not finish within {PROGRAM_TIMEOUT:g}s",
            "fix the Python environment it runs in (try the command in the image)",
        )
    if result.returncode != 0:
        reason = _last_line(result.stderr) or _last_line(result.stdout) or "no output"
        return Check(
            name,
            FAIL,
            f"`{path} --version` exits {result.returncode}: {reason}",
            "install the single-user server in the same Python: pip install jupyterhub jupyterlab",
        )
    version = _jupyterhub_version(path, env) or _first_version(result.stdout)
    if not version:
        return Check(name, WARN, f"{path} runs but reports no version", "")
    detail = f"JupyterHub {version} at {path}"
    if hub_version:
        return _compare_hub(name, detail, version, hub_version)
    return Check(name, PASS, detail)


def check_runtime(
    env: dict[str, str],
    hub_version: Optional[str],
    runtimes: list[tuple[tuple[int, ...], str]],
    image_own: Optional[str],
) -> Check:
    """nbinit's runtime serves: can the image's Python run it, and which one would start."""
    name = "jupyterhub-singleuser"
    carried = ", ".join(singleuser.show(v) for v, _ in runtimes)
    why = "singleuser.runtime is nbinit" if image_own else "not in the image"
    interpreter = singleuser.server_python(env.get("PATH", os.defpath))
    if interpreter is None:
        return Check(
            name, FAIL, f"{why}, and no python3 on PATH to run nbinit's runtime", FIX_SINGLEUSER
        )
    shown = " ".join(interpreter)
    try:
        answer = singleuser.probe_python(interpreter, None, env, PROGRAM_TIMEOUT)
    except NbinitError as exc:
        return Check(name, FAIL, f"{why}: {exc.problem}", exc.fix)
    problem = singleuser.requirement_problem(answer, shown)
    if problem:
        return Check(
            name,
            FAIL,
            f"{why}, and nbinit's runtime (JupyterHub {carried}) cannot run: {problem}",
            singleuser.FIX_SERVER.split(";")[0],
        )
    python = gpu.version_tuple(str(answer["python"]))
    hub = gpu.version_tuple(hub_version) if hub_version else None
    if hub_version and not hub:
        return Check(
            name, FAIL, f"--hub-version {hub_version!r} is not a version", "pass e.g. 5.2.1"
        )
    try:
        version, _, warning = singleuser.choose_runtime(runtimes, hub, python)
    except NbinitError as exc:
        return Check(name, FAIL, f"{why}: {exc.problem}", exc.fix)
    detail = (
        f"{why}: nbinit's runtime serves (JupyterHub {carried}, the hub's major version "
        f"chosen at start) on {shown} (Python {answer['python']}, jupyter_server "
        f"{answer['jupyter_server']})"
    )
    if hub_version:
        detail += f"; hub {hub_version}: JupyterHub {singleuser.show(version)} would run"
    if warning:
        return Check(name, WARN, f"{detail}; {warning}", f"pip install 'jupyterhub=={hub_version}'")
    return Check(name, PASS, detail)


def _first_version(data: bytes) -> Optional[str]:
    match = re.search(r"\d+\.\d+(?:\.\d+)?\S*", data.decode("utf-8", "replace"))
    return match.group() if match else None


def _jupyterhub_version(script: str, env: dict[str, str]) -> Optional[str]:
    """jupyterhub's own version from the script's interpreter.

    In extension mode (Jupyter Server 2) `--version` prints jupyter-server's version, so
    the hub compatibility check asks the package itself.
    """
    interpreter = singleuser.script_interpreter(script)
    if interpreter is None:
        return None
    result = _ask_version(interpreter, env, "jupyterhub")
    return _first_version(result.encode()) if result else None


def _ask_version(interpreter: list[str], env: dict[str, str], *module: str) -> Optional[str]:
    """The interpreter's version, or MODULE's (nbinit.versionprobe); None if that fails."""
    from nbinit import runtime

    argv = [*runtime.foreign_module_command(interpreter, "nbinit.versionprobe"), *module]
    try:
        result = _run(argv, env)
    except OSError:
        return None
    if result is None or result.returncode != 0:
        return None
    return str(result.stdout.decode("utf-8", "replace").strip())


def _compare_hub(name: str, detail: str, version: str, hub_version: str) -> Check:
    """JupyterHub's own rule (jupyterhub/_version.py): the major versions must match."""
    mine, hub = gpu.version_tuple(version), gpu.version_tuple(hub_version)
    if not hub:
        return Check(
            name, FAIL, f"--hub-version {hub_version!r} is not a version", "pass e.g. 5.2.1"
        )
    if mine[:1] != hub[:1]:
        return Check(
            name,
            FAIL,
            f"{detail}; the hub runs {hub_version}: major versions differ, the hub warns "
            "'This could cause failure to authenticate and result in redirect loops!'",
            f"pip install 'jupyterhub>={hub[0]},<{hub[0] + 1}' in the image",
        )
    same = "same version" if mine == hub else "same major version, compatible"
    return Check(name, PASS, f"{detail}; hub {hub_version}: {same}")


def check_start_script(env: dict[str, str]) -> Check:
    """What `nbinit start` with no command would run, found the way it finds it."""
    from nbinit import launch

    name = "start script"
    try:
        (path,) = launch.resolve_command([], env.get("PATH", os.defpath), env)
    except NbinitError:
        return Check(
            name,
            FAIL,
            "none of start-singleuser.sh, start-singleuser.py, jupyterhub-singleuser on PATH: "
            "`nbinit start` has nothing to run",
            "install jupyterhub (see jupyterhub-singleuser above) or ship a start-singleuser.sh",
        )
    if path == singleuser.SINGLEUSER:
        return Check(
            name, PASS, "none in the image: `nbinit start` runs nbinit's singleuser runtime"
        )
    if os.path.basename(path) == "jupyterhub-singleuser":
        return Check(
            name, PASS, "no start-singleuser.sh/.py: `nbinit start` execs jupyterhub-singleuser"
        )
    return Check(name, PASS, f"{path}: `nbinit start` runs it")


def check_tini(env: dict[str, str]) -> Check:
    from nbinit import launch

    name = "tini"
    path = launch.find_tini(env.get("PATH", os.defpath))
    if path:
        return Check(name, PASS, f"{path}: signals reach the server, zombies are reaped")
    return Check(
        name,
        WARN,
        "not found: as PID 1 the server would reap no zombies and may ignore SIGTERM",
        "apt-get install tini (or conda install tini)",
    )


def check_git(env: dict[str, str], settings: dict[str, Any]) -> Check:
    name = "git"
    path = _which("git", env)
    wanted = len(settings.get("repos") or [])
    if path is None:
        detail = "not on PATH: repositories cannot be cloned"
        if wanted:
            return Check(name, FAIL, f"{detail}, and the baked config lists {wanted}", FIX_GIT)
        return Check(name, WARN, detail, FIX_GIT)
    result = _run([path, "--version"], env)
    if result is None or result.returncode != 0:
        return Check(name, FAIL, f"`{path} --version` does not run", FIX_GIT)
    return Check(name, PASS, result.stdout.decode("utf-8", "replace").strip())


def check_python(env: dict[str, str]) -> Check:
    """nbinit's interpreter, and the server's (from jupyterhub-singleuser's `#!` line)."""
    name = "python"
    mine = ".".join(str(n) for n in sys.version_info[:3])
    detail = f"nbinit runs on {mine} ({sys.executable})"
    script = _which("jupyterhub-singleuser", env)
    interpreter = singleuser.script_interpreter(script) if script else None
    if interpreter is None:
        return Check(name, PASS, detail)
    theirs = _ask_version(interpreter, env)
    if theirs is None:
        return Check(
            name,
            FAIL,
            f"{detail}; the server's interpreter {' '.join(interpreter)} does not run",
            f"fix the `#!` line of {script} or reinstall jupyterhub",
        )
    detail += f"; the server runs on {theirs} ({' '.join(interpreter)})"
    # JupyterHub 5 needs Python 3.8, JupyterHub 6 needs 3.10 (their Requires-Python).
    if gpu.version_tuple(theirs) < (3, 8):
        return Check(name, FAIL, detail, "use Python 3.10 or newer for the notebook server")
    return Check(name, PASS, detail)


def _image_identity(settings: dict[str, Any]) -> tuple[Optional[Identity], Check]:
    """The account servers run as when no user marker exists, and its check row."""
    name = "default user"
    if os.geteuid() != 0:
        try:
            entry = pwd.getpwuid(os.geteuid())
        except KeyError:
            return None, Check(
                name,
                FAIL,
                f"uid {os.geteuid()} has no /etc/passwd entry",
                "create the account (useradd) before the image's USER line",
            )
    else:
        wanted = settings["user"]["default_user"]
        try:
            entry = pwd.getpwnam(wanted)
        except KeyError:
            return None, _default_user_created(wanted)
        if entry.pw_uid == 0:
            return None, Check(
                name, FAIL, f"{wanted} has uid 0", "give it its own uid (1000 by convention)"
            )
    identity = Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)
    return identity, Check(name, PASS, f"{entry.pw_name} (uid {entry.pw_uid}, gid {entry.pw_gid})")


def _default_user_created(wanted: str) -> Check:
    """No default user in the image: `nbinit start` creates it as root (steps/user.py)."""
    from nbinit.steps import user

    ids = f"uid {user.DEFAULT_UID}, gid {user.DEFAULT_GID}"
    try:
        holder = pwd.getpwuid(user.DEFAULT_UID).pw_name
        shared = f"; uid {user.DEFAULT_UID} is {holder}'s, so {wanted} becomes a second name for it"
    except KeyError:
        shared = ""
    home = user.DEFAULT_HOME.format(user=wanted)
    return Check(
        "default user",
        PASS,
        f"no account {wanted!r} in the image: `nbinit start` creates it ({ids}, home {home})"
        + shared,
    )


def check_home(identity: Optional[Identity], env: dict[str, str]) -> Check:
    name = "home writable"
    if identity is None:
        return Check(name, WARN, "no default user to check (see above)")
    home = identity.home
    if not os.path.isdir(home):
        return Check(
            name,
            FAIL,
            f"{identity.name}'s home {home} does not exist",
            f"mkdir -p {home} && chown {identity.uid}:{identity.gid} {home} (or useradd -m)",
        )
    test = _which("test", env) or "/usr/bin/test"
    result = _run([test, "-w", home], env, identity)
    if result is None or result.returncode != 0:
        return Check(
            name,
            FAIL,
            f"{home} is not writable by {identity.name}: jupyter cannot save settings there",
            f"chown -R {identity.uid}:{identity.gid} {home}",
        )
    return Check(name, PASS, f"{home} is writable by {identity.name}")


def _parse_table(path: str, fields: int) -> tuple[list[list[str]], list[str]]:
    rows, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split(":")
            if len(parts) != fields or not parts[2].isdigit():
                problems.append(f"{path} line {number} is malformed")
                continue
            rows.append(parts)
    return rows, problems


def check_passwd() -> Check:
    name = "/etc/passwd"
    fix = "rebuild the entries with useradd/groupadd; never edit /etc/passwd by hand"
    for path in ("/etc/passwd", "/etc/group"):
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            return Check(name, FAIL, f"{path}: {exc.strerror}", fix)
        if mode & 0o002:
            return Check(name, FAIL, f"{path} is world-writable", f"chmod 644 {path}")
    passwd, problems = _parse_table("/etc/passwd", 7)
    _, group_problems = _parse_table("/etc/group", 4)
    problems += group_problems
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Check(name, FAIL, problems[0] + more, fix)
    names = [row[0] for row in passwd]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        return Check(name, FAIL, f"duplicate account(s): {', '.join(duplicates)}", fix)
    roots = [row[0] for row in passwd if row[2] == "0"]
    if "root" not in roots:
        return Check(name, FAIL, "no root account with uid 0", fix)
    if len(roots) > 1:
        return Check(
            name,
            WARN,
            f"more than one account with uid 0: {', '.join(roots)}",
            "remove the extra uid 0 accounts",
        )
    return Check(name, PASS, f"{len(passwd)} accounts, root is the only uid 0")


def check_baked_config(env: dict[str, str]) -> tuple[dict[str, Any], Check]:
    """The baked config as nbinit start would read it, and its row."""
    from nbinit.steps import config as config_step

    name = "baked config"
    path = config_step.baked_path(env)
    effective = schema.defaults()
    try:
        layer, warnings = config_step.load_baked(env)
    except NbinitError as exc:
        return effective, Check(name, FAIL, exc.problem, exc.fix)
    if layer is None:
        return effective, Check(name, PASS, f"none at {path}: built-in defaults")
    effective = config.merge(effective, layer)
    if warnings:
        return effective, Check(name, WARN, "; ".join(warnings), "remove or fix the keys named")
    return effective, Check(name, PASS, f"{path} is valid")


def check_disk(settings: dict[str, Any]) -> Check:
    name = "disk"
    need_mb = int(settings["git"]["min_free_mb"])
    home_root = settings["user"]["home"].split("{", 1)[0].rstrip("/") or "/"
    shown, low = [], []
    from nbinit.git.policy import free_mb as measure  # the very figure the sync compares

    for path in dict.fromkeys(("/", home_root, "/tmp")):
        try:
            free_mb = int(measure(path))
        except OSError:
            continue
        shown.append(f"{path} {free_mb} MB free")
        if free_mb < need_mb:
            low.append(path)
    detail = ", ".join(shown) or "no filesystem could be measured"
    if low:
        return Check(
            name,
            WARN,
            f"{detail}: under git.min_free_mb ({need_mb}) on {', '.join(low)}",
            "give homes a larger volume (singleuser.storage.capacity)",
        )
    return Check(name, PASS, detail)


def check_gpu_stack(env: dict[str, str]) -> Check:
    name = "GPU stack"
    report = gpu.gather(env, timeout=10.0)
    cuda_image = report.cuda_version is not None or "NVIDIA_VISIBLE_DEVICES" in env
    if not cuda_image and not report.device_nodes and not report.libcuda:
        return Check(name, PASS, "not a CUDA image, no GPU")
    parts = []
    if report.cuda_version:
        needs = (
            f", needs driver >= {report.compat_floor} ({report.required_driver} for all features)"
            if report.required_driver
            else ", not in nbinit's driver table"
        )
        parts.append(f"CUDA {report.cuda_version} ({report.cuda_source}){needs}")
    parts.append(f"{report.count} GPU(s) visible now" if report.count else "no GPU here")
    detail = "; ".join(parts)
    capabilities = env.get("NVIDIA_DRIVER_CAPABILITIES")
    if capabilities is not None and capabilities.strip() != "all":
        have = {c.strip() for c in capabilities.split(",")}
        if "compute" not in have:
            return Check(
                name,
                FAIL,
                f"{detail}; NVIDIA_DRIVER_CAPABILITIES={capabilities} lacks compute: the "
                "toolkit will not inject libcuda",
                "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            )
        if "utility" not in have:
            return Check(
                name,
                WARN,
                f"{detail}; NVIDIA_DRIVER_CAPABILITIES={capabilities} lacks utility: no "
                "nvidia-smi in the pod",
                "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            )
    if report.libcuda and not report.device_nodes:
        return Check(
            name,
            WARN,
            f"{detail}; libcuda.so.1 is baked into the image at {report.libcuda}: it can "
            "shadow the driver the NVIDIA container toolkit injects",
            "remove the driver package from the image (cuda-drivers, libnvidia-compute-*)",
        )
    if report.warnings:
        return Check(name, WARN, f"{detail}; " + "; ".join(report.warnings), "see `nbinit gpu`")
    return Check(name, PASS, detail)


def check_ngc_entrypoint() -> Optional[Check]:
    """Only on NGC images: nbinit must run after NVIDIA's entrypoint, never instead of it."""
    if not os.path.exists(NGC_ENTRYPOINT):
        return None
    if not os.access(NGC_ENTRYPOINT, os.X_OK):
        return Check("NGC entrypoint", WARN, f"{NGC_ENTRYPOINT} is not executable", "chmod 755 it")
    return Check(
        "NGC entrypoint",
        PASS,
        f"{NGC_ENTRYPOINT}: keep it as ENTRYPOINT and put `nbinit start` in CMD/args "
        "(KubeSpawner sets only args, so NVIDIA's checks and CUDA forward compat still run)",
    )


def run_checks(env: dict[str, str], hub_version: Optional[str] = None) -> list[Check]:
    """Every check, in the order a person fixes them."""
    settings, baked = check_baked_config(env)
    identity, user_row = _image_identity(settings)
    checks = [
        check_singleuser(env, hub_version, settings),
        check_start_script(env),
        check_tini(env),
        check_git(env, settings),
        check_python(env),
        user_row,
        check_home(identity, env)
        if identity is not None or user_row.result != PASS
        else Check("home writable", PASS, "made at start with the default user, owned by it"),
        check_passwd(),
        baked,
        check_disk(settings),
        check_gpu_stack(env),
    ]
    ngc = check_ngc_entrypoint()
    if ngc is not None:
        checks.append(ngc)
    return checks


def counts(checks: list[Check]) -> dict[str, int]:
    return {kind: sum(1 for c in checks if c.result == kind) for kind in (FAIL, WARN, PASS)}


def verdict(checks: list[Check]) -> str:
    tally = counts(checks)
    line = f"{tally[FAIL]} FAIL, {tally[WARN]} WARN, {tally[PASS]} PASS"
    if tally[FAIL]:
        return f"{line}: this image will not serve JupyterHub until each FAIL is fixed"
    return f"{line}: this image can serve JupyterHub"


def format_table(checks: list[Check]) -> str:
    width = max([len("CHECK")] + [len(c.name) for c in checks])
    lines = [f"{'RESULT':<6}  {'CHECK':<{width}}  DETAIL"]
    for c in checks:
        lines.append(f"{c.result:<6}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.result != PASS:
            lines.append(f"{'':<6}  {'':<{width}}  fix: {c.fix}")
    lines.append(verdict(checks))
    return "\n".join(lines)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {
        "checks": [c.as_dict() for c in checks],
        "counts": counts(checks),
        "ok": not any(c.result == FAIL for c in checks),
    }
