"""The one deadline: NBINIT_DEADLINE wins over the config, an unusable value does not."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from nbinit import commands
from nbinit.context import Deadline
from nbinit.steps import config as config_step


def test_cap_never_passes_the_deadline_but_keeps_a_floor():
    spent = Deadline(1.0, start=time.monotonic() - 5)
    assert spent.cap(10) == 0.0
    assert spent.cap(10, floor=2.0) == 2.0
    assert spent.cap(1.5, floor=2.0) == 1.5  # a floor never lengthens a step's own timeout
    fresh = Deadline(20.0)
    assert 4.9 < fresh.cap(5, floor=2.0) <= 5.0


@pytest.mark.parametrize(
    "value, expected, warned",
    [
        pytest.param("9", 9.0, False, id="set-wins"),
        pytest.param("", 7.0, False, id="empty-means-unset"),
        pytest.param("soon", 7.0, True, id="not-a-number"),
        pytest.param("0", 7.0, True, id="zero"),
    ],
)
def test_env_deadline_against_the_baked_config(tmp_path, monkeypatch, value, expected, warned):
    baked = tmp_path / "config.yaml"
    baked.write_text("version: 1\ndeadline: 7\n")
    monkeypatch.setenv("NBINIT_BAKED_CONFIG", str(baked))
    monkeypatch.setenv("NBINIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NBINIT_DEADLINE", value)
    monkeypatch.delenv("NBINIT_CONFIG_URL", raising=False)
    ctx = commands.make_context("start")
    config_step.run(ctx)
    assert ctx.deadline.seconds == expected
    assert bool(ctx.log.warnings) is warned


def test_the_deadline_counts_from_the_process_start_not_from_nbinit_first_line():
    """The hub's clock runs from the exec: the interpreter's start and imports count too."""
    code = (
        "import time; time.sleep(0.5); from nbinit.context import process_start; "
        "print(time.monotonic() - process_start())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert 0.5 <= float(result.stdout) < 30
