"""The one COPY line, proven: three image layouts get only the built tree and start as the user.

Each container is laid out like an image (docker-stacks, NVIDIA NGC PyTorch, plain python)
with a stand-in for the parts of that image nbinit meets (start.sh and its hook directories,
nvidia_entrypoint.sh and its entrypoint.d, nothing at all), then `python3 -m nbinit.bundle
--tree` is written into its upper layer exactly as `COPY build/nbinit-root/ /` would, and
Python's dist-packages are hidden, so only the zipapp's own packages can be imported. The
server is a stand-in `jupyterhub-singleuser` that prints who it runs as.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import yaml
from helpers import hubcode
from helpers.gitserver import GitHttpServer, Pusher, make_bare
from helpers.sandbox import PROJECT

from nbinit import bundle

pytestmark = pytest.mark.sandbox

IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What KubeSpawner gives the container (the UID from the namespace annotation `uid`).
HUB_ENV = {
    "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_API_TOKEN": "hub-token-for-alice",
    "NB_UID": "4321",
    "NB_GID": "4321",
    "PATH": IMAGE_PATH,
}
CUSTOM_USER = {"user": "alice", "uid": "4321", "gid": "4321", "home": "/home/alice"}

SERVER = """#!/bin/sh
# stand-in for jupyterhub-singleuser: say who and where it runs
echo "user=$(id -un) uid=$(id -u) gid=$(id -g) home=$HOME" \\
     "pid1=$(cat /proc/1/comm) ld=${LD_LIBRARY_PATH:-}"
