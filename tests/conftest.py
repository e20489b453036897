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
