"""`nbinit check` in throwaway containers laid out like real images.

Images: a plain distro without jupyterhub, a docker-stacks-like one (jovyan,
start-singleuser.sh), an NGC-like one (its own ENTRYPOINT, no start script, root), and a
good one. nbinit is called by its absolute path and PATH leaves out the venv, so the
venv's own jupyterhub never stands in for the image's. No network is used (`net=True`
gives the container only a loopback), as in `RUN nbinit check` during a build.
"""

from __future__ import annotations

import json
import sys

import pytest
from helpers.sandbox import PROJECT, VENV, VENV_BIN, needs_plain_host

pytestmark = pytest.mark.sandbox

NBINIT = str(VENV_BIN / "nbinit")
PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SITE = f"/usr/local/lib/python{sys.version_info.major}.{sys.version_info.minor}/dist-packages"
# Jupyter Server 2 extension mode: `--version` prints jupyter-server's version, not the hub's.
FAKE_SINGLEUSER = """#!/usr/bin/python3
import sys
if "--version" in sys.argv:
    print("2.14.2")
    sys.exit(0)
sys.exit("a stand-in: it only answers --version")
"""
BROKEN_SINGLEUSER = """#!/usr/bin/python3
import sys
sys.stderr.write(
    "Traceback (most recent call last):\\n"
    "ImportError: Failed to import default single-user server. Make sure to install "
    "dependencies for your single-user server, e.g.\\n    pip install jupyterlab\\n"
)
sys.exit(1)
"""
START_SINGLEUSER = '#!/bin/bash\nexec /usr/local/bin/start.sh jupyterhub-singleuser "$@"\n'
NGC_ENTRYPOINT = (
    '#!/bin/bash\nfor p in /opt/nvidia/entrypoint.d/*.sh; do source "$p"; done\nexec "$@"\n'
)


def plain(sandbox) -> None:
    """A distro image: no CUDA toolkit (the test machine's is hidden), no jupyterhub."""
    sandbox.setup.append("rm -f $R/usr/local/cuda")


def with_jupyterhub(sandbox, version: str = "5.2.1", script: str = FAKE_SINGLEUSER) -> None:
    sandbox.write("/usr/local/bin/jupyterhub-singleuser", script, mode=0o755)
    sandbox.write(f"{SITE}/jupyterhub/__init__.py", f"__version__ = {version!r}\n")


def docker_stacks(sandbox) -> None:
    plain(sandbox)
    sandbox.add_jovyan()
    with_jupyterhub(sandbox)
    sandbox.write("/usr/local/bin/start-singleuser.sh", START_SINGLEUSER, mode=0o755)


def check(sandbox, *args: str, env=None):
    environment = {"PATH": PLAIN_PATH}
    environment.update(env or {})
    return sandbox.run([NBINIT, "check", *args], env=environment, net=True)


def rows(result) -> dict[str, dict[str, str]]:
    assert result.stdout.startswith("{"), result.stderr
    data = json.loads(result.stdout)
    return {c["name"]: c for c in data["checks"]}


@needs_plain_host
def test_plain_distro_names_the_missing_jupyterhub_singleuser(sandbox):
    plain(sandbox)
    result = check(sandbox)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "RESULT  CHECK                  DETAIL"
    assert lines[1] == (
        f"FAIL    jupyterhub-singleuser  not on PATH ({PLAIN_PATH}): the spawn fails with "
        '`exec: "jupyterhub-singleuser": executable file not found in $PATH`'
    )
    assert lines[2] == (
        "                               fix: pip install jupyterhub jupyterlab (or conda "
        "install -c conda-forge jupyterhub-singleuser jupyterlab) in the image's Python, so "
        "jupyterhub-singleuser is on PATH"
    )
    assert lines[-1] == (
        "2 FAIL, 0 WARN, 9 PASS: this image will not serve JupyterHub until each FAIL is fixed"
    )
    assert result.stderr == ""
    # The check changes nothing in the image (the sandbox itself opens the way to the
    # project and compiles its .pyc files; the hidden toolkit is the test's own doing).
    opened = {str(p) for d in (PROJECT, VENV) for p in [d, *d.parents]}
    changed = {
        p
        for p in sandbox.changed_paths()
        if p not in opened and not p.startswith((f"{PROJECT}/", f"{VENV}/"))
    }
    assert changed <= {"/usr", "/usr/local", "/usr/local/cuda"}


