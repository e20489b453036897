"""The server command as the user finds it, nbinit's singleuser runtime, the default user.

Real starts in a throwaway container. The image's Python is build/lab-venv (jupyter_server
and ipykernel, no jupyterhub: what an NGC image has); PATH leaves out the test venv, whose
own jupyterhub-singleuser would otherwise be found. The runtimes are the real zips, built
from the pinned wheels and laid where `COPY build/nbinit-root/ /` puts them.
"""

from __future__ import annotations

import json

import pytest
from helpers.sandbox import PROJECT, VENV_BIN

from nbinit.bundle.runtimes import DEFAULT_RUNTIME_WHEELS, build_runtimes

pytestmark = pytest.mark.sandbox

STATUS = "/var/lib/nbinit-status.json"  # /run is a fresh tmpfs in each run of the sandbox
ALICE = {
    "JUPYTERHUB_USER": "alice",
    "NB_UID": "4321",
    "NB_GID": "4321",
    "NBINIT_STATUS_FILE": STATUS,
}
LAB_BIN = PROJECT / "build" / "lab-venv" / "bin"


def lab_interpreter() -> str:
    """The Python jupyter-server's `#!` names in the lab venv (python or python3: pip writes
    the name it was run as), which nbinit reports as the image's."""
    with open(LAB_BIN / "jupyter-server") as script:
        return script.readline()[2:].strip()


IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NBINIT = str(VENV_BIN / "nbinit")
LOCAL_PATH = f"{LAB_BIN}:{IMAGE_PATH}"  # the image's Python first, no jupyterhub anywhere


@pytest.fixture(scope="module")
def runtimes() -> dict[str, bytes]:
    if not (LAB_BIN / "python").exists():
        pytest.skip(f"{LAB_BIN}/python is missing (scripts/setup.sh makes it)")
    return build_runtimes(PROJECT / DEFAULT_RUNTIME_WHEELS)


def image_with_runtimes(box, runtimes: dict[str, bytes]) -> None:
    box.add_jovyan()
    box.mkdir("/s/alice/jupyterhub")
    for relative, data in runtimes.items():
        box.write(f"/{relative}", data)


NOT_STARTING = "not starting the server: fix the problem above and restart"


def fatal(result) -> list[str]:
    """The FATAL lines, less the closing one every FATAL start ends with."""
    lines = [line.split("nbinit: ", 1)[1] for line in result.lines("FATAL")]
    assert lines[-1:] == [NOT_STARTING], result.stderr
    return lines[:-1]


def status(box) -> dict:
    return json.loads(box.read(STATUS))


# -- an explicit command is checked before the drop -----------------------------------------


