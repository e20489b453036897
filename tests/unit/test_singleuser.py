"""nbinit's singleuser runtime: the version choice, the hub's answer, the launcher's sys.path.

The launcher runs for real in a child Python with a runtime zip built here; the stand-in
`jupyterhub.singleuser` in that zip reports what the server process sees (its sys.path,
its argv) and what a kernel it starts would see, so the test asserts the launcher's own
work and nothing else.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nbinit import runtime, singleuser, singleuser_launcher
from nbinit.context import Context, Deadline
from nbinit.errors import NbinitError
from nbinit.log import Log

V4, V5, V6 = (4, 1, 6), (5, 5, 4), (6, 1, 1)
IMAGE_PYTHON = "/usr/bin/python3"
CARRIED = [(V4, "/r/jupyterhub-4.1.6.zip"), (V5, "/r/jupyterhub-5.5.4.zip"), (V6, "/r/6.zip")]


@pytest.mark.parametrize(
    ("hub", "python", "chosen", "warning"),
    [
        pytest.param((5, 2, 1), (3, 12), V5, "", id="same-major-5"),
        pytest.param((4, 0, 2), (3, 12), V4, "", id="same-major-4"),
        pytest.param((6, 0, 0), (3, 10), V6, "", id="same-major-6"),
        pytest.param((7, 0, 0), (3, 12), V6, "which nbinit does not carry", id="newer-hub"),
        pytest.param((3, 1, 1), (3, 12), V4, "which nbinit does not carry", id="older-hub"),
        pytest.param((6, 1, 0), (3, 9), V5, "which this Python cannot run", id="py39-hub6"),
        pytest.param(None, (3, 12), V6, "", id="hub-unknown-newest"),
        pytest.param(None, (3, 9), V5, "", id="hub-unknown-py39"),
    ],
)
def test_choose_runtime(hub, python, chosen, warning):
    version, path, said = singleuser.choose_runtime(CARRIED, hub, python)
    assert version == chosen
    assert path == dict(CARRIED)[chosen]
    if warning:
        assert warning in said
        assert f"using {singleuser.show(chosen)}" in said
    else:
        assert said == ""


def test_choose_runtime_prefers_the_newer_major_on_a_tie():
    version, _, warning = singleuser.choose_runtime([CARRIED[0], CARRIED[2]], (5, 0, 0), (3, 12))
    assert version == V6
    assert "JupyterHub 5" in warning


@pytest.mark.parametrize(
    ("runtimes", "python", "words"),
    [
        pytest.param(CARRIED, (3, 7), "Python 3.7 is too old for every runtime", id="py37"),
        pytest.param([], (3, 12), "runtimes are missing", id="none-carried"),
    ],
)
def test_choose_runtime_refuses(runtimes, python, words):
    with pytest.raises(NbinitError, match=words) as caught:
        singleuser.choose_runtime(runtimes, (5, 0, 0), python)
    assert caught.value.fix


def test_list_runtimes_reads_versions_from_names(tmp_path):
    for name in ("jupyterhub-5.5.4.zip", "jupyterhub-4.1.6.zip", "notes.txt", "jupyterhub-x.zip"):
        (tmp_path / name).write_bytes(b"")
    assert singleuser.list_runtimes(str(tmp_path)) == [
        ((4, 1, 6), str(tmp_path / "jupyterhub-4.1.6.zip")),
        ((5, 5, 4), str(tmp_path / "jupyterhub-5.5.4.zip")),
    ]
    assert singleuser.list_runtimes(str(tmp_path / "absent")) == []


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        pytest.param({"python": "3.12.1", "jupyter_server": "2.14.2"}, None, id="ok"),
        pytest.param(
            {"python": "3.12.1", "jupyter_server": None}, "(3.12.1) has no jupyter_server", id="no"
        ),
        pytest.param(
            {"python": "3.10.0", "jupyter_server": "1.24.0"}, "1.24.0 (py) is older than 2", id="1x"
        ),
    ],
)
def test_requirement_problem(answer, problem):
    said = singleuser.requirement_problem(answer, "py")
    assert (said is None) if problem is None else (problem in said)


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("jupyterhub-singleuser", True),
        ("/usr/local/bin/start-singleuser.sh", True),
        ("start-singleuser.py", True),
        ("jupyter-lab", False),
        ("/opt/jupyterhub-singleuser-wrapper", False),
    ],
)
def test_is_singleuser_command(argv0, expected):
    assert singleuser.is_singleuser_command(argv0) is expected


@pytest.mark.parametrize(
    ("argv", "notebook_args", "expected"),
    [
        pytest.param(["jupyterhub-singleuser", "--debug"], "--x", ["--debug"], id="own-args"),
        pytest.param(
            ["start-singleuser.py", "--debug"],
            "--ServerApp.root_dir='/home/my notes'",
            ["--ServerApp.root_dir=/home/my notes", "--debug"],
            id="start-script-notebook-args",
        ),
        pytest.param(["/usr/local/bin/start-singleuser.sh"], "", [], id="start-script-none"),
    ],
)
def test_server_args(argv, notebook_args, expected):
    assert singleuser.server_args(argv, {"NOTEBOOK_ARGS": notebook_args}) == expected


def test_unbalanced_notebook_args_are_a_clear_error():
    with pytest.raises(NbinitError, match="NOTEBOOK_ARGS cannot be split") as caught:
        singleuser.server_args(["start-singleuser.py"], {"NOTEBOOK_ARGS": "--x='open"})
    assert caught.value.fix == "fix its quoting (it is split like a shell command line)"


def test_script_interpreter_keeps_env_python(tmp_path):
    script = tmp_path / "jupyter-lab"
    script.write_text("#!/usr/bin/env -S python3.12\nimport sys\n")
    assert singleuser.script_interpreter(str(script)) == ["/usr/bin/env", "python3.12"]
    script.write_text("#!/bin/sh\nexec python3 -m jupyterlab\n")
    assert singleuser.script_interpreter(str(script)) is None


# -- the hub's version ---------------------------------------------------------------------


def context(env: dict[str, str]) -> tuple[Context, io.StringIO]:
    stream = io.StringIO()
    return Context("start", env, Log(stream=stream), Deadline(20)), stream


def test_hub_version_is_asked_then_cached_for_when_the_hub_is_away(http_server, tmp_path):
    server = http_server()
    server.route("/hub/api/", body=json.dumps({"version": "5.2.1"}).encode())
    env = {"JUPYTERHUB_API_URL": server.url("/hub/api"), "NBINIT_STATE_DIR": str(tmp_path)}
    ctx, stream = context(env)
    assert singleuser.hub_version(ctx) == ("5.2.1", "the hub")
    assert [seen.path for seen in server.seen] == ["/hub/api/"]
    cached = tmp_path / singleuser.HUB_VERSION_NAME
    assert json.loads(cached.read_text())["version"] == "5.2.1"
    assert cached.stat().st_mode & 0o777 == 0o600
    server.stop()
    ctx, stream = context(env)
    assert singleuser.hub_version(ctx) == ("5.2.1", f"the last answer ({cached})")
    assert "cannot ask the hub for its version (URLError: " in stream.getvalue()
    assert not ctx.log.warnings


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"<html>proxy error</html>", 200, id="not-json"),
        pytest.param(json.dumps({"version": "5; rm -rf"}).encode(), 200, id="not-a-version"),
        pytest.param(json.dumps({"version": "5.0.0", "x": "y" * 70000}).encode(), 200, id="huge"),
        pytest.param(b"{}", 503, id="http-503"),
    ],
)
def test_a_bad_answer_is_not_a_version(http_server, tmp_path, body, status):
    server = http_server()
    server.route("/hub/api/", body=body, status=status)
    env = {"JUPYTERHUB_API_URL": server.url("/hub/api"), "NBINIT_STATE_DIR": str(tmp_path)}
    ctx, stream = context(env)
    assert singleuser.hub_version(ctx) == (None, "unknown")
    assert len(ctx.log.warnings) == 1
    assert "cannot learn the hub's version" in ctx.log.warnings[0]
    assert not (tmp_path / singleuser.HUB_VERSION_NAME).exists()


def test_no_api_url_uses_no_network_and_says_why(tmp_path):
    ctx, _ = context({"NBINIT_STATE_DIR": str(tmp_path)})
    assert singleuser.hub_version(ctx) == (None, "unknown")
    assert "JUPYTERHUB_API_URL is not set" in ctx.log.warnings[0]


# -- the launcher ------------------------------------------------------------------------------

# The stand-in server: what the real jupyterhub.singleuser would see of its process, and a
# child Python started the way jupyter_server starts a kernel (same environment).
STAND_IN = """\
import json, os, subprocess, sys
import shadowed

