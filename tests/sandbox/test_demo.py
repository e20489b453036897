"""The README's first command keeps working: scripts/demo.sh's example, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.sandbox import ALICE_ID

pytestmark = pytest.mark.sandbox
DEMO = Path(__file__).resolve().parents[1] / "helpers" / "demo.py"


def test_demo_creates_alice_clones_her_repo_and_execs_under_tini(sandbox):
    # `sandbox` only for its skip when no container can run here; the demo makes its own.
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ALICE_ID
    assert "jovyan:x:1000:100::/home/jovyan:/bin/bash" in lines
    assert any(line.endswith(" 01-intro.ipynb") and " alice alice " in line for line in lines)
    assert lines[-1] == "PID 1 is tini"
    assert "WARNING[" not in result.stderr
    assert "cloned http://127.0.0.1:" in result.stderr