"""

# The parts of docker-stacks' start.sh the hook relies on: `cmd`, sourced hook directories,
# and, as root, a switch to jovyan (sudo in the real one) after before-notebook.d.
START_SH = """#!/bin/bash
set -e
if [ $# -eq 0 ]; then cmd=( bash ); else cmd=( "$@" ); fi
source /usr/local/bin/run-hooks.sh /usr/local/bin/start-notebook.d
if [ "$(id -u)" = 0 ]; then
    source /usr/local/bin/run-hooks.sh /usr/local/bin/before-notebook.d
    exec setpriv --reuid=jovyan --regid=users --init-groups "${cmd[@]}"
fi
source /usr/local/bin/run-hooks.sh /usr/local/bin/before-notebook.d
exec "${cmd[@]}"
"""
RUN_HOOKS_SH = """#!/bin/bash
for hook_file in "$1"/*; do
    [ -e "$hook_file" ] || continue
    case "$hook_file" in
        *.sh) source "$hook_file" || echo "ERROR: $hook_file has failed, continuing" >&2 ;;
        *) if [ -x "$hook_file" ]; then "$hook_file"; fi ;;
    esac
done
"""

# NGC: parts sourced in name order with the entrypoint's arguments, then exec "$@".
NVIDIA_ENTRYPOINT = """#!/bin/bash
shopt -s nullglob extglob
parts=( /opt/nvidia/entrypoint.d/*@(.txt|.sh) )
shopt -u nullglob extglob
for part in "${parts[@]}"; do
    case "$part" in
        *.txt) cat "$part" >&2 ;;
        *.sh) source "$part" ;;
    esac
done
if [ $# -eq 0 ]; then exec /bin/bash; else exec "$@"; fi
"""
CUDA_COMPAT_PART = """compat=/usr/local/cuda/compat/lib.real
export LD_LIBRARY_PATH="$compat${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "NOTE: CUDA Forward Compatibility mode ENABLED." >&2
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, tuple[bytes, int]]:
    """The built tree, as {path in the image: (bytes, mode)}."""
    root = tmp_path_factory.mktemp("nbinit-root")
    # With bytecode for the container's python3 (Debian's, as the venv's), as a release has.
    data, used = bundle.build_zipapp(PROJECT / bundle.DEFAULT_WHEELS, [sys.executable])
    assert len(used) == 1, used
    files = bundle.write_tree(root, data)
    return {
        "/" + str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mode & 0o7777)
        for path in files
    }


def copy_tree(sandbox, tree) -> None:
    """`COPY build/nbinit-root/ /`, and a python3 whose dist-packages are empty."""
    for path, (data, mode) in tree.items():
        sandbox.write(path, data, mode=mode)
    for packages in ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3.11/dist-packages"):
        if Path(packages).is_dir():
            sandbox.setup.append(f"mount -t tmpfs -o mode=755 tmpfs $R{packages}")


def mark_custom_user(sandbox) -> None:
    sandbox.mkdir("/s")
    sandbox.mkdir("/s/alice", mode=0o755)
    sandbox.mkdir("/s/alice/jupyterhub", mode=0o755)


def server_line(result) -> dict[str, str]:
    lines = [line for line in result.stdout.splitlines() if line.startswith("user=")]
    assert len(lines) == 1, f"server did not run once\n{result.stdout}\n{result.stderr}"
    return dict(word.split("=", 1) for word in lines[0].split(" "))


def docker_stacks_image(sandbox, tree) -> None:
    sandbox.add_jovyan()
    sandbox.write("/usr/local/bin/start.sh", START_SH, mode=0o755)
    sandbox.write("/usr/local/bin/run-hooks.sh", RUN_HOOKS_SH, mode=0o755)
    sandbox.mkdir("/usr/local/bin/start-notebook.d")
    sandbox.mkdir("/usr/local/bin/before-notebook.d")
    sandbox.write("/usr/local/bin/jupyterhub-singleuser", SERVER, mode=0o755)
    copy_tree(sandbox, tree)


def ngc_image(sandbox, tree) -> None:
    sandbox.add_jovyan()  # jovyan baked in (without it nbinit creates it: docs/delivery.md)
    sandbox.write("/opt/nvidia/nvidia_entrypoint.sh", NVIDIA_ENTRYPOINT, mode=0o755)
    sandbox.write("/opt/nvidia/entrypoint.d/10-banner.txt", "== PyTorch ==\n")
    sandbox.write("/opt/nvidia/entrypoint.d/50-cuda-compat.sh", CUDA_COMPAT_PART)
    sandbox.write("/usr/local/bin/jupyterhub-singleuser", SERVER, mode=0o755)
    copy_tree(sandbox, tree)


def plain_python_image(sandbox, tree) -> None:
    sandbox.write("/usr/local/bin/jupyterhub-singleuser", SERVER, mode=0o755)
    copy_tree(sandbox, tree)


# -- the three layouts, as the hub starts them --------------------------------------------


NBINIT_CMD = ["nbinit", "start", "--", "jupyterhub-singleuser"]
CMDS = [
    pytest.param(["jupyterhub-singleuser"], id="default-cmd"),
    pytest.param(NBINIT_CMD, id="cmd-runs-nbinit"),
]


@pytest.mark.parametrize("cmd", CMDS)
def test_docker_stacks_starts_the_custom_user_through_the_hook(sandbox, tree, cmd):
    """ENTRYPOINT tini -g -- start.sh; CMD z2jh's default cmd, or one that runs nbinit."""
    docker_stacks_image(sandbox, tree)
    mark_custom_user(sandbox)
    result = sandbox.run(["tini", "-g", "--", "/usr/local/bin/start.sh", *cmd], env=HUB_ENV)
    assert result.returncode == 0, result.stderr
    assert "docker-stacks hook (start-notebook.d, uid 0): handing over to nbinit" in result.stderr
    assert result.lines("FATAL") == []
    seen = server_line(result)
    assert seen["pid1"] == "tini"
    assert {k: seen[k] for k in CUSTOM_USER} == CUSTOM_USER, result.stderr


@pytest.mark.parametrize("cmd", CMDS)
def test_ngc_starts_the_custom_user_with_cuda_compat_kept(sandbox, tree, cmd):
    """ENTRYPOINT nvidia_entrypoint.sh; its entrypoint.d part hands over last, or stands
    aside when the command already runs nbinit."""
    ngc_image(sandbox, tree)
    mark_custom_user(sandbox)
    result = sandbox.run(["/opt/nvidia/nvidia_entrypoint.sh", *cmd], env=HUB_ENV)
    assert result.returncode == 0, result.stderr
    handed_over = "NGC entrypoint part (uid 0): handing over to nbinit" in result.stderr
    assert handed_over == (cmd != NBINIT_CMD)
    seen = server_line(result)
    assert seen["ld"].startswith("/usr/local/cuda/compat/lib.real")
    assert seen["pid1"] == "tini"
    assert {k: seen[k] for k in CUSTOM_USER} == CUSTOM_USER, result.stderr


def test_plain_python_starts_the_custom_user_from_singleuser_cmd(sandbox, tree):
    """No entrypoint: singleuser.cmd is `nbinit start -- jupyterhub-singleuser`."""
    plain_python_image(sandbox, tree)
    mark_custom_user(sandbox)
    result = sandbox.run(NBINIT_CMD, env=HUB_ENV)
    assert result.returncode == 0, result.stderr
    seen = server_line(result)
    assert seen["pid1"] == "tini"
    assert {k: seen[k] for k in CUSTOM_USER} == CUSTOM_USER, result.stderr


def test_plain_python_applies_the_admin_config_the_hub_serves_pinned(sandbox, tree, tmp_path):
    """The hub code serves the ConfigMap's file; the pod gets URL and pin from the hub."""
    admin = yaml.safe_load((PROJECT / "configs/admin-config.yaml").read_text())
    admin["repos"] = []  # its example hosts are not reachable from here
    served = tmp_path / "config.yaml"
    served.write_text(yaml.safe_dump(admin))
    plain_python_image(sandbox, tree)
    mark_custom_user(sandbox)
    pin = hashlib.sha256(served.read_bytes()).hexdigest()
    with hubcode.serve_config(served) as url:
        env = {**HUB_ENV, "NBINIT_CONFIG_URL": url, "NBINIT_CONFIG_SHA256": pin}
        good = sandbox.run(NBINIT_CMD, env=env)
        served.write_bytes(served.read_bytes() + b"deadline: 15\n")  # edited after the spawn
        stale = sandbox.run(NBINIT_CMD, env=env)
    assert good.returncode == 0, good.stderr
    assert f"config: defaults < {url}" in good.stderr
    assert good.lines("WARNING") == [], good.stderr
    assert {k: server_line(good)[k] for k in CUSTOM_USER} == CUSTOM_USER
    assert stale.returncode == 0, stale.stderr
    warnings = stale.lines("WARNING")
    assert len(warnings) == 1 and "sha256" in warnings[0], stale.stderr
    assert "using the last good admin config" in warnings[0]
    assert server_line(stale)["user"] == "alice"


# -- the shims' other paths ------------------------------------------------------------


def test_generic_entrypoint_chains_to_nvidia_entrypoint(sandbox, tree):
    """ENTRYPOINT nbinit-entrypoint on an NGC image: NGC's parts still run first, once."""
    ngc_image(sandbox, tree)
    result = sandbox.run(["nbinit-entrypoint", "jupyterhub-singleuser"], env=HUB_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("CUDA Forward Compatibility mode ENABLED") == 1
    assert "handing over" not in result.stderr  # the command already runs nbinit
    seen = server_line(result)
    assert seen["ld"] == "/usr/local/cuda/compat/lib.real"


def test_docker_stacks_not_root_hands_over_after_start_sh(sandbox, tree):
    """singleuser.uid 1000: nothing to switch; nbinit does the user-level steps as jovyan."""
    docker_stacks_image(sandbox, tree)
    result = sandbox.run(
        ["setpriv", "--reuid=1000", "--regid=100", "--clear-groups", "tini", "-g", "--"]
        + ["/usr/local/bin/start.sh", "jupyterhub-singleuser"],
        env=HUB_ENV,
    )
    assert result.returncode == 0, result.stderr
    assert "docker-stacks hook (before-notebook.d, uid 1000): handing over" in result.stderr
    assert "start-notebook.d" not in result.stderr
    seen = server_line(result)
    assert (seen["user"], seen["uid"]) == ("jovyan", "1000")


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"PATH": IMAGE_PATH}, id="no-hub"),
        pytest.param({**HUB_ENV, "NBINIT_DISABLE": "1"}, id="nbinit-disabled"),
    ],
)
def test_hooks_are_inert_outside_a_hub_or_disabled(sandbox, tree, env):
    """The image then starts exactly as without nbinit: start.sh's own switch to jovyan."""
    docker_stacks_image(sandbox, tree)
    result = sandbox.run(
        ["tini", "-g", "--", "/usr/local/bin/start.sh", "sh", "-c", "id -un"], env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "jovyan\n"
    assert "nbinit" not in result.stderr
    assert not any(path.startswith("/run/nbinit") for path in sandbox.changed_paths())


def test_repos_clone_as_the_user_from_the_zipapp(sandbox, tree, tmp_path):
    """The git worker is a second interpreter: it must find nbinit inside the zipapp too."""
    served = tmp_path / "srv"
    served.mkdir()
    Pusher(make_bare(served, "tutorials"), tmp_path / "work").publish({"intro.md": "hi\n"}, "one")
    server = GitHttpServer(served).start()
    try:
        docker_stacks_image(sandbox, tree)
        mark_custom_user(sandbox)
        admin = {
            "version": 1,
            "git": {"allowed_schemes": ["http"], "min_free_mb": 0},
            "repos": [{"url": server.url("tutorials"), "dest": "tutorials"}],
        }
        sandbox.write("/etc/nbinit/config.yaml", yaml.safe_dump(admin))
        result = sandbox.run(
            ["tini", "-g", "--", "/usr/local/bin/start.sh", "jupyterhub-singleuser"], env=HUB_ENV
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.lines("WARNING") == [], result.stderr
    clone = sandbox.host_view("/home/alice/tutorials/intro.md")
    assert clone.read_text() == "hi\n"
    assert clone.stat().st_uid == 4321


def test_docker_stacks_hook_stands_aside_when_not_sourced_by_start_sh(sandbox, tree):
    """A runner that sources hooks in a subshell has no `cmd`: handing over there would run
    the whole server inside the hook, so the hook says why and returns."""
    docker_stacks_image(sandbox, tree)
    hook = "/usr/local/bin/start-notebook.d/zz-nbinit.sh"
    result = sandbox.run(["bash", "-c", f"source {hook}; echo start goes on"], env=HUB_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "start goes on\n"
    assert "not sourced by start.sh (no $cmd): not handing over" in result.stderr


# -- the artifact on a clean interpreter ---------------------------------------------------


def test_zipapp_runs_on_isolated_python_without_site_packages(sandbox, tree):
    plain_python_image(sandbox, tree)
    sandbox.write("/etc/nbinit/config.yaml", "version: 1\ndeadline: 15\n")
    script = (
        "set -e; /usr/bin/python3 -I -S /usr/local/bin/nbinit --version; "
        "/usr/bin/python3 -I /usr/local/bin/nbinit config validate /etc/nbinit/config.yaml; "
        '/usr/bin/python3 -I -S -c \'import sys; sys.path.insert(0, "/usr/local/bin/nbinit"); '
        "import yaml, certifi; "
        "print(yaml.__file__, certifi.__file__, yaml.__with_libyaml__); "
        'import importlib.util as u; print(u.find_spec("psutil"))\''
    )
    result = sandbox.run(["sh", "-c", script], env={"PATH": IMAGE_PATH})
    assert result.returncode == 0, result.stderr
    version, valid, modules, psutil = result.stdout.splitlines()
    assert version.startswith("nbinit ")
    assert valid == "/etc/nbinit/config.yaml: valid"
    assert modules.split() == [
        "/usr/local/bin/nbinit/yaml/__init__.py",
        "/usr/local/bin/nbinit/certifi/__init__.py",
        "False",
    ]
    assert psutil == "None"  # not in the image: nbinit falls back to /proc
