"""Shared fixtures: the container sandbox. Real servers (HTTP, git) live in tests/helpers."""

from __future__ import annotations

import pytest
from helpers import sandbox as sandbox_module


@pytest.fixture
def sandbox(tmp_path):
    """A fresh throwaway container (see tests/README.md); skipped where it cannot run."""
    reason = sandbox_module.available()
    if reason:
        pytest.skip(f"sandbox: {reason}")
    return sandbox_module.Sandbox(tmp_path / "container")


@pytest.fixture
def http_server():
    """Start real HTTP(S) servers on loopback: `http_server()` or `http_server(tls=context)`.

    Every server started is stopped at the end of the test (tests/helpers/httpserver.py).
    """
    from helpers.httpserver import HTTPServer

    servers = []

    def start(tls=None):
        servers.append(HTTPServer(tls))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def tls_files():
    """A throwaway CA (trustme) and a server certificate for 127.0.0.1 and localhost."""
    from helpers.httpserver import TLSFiles

    return TLSFiles.create()


# The host's accounts and homes, as the session found them. Every sandbox uses the host's
# `/` as its lower layer: a test or benchmark that changes them on the host (a `nbinit
# start` run outside the sandbox creates jovyan) makes other tests fail for reasons far
# from the cause. The session fails loudly, naming what changed, instead.
HOST_ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


def _host_accounts() -> dict[str, object]:
    import os

    state: dict[str, object] = {}
    for path in HOST_ACCOUNT_FILES:
        try:
            with open(path, "rb") as handle:
                state[path] = handle.read()
        except OSError:
            state[path] = None
    try:
        state["/home"] = sorted(os.listdir("/home"))
    except OSError:
        state["/home"] = None
    return state


def pytest_sessionstart(session):
    session.config.stash[_HOST_KEY] = _host_accounts()


def pytest_sessionfinish(session, exitstatus):
    before = session.config.stash.get(_HOST_KEY, None)
    if before is None:
        return
    after = _host_accounts()
    changed = [path for path in before if before[path] != after[path]]
    if changed:
        import sys

        sys.stderr.write(
            f"\nERROR: the tests changed the host's {', '.join(changed)} (a start run outside "
            "the sandbox?); restore them, then find the test: sandbox tests must not touch "
            "the host\n"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_HOST_KEY = pytest.StashKey[dict]()
