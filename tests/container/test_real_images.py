"""Real images, started the way KubeSpawner starts a pod, with the one COPY line and nothing else.

Each image is built by tests/helpers/images.py (docker-stacks' own start.sh under `tini -g`,
an NVIDIA-style entrypoint chain, a plain Python) plus exactly `COPY build/nbinit-root/ /`.
A pod spec with `runAsUser: 0`, the hub's environment and the marker volume becomes
`podman run --user 0 --env ... --volume MARKER:/s/alice/jupyterhub IMAGE CMD`. The server is
the image's real `jupyterhub-singleuser` (it refuses to run as root, so a server that
answers proves the drop), talking to a stand-in hub API on loopback; the test reads who it
runs as from the host's /proc.
"""

from __future__ import annotations

import pytest
from helpers.containers import Container
from helpers.hubconfig import hub_env
from helpers.net import free_port

ALICE_UID = "4321"
JOVYAN = "jovyan:x:1000:100::/home/jovyan:/bin/bash"
# z2jh's default singleuser.cmd; plain images without an entrypoint get nbinit through it.
COMMANDS = {
    "docker-stacks": ["jupyterhub-singleuser"],
    "plain-python": ["nbinit", "start", "--", "jupyterhub-singleuser"],
}
FAMILIES = list(COMMANDS)


def start(container, image_tag, hub_api, tmp_path, *, marker=True, root=True, ids=True, cmd):
    """The pod KubeSpawner makes: the hub's environment, NB_UID/NB_GID, the marker volume."""
    port = free_port()
    env = hub_env("alice", hub_api, port)
    if ids:
        env.update(NB_UID=ALICE_UID, NB_GID=ALICE_UID)
    volumes = ()
    if marker:
        (tmp_path / "marker").mkdir(exist_ok=True)
        volumes = (f"{tmp_path / 'marker'}:/s/alice/jupyterhub",)
    running = container(image_tag, *cmd, env=env, user="0" if root else None, volumes=volumes)
    running.url = f"http://127.0.0.1:{port}/user/alice/api"
    return running


def server(running: Container):
    """The single-user server process, once it answers on its port."""
    running.wait_http(running.url)
    return running.wait_for_process(lambda p: p.runs("jupyterhub-singleuser"))


def passwd(running: Container, *names: str) -> list[str]:
    lines = running.exec("cat", "/etc/passwd").splitlines()
    return [line for line in lines if line.split(":", 1)[0] in names]


def pid1(running: Container) -> str:
    return running.exec("cat", "/proc/1/comm").strip()


@pytest.mark.parametrize("family", FAMILIES)
def test_kubespawner_start_runs_the_server_as_the_marked_user(
    family, image, container, hub_api, tmp_path
):
    running = start(container, image(family), hub_api, tmp_path, cmd=COMMANDS[family])
    process = server(running)
    assert process.uid == [ALICE_UID] * 4, running.logs()
    assert process.gid == [ALICE_UID] * 4
    assert "100" in process.groups  # the users group, as jovyan has it
    assert pid1(running) == "tini"
    assert passwd(running, "alice", "jovyan") == [
        JOVYAN,
        "alice:x:4321:4321::/home/alice:/bin/bash",
    ]
    assert running.exec("stat", "-c", "%u:%g", "/home/alice").strip() == "4321:4321"
    assert running.lines("WARNING") == []
    assert running.lines("FATAL") == []


@pytest.mark.parametrize("family", FAMILIES)
def test_without_the_marker_the_server_runs_as_jovyan(family, image, container, hub_api, tmp_path):
    running = start(container, image(family), hub_api, tmp_path, marker=False, cmd=COMMANDS[family])
    process = server(running)
    assert process.uid == ["1000"] * 4, running.logs()
    assert process.gid == ["100"] * 4
    assert pid1(running) == "tini"
    assert passwd(running, "alice", "jovyan") == [JOVYAN]
    # The hub set NB_UID for alice; without her marker nbinit runs jovyan unchanged.
    [warning] = running.lines("WARNING")
    assert "NB_UID='4321' is not honoured without a marker" in warning
    assert "create the marker /s/alice/jupyterhub (user.marker)" in warning


