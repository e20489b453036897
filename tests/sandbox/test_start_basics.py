"""nbinit start as PID 1 in a throwaway container: exec, tini, disable switch, usage errors."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.sandbox


def test_start_execs_command_under_tini_as_jovyan(sandbox):
    sandbox.add_jovyan()
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "cat /proc/1/comm; id -un; echo $HOME"],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tini", "jovyan", "/home/jovyan"]
    assert result.lines("WARNING") == []
    assert all(line.split("[", 1)[0] == "INFO" for line in result.stderr.splitlines())


def test_disable_execs_untouched(sandbox):
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "echo ran"], env={"NBINIT_DISABLE": "1"}
    )
    assert result.returncode == 0
    assert result.stdout == "ran\n"
    assert len(result.stderr.splitlines()) == 1
    assert "NBINIT_DISABLE=1" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["nbinit", "start", "--bogus"], id="unknown-option"),
        pytest.param(["nbinit", "start", "--"], id="dash-dash-without-command"),
        pytest.param(["nbinit", "frobnicate"], id="unknown-command"),
    ],
)
def test_usage_errors_exit_64(sandbox, argv):
    result = sandbox.run(argv)
    assert result.returncode == 64
    assert "nbinit: error:" in result.stderr
    assert result.stdout == ""