@needs_plain_host
def test_plain_distro_json(sandbox):
    plain(sandbox)
    result = check(sandbox, "--json")
    assert result.returncode == 1
    found = rows(result)
    assert [name for name, c in found.items() if c["result"] == "FAIL"] == [
        "jupyterhub-singleuser",
        "start script",
    ]
    assert found["default user"]["detail"].startswith(
        "no account 'jovyan' in the image: `nbinit start` creates it (uid 1000, gid 100, "
        "home /home/jovyan)"
    )
    assert all(c["fix"] for c in found.values() if c["result"] == "FAIL")
    assert found["GPU stack"]["detail"] == "not a CUDA image, no GPU"
    assert json.loads(result.stdout)["ok"] is False


@pytest.mark.parametrize(
    "hub,code,result,detail",
    [
        pytest.param(
            None, 0, "PASS", "JupyterHub 5.2.1 at /usr/local/bin/jupyterhub-singleuser", id="no-hub"
        ),
        pytest.param(
            "5.0.0",
            0,
            "PASS",
            "JupyterHub 5.2.1 at /usr/local/bin/jupyterhub-singleuser; "
            "hub 5.0.0: same major version, compatible",
            id="hub-same-major",
        ),
        pytest.param(
            "4.1.6",
            1,
            "FAIL",
            "JupyterHub 5.2.1 at /usr/local/bin/jupyterhub-singleuser; the hub runs 4.1.6: major "
            "versions differ, the hub warns 'This could cause failure to authenticate and "
            "result in redirect loops!'",
            id="hub-older-major",
        ),
    ],
)
def test_docker_stacks_like_image(sandbox, hub, code, result, detail):
    docker_stacks(sandbox)
    args = ["--json"] + (["--hub-version", hub] if hub else [])
    run = check(sandbox, *args)
    assert run.returncode == code, run.stdout
    found = rows(run)
    assert (found["jupyterhub-singleuser"]["result"], found["jupyterhub-singleuser"]["detail"]) == (
        result,
        detail,
    )
    assert found["start script"]["detail"] == (
        "/usr/local/bin/start-singleuser.sh: `nbinit start` runs it"
    )
    assert found["default user"]["detail"] == "jovyan (uid 1000, gid 100)"
    assert found["home writable"]["detail"] == "/home/jovyan is writable by jovyan"
    others = {n: c["result"] for n, c in found.items() if n != "jupyterhub-singleuser"}
    assert set(others.values()) == {"PASS"}, others


@needs_plain_host
def test_ngc_like_image(sandbox):
    """Own ENTRYPOINT, no start script, runs as root, CUDA in the environment."""
    # The compat directory written below replaces the test machine's /usr/local/cuda.
    with_jupyterhub(sandbox)
    sandbox.write("/opt/nvidia/nvidia_entrypoint.sh", NGC_ENTRYPOINT, mode=0o755)
    sandbox.write("/usr/local/cuda/compat/lib.real/libcuda.so.1", b"")
    env = {
        "CUDA_VERSION": "12.4.1",
        "CUDA_DRIVER_VERSION": "550.54.15",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,video",
    }
    result = check(sandbox, "--json", env=env)
    assert result.returncode == 0, result.stdout
    found = rows(result)
    assert found["start script"] == {
        "name": "start script",
        "result": "PASS",
        "detail": "no start-singleuser.sh/.py: `nbinit start` execs jupyterhub-singleuser",
        "fix": "",
    }
    assert found["GPU stack"]["result"] == "PASS"
    assert found["GPU stack"]["detail"] == (
        "CUDA 12.4.1 (CUDA_VERSION), needs driver >= 525.60.13 (550.54.15 for all features); "
        "no GPU here"
    )
    assert found["NGC entrypoint"]["result"] == "PASS"
    assert found["default user"]["result"] == "PASS"  # nbinit start creates jovyan
    assert "`nbinit start` creates it" in found["default user"]["detail"]


@pytest.mark.parametrize(
    "capabilities,result,fix",
    [
        pytest.param(
            "utility", "FAIL", "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility", id="no-compute"
        ),
        pytest.param(
            "compute", "WARN", "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility", id="no-utility"
        ),
        pytest.param("all", "PASS", "", id="all"),
    ],
)
def test_cuda_image_driver_capabilities(sandbox, capabilities, result, fix):
    docker_stacks(sandbox)
    env = {"CUDA_VERSION": "12.2.2", "NVIDIA_DRIVER_CAPABILITIES": capabilities}
    found = rows(check(sandbox, "--json", env=env))
    assert (found["GPU stack"]["result"], found["GPU stack"]["fix"]) == (result, fix)


def test_cuda_image_with_a_baked_libcuda_warns(sandbox):
    docker_stacks(sandbox)
    sandbox.write("/usr/lib/nvidia-baked/libcuda.so.1", b"")
    env = {"CUDA_VERSION": "12.2.2", "LD_LIBRARY_PATH": "/usr/lib/nvidia-baked"}
    result = check(sandbox, "--json", env=env)
    assert result.returncode == 0
    gpu_row = rows(result)["GPU stack"]
    assert gpu_row["result"] == "WARN"
    assert (
        "libcuda.so.1 is baked into the image at /usr/lib/nvidia-baked/libcuda.so.1"
        in (gpu_row["detail"])
    )