def test_the_images_own_user_starts_jovyan_with_one_warning(image, container, hub_api, tmp_path):
    """No runAsUser: docker-stacks' USER 1000 starts start.sh, which hands over from
    before-notebook.d; nbinit cannot create alice's account and says how to fix it, once."""
    running = start(
        container,
        image("docker-stacks"),
        hub_api,
        tmp_path,
        root=False,
        ids=False,
        cmd=COMMANDS["docker-stacks"],
    )
    process = server(running)
    assert process.uid == ["1000"] * 4
    assert pid1(running) == "tini"
    warnings = running.lines("WARNING")
    assert len(warnings) == 1, running.logs()
    assert "not root: cannot create alice's own account" in warnings[0]
    assert "singleuser.uid: 0" in warnings[0]
    assert passwd(running, "alice", "jovyan") == [JOVYAN]


@pytest.mark.parametrize("family", FAMILIES)
def test_restarted_three_times_keeps_one_account_and_no_warning(
    family, image, container, hub_api, tmp_path
):
    running = start(container, image(family), hub_api, tmp_path, cmd=COMMANDS[family])
    server(running)
    for restart in range(3):
        running.stop()
        logged = len(running.logs())
        running.start()
        process = server(running)
        assert process.uid == [ALICE_UID] * 4, (restart, running.logs()[logged:])
        assert running.lines("WARNING", since=logged) == [], running.logs()[logged:]
        assert passwd(running, "alice") == ["alice:x:4321:4321::/home/alice:/bin/bash"]
        assert pid1(running) == "tini"


def test_the_ngc_chain_environment_reaches_the_server(image, container, hub_api, tmp_path):
    """nvidia_entrypoint.sh's parts run first (LD_LIBRARY_PATH for CUDA compat), then
    nbinit's part hands over last. The image has no jupyterhub (issue 11 brings one), so the
    server here is its own JupyterLab, which also refuses to run as root."""
    port = free_port()
    running = start(
        container,
        image("ngc"),
        hub_api,
        tmp_path,
        cmd=["jupyter-lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}"],
    )
    running.url = f"http://127.0.0.1:{port}/api"
    running.wait_http(running.url)
    process = running.wait_for_process(lambda p: p.runs("jupyter-lab"))
    assert process.uid == [ALICE_UID] * 4, running.logs()
    assert process.environ["LD_LIBRARY_PATH"].startswith("/usr/local/cuda/compat/lib.real")
    assert process.environ["HOME"] == "/home/alice"
    assert process.environ["USER"] == "alice"
    logs = running.logs()
    assert "== PyTorch ==" in logs and "CUDA Forward Compatibility mode ENABLED" in logs
    assert "NGC entrypoint part (uid 0): handing over to nbinit" in logs
    assert passwd(running, "alice") == ["alice:x:4321:4321::/home/alice:/bin/bash"]
    assert running.lines("WARNING") == []


def test_start_sh_options_are_honoured_or_named_once_as_root_through_the_hook(
    image, container, hub_api, tmp_path
):
    """start.sh hands over from start-notebook.d before it reads its own options: nbinit
    applies NB_UMASK and CHOWN_HOME to the user it runs, and names the replacement of each
    option it does not honour in one WARNING (GRANT_SUDO, CHOWN_EXTRA, NB_UID)."""
    home = tmp_path / "jovyan-home"  # a volume that arrives root-owned
    home.mkdir()
    port = free_port()
    env = hub_env("alice", hub_api, port)
    env.update(
        NB_UID=ALICE_UID,
        NB_UMASK="0027",
        CHOWN_HOME="yes",
        GRANT_SUDO="yes",
        CHOWN_EXTRA="/opt/conda",
    )
    running = container(
        image("docker-stacks"),
        *COMMANDS["docker-stacks"],
        env=env,
        user="0",
        volumes=(f"{home}:/home/jovyan",),
    )
    running.url = f"http://127.0.0.1:{port}/user/alice/api"
    process = server(running)
    assert process.uid == ["1000"] * 4
    assert process.umask == "0027"
    assert running.exec("stat", "-c", "%u:%g", "/home/jovyan").strip() == "1000:100"
    warnings = running.lines("WARNING")
    assert len(warnings) == 3, running.logs()
    grant_sudo, chown_extra, nb_uid = (w.split("nbinit: ", 1)[1] for w in warnings)
    assert grant_sudo.startswith("GRANT_SUDO is not honoured")
    assert "user.extra_groups" in grant_sudo
    assert chown_extra.startswith("CHOWN_EXTRA is not honoured")
    assert "hooks.dir" in chown_extra
    assert nb_uid.startswith("NB_UID='4321' is not honoured without a marker")
    assert running.exec("ls", "/etc/sudoers.d").split() == ["README"]
    assert running.exec("stat", "-c", "%U", "/opt/conda").strip() == "jovyan"
