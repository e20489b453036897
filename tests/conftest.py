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
