"""`nbinit --version` and a start with nothing to do import no HTTP client, git or home-making code.

They cost tens of milliseconds at every pod start; `python -X importtime` lists every module
a run imported (on stderr, before exec replaces the process).
"""

from __future__ import annotations

import re
import sys

import pytest
import yaml
from helpers.gitserver import GitHttpServer, Pusher, make_bare

pytestmark = pytest.mark.sandbox

# requests and urllib3 are no longer used at all (the fetch is a GET over a socket): a start
# that imports them has picked up an image's site-packages.
HEAVY = ("http", "ssl", "email", "requests", "urllib3", "git")


def imported(stderr: str, top: bool = True) -> set[str]:
    found = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", stderr, flags=re.M)
    return {name.split(".")[0] if top else name for name in found}


@pytest.mark.parametrize("marked", [False, True], ids=["as-jovyan", "own-account"])
def test_only_a_start_that_makes_a_home_imports_the_home_and_the_tree_walks(sandbox, marked):
    """nbinit.home and nbinit.fdwalk: for the marker user's account and home, never otherwise."""
    sandbox.add_jovyan()
    env = {"JUPYTERHUB_USER": "alice", "NB_UID": "4321", "NB_GID": "4321"}
    if marked:
        sandbox.mkdir("/s/alice/jupyterhub")
    result = sandbox.run(
        [sys.executable, "-X", "importtime", "-m", "nbinit", "start", "--", "true"], env=env
    )
    assert result.returncode == 0, result.stderr
    assert ("created home /home/alice" in result.stderr) is marked
    found = imported(result.stderr, top=False) & {"nbinit.home", "nbinit.fdwalk"}
    assert found == ({"nbinit.home", "nbinit.fdwalk"} if marked else set())


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--version"], id="version"),
        pytest.param(["start", "--", "true"], id="start-nothing-to-do"),
    ],
)
def test_no_requests_or_git_import(sandbox, args):
    sandbox.add_jovyan()
    result = sandbox.run([sys.executable, "-X", "importtime", "-m", "nbinit", *args])
    assert result.returncode == 0, result.stderr
    modules = imported(result.stderr)
    assert "nbinit" in modules
    assert modules & set(HEAVY) == set()
    if args[0] == "start":  # the failure page's http.server, and argparse, only when needed
        assert modules & {"http", "html", "argparse"} == set()
        # Nor what only a fetch, the YAML reader or docker-stacks' scripts need.
        assert modules & {"socket", "yaml", "hashlib", "shlex"} == set()


def test_a_fetch_over_http_imports_no_http_client_email_or_ssl(sandbox, http_server):
    """The check above can fail: with a URL to fetch, the socket shows up; http.client (its
    email parser), ssl and hashlib (OpenSSL) never do for http://, requests never at all."""
    server = http_server()
    server.route(body=b"version: 1\n")
    sandbox.add_jovyan()
    result = sandbox.run(
        [sys.executable, "-X", "importtime", "-m", "nbinit", "start", "--", "true"],
        env={"NBINIT_CONFIG_URL": server.url()},
    )
    assert result.returncode == 0, result.stderr
    modules = imported(result.stderr)
    assert {"socket", "yaml"} <= modules
    assert modules & {"http", "email", "ssl", "hashlib", "requests", "urllib3"} == set()


def test_a_start_with_repos_never_imports_the_git_runner_as_root(sandbox, tmp_path):
    """Root plans the repos and starts the worker as the user; the code that runs git stays out."""
    srv = tmp_path / "srv"
    srv.mkdir()
    Pusher(make_bare(srv, "course"), tmp_path / "work").publish({"a.txt": "1\n"}, "initial")
    server = GitHttpServer(srv).start()
    try:
        sandbox.add_jovyan()
        sandbox.mkdir("/home/jovyan", mode=0o755, uid=1000, gid=100)
        git = {"allowed_schemes": ["http"], "min_free_mb": 0}
        document = {"version": 1, "git": git, "repos": [{"url": server.url("course")}]}
        sandbox.write("/etc/nbinit/config.yaml", yaml.safe_dump(document))
        result = sandbox.run(
            [sys.executable, "-X", "importtime", "-m", "nbinit", "start", "--", "true"]
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert "into course (main)" in result.stderr  # the worker cloned it, as the user
    modules = imported(result.stderr, top=False)
    assert {"nbinit.git.policy", "nbinit.git.launcher"} <= modules  # so the check can fail
    user_side = {
        "nbinit.git.runner",
        "nbinit.git.repo",
        "nbinit.git.gitdir",
        "nbinit.git.lock",
        "nbinit.git.worker",
    }
    assert modules & user_side == set()


def test_ready_imports_only_what_a_probe_needs(sandbox):
    """`nbinit ready` runs every few seconds in every pod: no typing, pipeline or config."""
    result = sandbox.run([sys.executable, "-X", "importtime", "-m", "nbinit", "ready"])
    assert result.returncode == 1, result.stderr  # no server yet
    modules = imported(result.stderr, top=False)
    assert {"nbinit.readiness", "socket", "json"} <= modules  # so the check can fail
    unwanted = {"typing", "argparse", "subprocess", "yaml", "nbinit.pipeline", "nbinit.config"}
    assert modules & unwanted == set()