def main():
    if sys.version_info >= (3, 8):
        assert sys.pycache_prefix is None, "the bytecode prefix leaked into the server"
    kernel = subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path))"],
        capture_output=True, text=True, check=True,
    )
    print(json.dumps({
        "argv": sys.argv,
        "path": sys.path,
        "shadowed": shadowed.WHO,
        "kernel_path": json.loads(kernel.stdout),
        "pythonpath": os.environ.get("PYTHONPATH"),
    }))
    return 0
"""


def stand_in_runtime(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("jupyterhub/__init__.py", "")
        archive.writestr("jupyterhub/singleuser/__init__.py", STAND_IN)
        archive.writestr("jupyterhub/singleuser/extension.py", "")
        archive.writestr("jupyterhub/singleuser/mixins.py", "")
        archive.writestr("shadowed.py", "WHO = 'runtime'\n")
    return path


def test_server_path_appends_the_runtime_and_drops_the_working_directory():
    path = ["", "/usr/lib/python312.zip", os.getcwd(), "/site", "/r.zip"]
    assert singleuser_launcher.server_path(path, "/r.zip") == [
        "/usr/lib/python312.zip",
        "/site",
        "/r.zip",
    ]


def image_python() -> str:
    """Debian's python3 plays the image's: no jupyterhub of its own (the test venv has one)."""
    probe = subprocess.run([IMAGE_PYTHON, "-c", "import jupyterhub"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{IMAGE_PYTHON} has jupyterhub installed: it cannot play an image without")
    return IMAGE_PYTHON


@pytest.mark.parametrize("unpacked", [False, True], ids=["zip", "unpacked"])
def test_launcher_runs_the_server_with_the_runtime_last_and_kernels_never_see_it(
    tmp_path, unpacked
):
    zip_path = stand_in_runtime(tmp_path / "jupyterhub-5.5.4.zip")
    if unpacked:
        zip_path = Path(singleuser.extract_runtime(str(zip_path), root=str(tmp_path / "run")))
    image = tmp_path / "image-site"
    image.mkdir()
    (image / "shadowed.py").write_text("WHO = 'image'\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "jupyterhub.py").write_text("raise SystemExit('the home shadowed jupyterhub')\n")
    command = runtime.foreign_module_command([image_python()], singleuser.LAUNCHER)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(image), "HOME": str(home)}
    result = subprocess.run(
        [*command, "run", str(zip_path), "--ip=0.0.0.0", "--debug"],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["argv"] == ["jupyterhub-singleuser", "--ip=0.0.0.0", "--debug"]
    assert seen["path"][-1] == str(zip_path)
    assert seen["path"].count(str(zip_path)) == 1
    assert runtime.package_location() not in seen["path"]  # nbinit itself is gone again
    assert command[-2] not in seen["path"]  # and so is the bootstrap's directory
    assert "" not in seen["path"] and str(home) not in seen["path"]
    assert seen["shadowed"] == "image"  # the image's packages come first
    assert seen["pythonpath"] == str(image)  # untouched: never names the runtime
    assert str(zip_path) not in seen["kernel_path"]
    assert str(image) in seen["kernel_path"]
    # Unpacked, the runtime's bytecode is kept in the home for the next start.
    cache = home / ".cache" / "nbinit" / "pycache"
    cached = sorted(str(p.relative_to(cache)) for p in cache.rglob("*.pyc"))
    if unpacked:
        assert any(f"/{name}".startswith(f"{zip_path}/jupyterhub/singleuser/extension.")
                   for name in cached), cached  # fmt: skip
    else:
        assert cached == []


def test_launcher_probe_reports_this_python(tmp_path):
    command = runtime.foreign_module_command([sys.executable], singleuser.LAUNCHER)
    result = subprocess.run([*command, "probe"], capture_output=True, text=True, timeout=60)
    answer = json.loads(result.stdout)
    assert answer["python"] == ".".join(str(n) for n in sys.version_info[:3])
    assert answer["jupyter_server"]  # the test venv has it (the e2e spawn needs it)


def test_launcher_says_which_runtime_is_missing(tmp_path):
    command = runtime.foreign_module_command([sys.executable], singleuser.LAUNCHER)
    missing = tmp_path / "jupyterhub-5.5.4.zip"
    result = subprocess.run(
        [*command, "run", str(missing)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"the runtime {missing} is missing: COPY build/nbinit-root/ / again" in result.stderr


def test_extract_runtime_unpacks_once_with_fixed_times_and_again_when_the_zip_changes(tmp_path):
    zip_path = stand_in_runtime(tmp_path / "jupyterhub-5.5.4.zip")
    root = tmp_path / "run"
    target = Path(singleuser.extract_runtime(str(zip_path), root=str(root)))
    assert target == root / "jupyterhub-5.5.4"
    module = target / "jupyterhub" / "singleuser" / "__init__.py"
    assert module.read_text() == STAND_IN
    assert module.stat().st_mtime == singleuser.SOURCE_MTIME
    assert module.stat().st_mode & 0o777 == 0o644
    assert target.stat().st_mode & 0o777 == 0o755
    inode = module.stat().st_ino
    assert singleuser.extract_runtime(str(zip_path), root=str(root)) == str(target)
    assert module.stat().st_ino == inode  # the same zip: reused, not unpacked again
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr("../escape.py", "")
        archive.writestr("added.py", "")
    assert singleuser.extract_runtime(str(zip_path), root=str(root)) == str(target)
    assert (target / "added.py").exists()
    assert not (root / "escape.py").exists() and not (tmp_path / "escape.py").exists()
    assert sorted(p.name for p in root.iterdir()) == ["jupyterhub-5.5.4"]  # no work dirs left