def test_good_image(sandbox):
    docker_stacks(sandbox)
    sandbox.write(
        "/etc/nbinit/config.yaml",
        "version: 1\nrepos:\n  - url: https://git.example.org/team/tutorials.git\n"
        "gpu:\n  require: auto\n",
    )
    result = check(sandbox, "--hub-version", "5.2.1")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert [line[:6].strip() for line in lines[1:-1]] == ["PASS"] * (len(lines) - 2)
    assert lines[-1] == "0 FAIL, 0 WARN, 11 PASS: this image can serve JupyterHub"
    assert "PASS    baked config           /etc/nbinit/config.yaml is valid" in lines


@pytest.mark.parametrize(
    "text,mode,result,detail",
    [
        pytest.param(
            "version: 1\nrepos: [\n",
            0o644,
            "FAIL",
            "/etc/nbinit/config.yaml: invalid YAML at line 3, column 1: expected the node "
            "content, but found '<stream end>'",  # the fix is in the fix column
            id="invalid-yaml",
        ),
        pytest.param(
            "version: 1\ngpu:\n  require: yes\n",
            0o644,
            "FAIL",
            '/etc/nbinit/config.yaml: gpu.require: expected one of true, false, "auto", '
            'got "yes"',  # the config module may add a hint after this
            id="yaml-1.1-yes",
        ),
        pytest.param(
            "version: 1\ngpu:\n  requires: true\n",
            0o644,
            "WARN",
            "/etc/nbinit/config.yaml: gpu.requires: unknown key, ignored (did you mean 'require'?)",
            id="unknown-key",
        ),
        pytest.param(
            "version: 1\n",
            0o666,
            "FAIL",
            "/etc/nbinit/config.yaml: the file is writable by a non-root user, not trusted",
            # the config module may name it "config /etc/nbinit/..."
            id="world-writable",
        ),
    ],
)
def test_bad_baked_config(sandbox, text, mode, result, detail):
    docker_stacks(sandbox)
    sandbox.write("/etc/nbinit/config.yaml", text, mode=mode)
    run = check(sandbox, "--json")
    assert run.returncode == (1 if result == "FAIL" else 0)
    row = rows(run)["baked config"]
    assert row["result"] == result
    # The wording after the path is the config module's; the key path and problem are ours.
    assert detail.split(": ", 1)[1].split(" (")[0] in row["detail"], row["detail"]
    assert row["fix"]


def test_broken_singleuser_shows_the_import_error(sandbox):
    docker_stacks(sandbox)
    with_jupyterhub(sandbox, script=BROKEN_SINGLEUSER)
    run = check(sandbox, "--json")
    assert run.returncode == 1
    row = rows(run)["jupyterhub-singleuser"]
    assert row["detail"] == (
        "`/usr/local/bin/jupyterhub-singleuser --version` exits 1: ImportError: Failed to "
        "import default single-user server. Make sure to install dependencies for your "
        "single-user server, e.g."
    )
    assert (
        row["fix"]
        == "install the single-user server in the same Python: pip install jupyterhub jupyterlab"
    )


def test_as_the_images_own_user(sandbox):
    """`USER jovyan` before `RUN nbinit check`: the current user is the default user."""
    docker_stacks(sandbox)
    run = sandbox.run(
        [
            "setpriv",
            "--reuid",
            "1000",
            "--regid",
            "100",
            "--init-groups",
            NBINIT,
            "check",
            "--json",
        ],
        env={"PATH": PLAIN_PATH, "HOME": "/home/jovyan"},
        net=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    found = rows(run)
    assert found["default user"]["detail"] == "jovyan (uid 1000, gid 100)"
    assert found["home writable"]["result"] == "PASS"


def test_good_image_with_the_real_jupyterhub_singleuser(sandbox):
    """The real jupyterhub-singleuser (jupyter_server 2, extension mode) from the venv."""
    import jupyterhub

    plain(sandbox)
    sandbox.add_jovyan()
    result = check(
        sandbox,
        "--json",
        "--hub-version",
        jupyterhub.__version__,
        env={"PATH": f"{VENV_BIN}:{PLAIN_PATH}"},
    )
    assert result.returncode == 0, result.stdout
    row = rows(result)["jupyterhub-singleuser"]
    assert (row["result"], row["detail"]) == (
        "PASS",
        f"JupyterHub {jupyterhub.__version__} at {VENV_BIN}/jupyterhub-singleuser; "
        f"hub {jupyterhub.__version__}: same version",
    )
