"""The version probe (nbinit.versionprobe) as `nbinit check` runs it: the image's Python."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nbinit import runtime, versionprobe

THIS_PYTHON = ".".join(str(n) for n in sys.version_info[:3]) + "\n"


def probe(*module: str, pythonpath: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*runtime.foreign_module_command([sys.executable], "nbinit.versionprobe"), *module],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )


def test_without_a_module_it_says_the_pythons_version():
    result = probe()
    assert (result.returncode, result.stdout) == (0, THIS_PYTHON)


def test_a_module_is_asked_itself_not_its_metadata(tmp_path):
    (tmp_path / "jupyterhub").mkdir()
    (tmp_path / "jupyterhub" / "__init__.py").write_text("__version__ = '5.2.1'\n")
    result = probe("jupyterhub", pythonpath=str(tmp_path))
    assert (result.returncode, result.stdout) == (0, "5.2.1\n")


@pytest.mark.parametrize(
    "source, said",
    [
        pytest.param(None, "ModuleNotFoundError: No module named 'stack'", id="missing"),
        pytest.param(
            "raise ImportError('Failed to import x')",
            "ImportError: Failed to import x",
            id="broken",
        ),  # fmt: skip
    ],
)
def test_a_module_that_does_not_import_exits_1_saying_why(tmp_path, source, said):
    if source is not None:
        (tmp_path / "stack.py").write_text(source)
    result = probe("stack", pythonpath=str(tmp_path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"nbinit: cannot import stack: {said}\n"


def test_main_in_process(capsys):
    assert versionprobe.main([]) == 0
    assert capsys.readouterr().out == THIS_PYTHON


def test_the_bootstrap_without_a_module_says_how_to_call_it():
    command = runtime.foreign_module_command([sys.executable], "x")[:-1]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 64
    assert result.stderr == f"nbinit: usage: python {command[-1]} MODULE [ARGS...]\n"