def test_a_missing_command_is_nbinits_fatal_with_the_fix_and_the_status_says_so(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    result = sandbox.run([NBINIT, "start", "--", "no-such-server", "--ip=0.0.0.0"], env=ALICE)
    assert result.returncode == 1
    assert fatal(result) == [
        f"the command no-such-server is not an executable file on PATH for alice (PATH="
        f"{sandbox_path()}): install it in the image or correct the command (z2jh "
        "singleuser.cmd); run `nbinit check` when building the image"
    ]
    assert "exec ok" not in result.stderr and "ready in" not in result.stderr
    data = status(sandbox)
    assert data["finished"] is True and data["outcome"] == "failed"
    assert data["steps"][-1]["name"] == "exec" and data["steps"][-1]["outcome"] == "failed"


def sandbox_path() -> str:
    from helpers.sandbox import BASE_PATH

    return BASE_PATH


def test_a_command_only_root_may_run_is_refused_for_the_user(sandbox):
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")
    sandbox.write("/usr/local/bin/rootonly-server", "#!/bin/sh\necho ran\n", mode=0o700)
    result = sandbox.run([NBINIT, "start", "--", "rootonly-server"], env=ALICE)
    assert result.returncode == 1
    assert fatal(result)[0].startswith(
        "the command rootonly-server is not an executable file on PATH for alice"
    )
    assert "ran" not in result.stdout


def test_runtime_image_refuses_to_stand_in_for_a_missing_singleuser(sandbox):
    sandbox.add_jovyan()
    sandbox.write("/etc/nbinit/config.yaml", "version: 1\nsingleuser: {runtime: image}\n")
    result = sandbox.run([NBINIT, "start", "--", "jupyterhub-singleuser"], env={"PATH": LOCAL_PATH})
    assert result.returncode == 1
    assert fatal(result)[0].startswith(
        "jupyterhub-singleuser is not on PATH for jovyan and singleuser.runtime is image: "
        "pip install jupyterhub in the image's Python"
    )


# -- nbinit's runtime ---------------------------------------------------------------------------


def runtime_line(result) -> str:
    lines = [line for line in result.lines("INFO") if "nbinit's runtime" in line]
    assert len(lines) == 1, result.stderr
    return lines[0].split("nbinit: ", 1)[1]


def test_runtime_matches_the_hubs_major_and_remembers_it(sandbox, runtimes, http_server):
    image_with_runtimes(sandbox, runtimes)
    hub = http_server()
    hub.route("/hub/api/", body=b'{"version": "5.2.1"}')
    env = {**ALICE, "PATH": LOCAL_PATH, "JUPYTERHUB_API_URL": hub.url("/hub/api")}
    argv = [NBINIT, "start", "--", "jupyterhub-singleuser", "--version"]

    first = sandbox.run(argv, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    assert runtime_line(first) == (
        "no jupyterhub-singleuser in the image: nbinit's runtime JupyterHub 5.5.4 (the hub "
        f"runs 5.2.1 (the hub)) on {lab_interpreter()} (Python "
        f"{lab_python_version()}, jupyter_server {lab_server_version()})"
    )
    assert first.stdout.strip() == "5.5.4"  # jupyterhub-singleuser --version, from the zip
    assert first.lines("WARNING") == []
    exec_step = status(sandbox)["steps"][-1]
    assert exec_step["details"]["singleuser"]["version"] == "5.5.4"

    hub.stop()  # the hub is away: its last answer is used, quietly
    second = sandbox.run(argv, env=env, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "(the last answer (/var/lib/nbinit/hub-version.json))" in runtime_line(second)
    assert "JupyterHub 5.5.4" in runtime_line(second)
    assert second.lines("WARNING") == []

    upgraded = http_server()  # another major than the one cached: its runtime is chosen
    upgraded.route("/hub/api/", body=b'{"version": "6.0.2"}')
    env["JUPYTERHUB_API_URL"] = upgraded.url("/hub/api")
    third = sandbox.run(argv, env=env, timeout=120)
    assert third.returncode == 0, third.stderr
    assert "JupyterHub 6.1.1 (the hub runs 6.0.2 (the hub))" in runtime_line(third)
    assert third.stdout.strip() == "6.1.1"


def test_start_singleuser_script_without_singleuser_gets_the_runtime(sandbox, runtimes):
    """docker-stacks' start-singleuser.py is there but jupyterhub-singleuser is not."""
    image_with_runtimes(sandbox, runtimes)
    sandbox.write("/usr/local/bin/start-singleuser.py", "#!/bin/sh\necho script-ran\n", mode=0o755)
    env = {**ALICE, "PATH": LOCAL_PATH, "NOTEBOOK_ARGS": "--version"}
    result = sandbox.run([NBINIT, "start", "--", "start-singleuser.py"], env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no start-singleuser.py in the image: nbinit's runtime JupyterHub 6.1.1" in (
        runtime_line(result)
    )
    assert "script-ran" not in result.stdout
    assert result.stdout.strip() == "6.1.1"  # NOTEBOOK_ARGS (--version) reached the server
    # No hub to ask: said once, and the newest runtime the image's Python runs is used.
    assert [w.split("nbinit: ", 1)[1] for w in result.lines("WARNING")] == [
        "cannot learn the hub's version (JUPYTERHUB_API_URL is not set) and none is cached: "
        "using the newest runtime; install jupyterhub in the image to match the hub yourself"
    ]


@pytest.mark.parametrize(
    ("env", "words"),
    [
        pytest.param(
            {"PATH": IMAGE_PATH},
            "jupyterhub-singleuser is not on PATH for alice, and nbinit's runtime cannot run "
            "instead: the image's Python /usr/bin/python3 ",
            id="no-jupyter-server",
        ),
        pytest.param(
            {"PATH": LOCAL_PATH, "JUPYTERHUB_SINGLEUSER_EXTENSION": "0"},
            "JUPYTERHUB_SINGLEUSER_EXTENSION=0 asks for the legacy notebook-server mode",
            id="legacy-mode",
        ),
    ],
)
def test_runtime_refuses_what_it_cannot_run_before_the_drop(sandbox, runtimes, env, words):
    image_with_runtimes(sandbox, runtimes)
    result = sandbox.run(
        [NBINIT, "start", "--", "jupyterhub-singleuser"], env={**ALICE, **env}, timeout=120
    )
    assert result.returncode == 1
    assert len(fatal(result)) == 1 and fatal(result)[0].startswith(words), result.stderr
    assert status(sandbox)["outcome"] == "failed"


def test_the_images_own_singleuser_wins(sandbox, runtimes):
    image_with_runtimes(sandbox, runtimes)
    sandbox.write(
        "/usr/local/bin/jupyterhub-singleuser", "#!/bin/sh\necho image-singleuser\n", mode=0o755
    )
    result = sandbox.run(
        [NBINIT, "start", "--", "jupyterhub-singleuser"], env={**ALICE, "PATH": LOCAL_PATH}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "image-singleuser"
    assert status(sandbox)["steps"][-1]["details"]["singleuser"]["runtime"] == "image"


def lab_python_version() -> str:
    import subprocess

    code = "import sys; print('.'.join(map(str, sys.version_info[:3])))"
    return subprocess.check_output([str(LAB_BIN / "python"), "-c", code], text=True).strip()


def lab_server_version() -> str:
    import subprocess

    code = "import jupyter_server; print(jupyter_server.__version__)"
    return subprocess.check_output([str(LAB_BIN / "python"), "-c", code], text=True).strip()


# -- the default user ---------------------------------------------------------------------------


def test_an_image_without_jovyan_gets_it_at_start_once(sandbox):
    """No jovyan in the image (this host's uid 1000 is another account, as Ubuntu's is)."""
    sandbox.write("/s/README", "no marker for alice\n")
    script = "id; echo $HOME"
    # No NB_UID: with one and no marker, start.sh's option is not honoured and says so.
    env = {key: value for key, value in ALICE.items() if not key.startswith("NB_")}
    first = sandbox.run(["nbinit", "start", "--", "sh", "-c", script], env=env)
    assert first.returncode == 0, first.stderr
    assert first.lines("WARNING") == []
    uid, home = first.stdout.splitlines()
    assert uid.startswith("uid=1000(") and " gid=100(users)" in uid
    assert home == "/home/jovyan"
    passwd = sandbox.read("/etc/passwd").splitlines()
    assert [line for line in passwd if line.startswith("jovyan:")] == [
        "jovyan:x:1000:100::/home/jovyan:/bin/bash"
    ]
    assert (sandbox.host_view("/home/jovyan").stat().st_uid, 100) == (
        1000,
        sandbox.host_view("/home/jovyan").stat().st_gid,
    )
    info = [line.split("nbinit: ", 1)[1] for line in first.lines("INFO")]
    assert any(
        line.startswith("the default user jovyan (user.default_user) is not in") for line in info
    )

    again = sandbox.run(["nbinit", "start", "--", "sh", "-c", script], env=env)
    assert again.returncode == 0, again.stderr
    assert again.lines("WARNING") == []
    assert "is not in this image" not in again.stderr
    assert sandbox.read("/etc/passwd").count("\njovyan:") == 1
    assert again.stdout == first.stdout


# -- nbinit check -------------------------------------------------------------------------------


def check_rows(box, *args: str, path: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = box.run([NBINIT, "check", "--json", *args], env={"PATH": path}, net=True)
    return result.returncode, {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_check_says_nbinits_runtime_serves_and_which_version_the_hub_gets(sandbox, runtimes):
    image_with_runtimes(sandbox, runtimes)
    code, rows = check_rows(sandbox, "--hub-version", "5.2.1", path=LOCAL_PATH)
    assert code == 0
    assert rows["jupyterhub-singleuser"] == {
        "name": "jupyterhub-singleuser",
        "result": "PASS",
        "detail": "not in the image: nbinit's runtime serves (JupyterHub 4.1.6, 5.5.4, 6.1.1, "
        f"the hub's major version chosen at start) on {lab_interpreter()} (Python "
        f"{lab_python_version()}, jupyter_server {lab_server_version()}); hub 5.2.1: "
        "JupyterHub 5.5.4 would run",
        "fix": "",
    }
    assert rows["start script"]["detail"] == (
        "none in the image: `nbinit start` runs nbinit's singleuser runtime"
    )


def test_check_names_what_the_images_python_lacks_for_the_runtime(sandbox, runtimes):
    image_with_runtimes(sandbox, runtimes)
    code, rows = check_rows(sandbox, path=IMAGE_PATH)  # Debian's python3: no jupyter_server
    assert code == 1
    row = rows["jupyterhub-singleuser"]
    assert row["result"] == "FAIL"
    assert row["detail"] == (
        "not in the image, and nbinit's runtime (JupyterHub 4.1.6, 5.5.4, 6.1.1) cannot run: "
        f"the image's Python /usr/bin/python3 ({lab_python_version()}) has no jupyter_server"
    )
    assert row["fix"] == "pip install 'jupyter_server>=2' (or jupyterlab 4) in the image's Python"
