"""The marker walk (nbinit.markerwalk): every component below the trusted prefix lstat'ed."""

from __future__ import annotations

import os
import subprocess
import sys

from nbinit import markerwalk


def test_present_absent_symlink_and_file(tmp_path):
    prefix = str(tmp_path)
    (tmp_path / "alice" / "jupyterhub").mkdir(parents=True)
    assert markerwalk.walk(f"{prefix}/alice/jupyterhub", prefix) == (
        f"present {prefix}/alice/jupyterhub"
    )
    assert markerwalk.walk(f"{prefix}/bob/jupyterhub", prefix) == f"absent {prefix}/bob"
    os.symlink(tmp_path / "alice", tmp_path / "mallory")
    assert markerwalk.walk(f"{prefix}/mallory/jupyterhub", prefix) == (f"symlink {prefix}/mallory")
    (tmp_path / "eve").write_text("")
    assert markerwalk.walk(f"{prefix}/eve/jupyterhub", prefix) == f"notdir {prefix}/eve"


def test_a_symlink_in_the_trusted_prefix_is_not_looked_at(tmp_path):
    (tmp_path / "real" / "alice" / "jupyterhub").mkdir(parents=True)
    os.symlink(tmp_path / "real", tmp_path / "s")
    prefix = str(tmp_path / "s")
    assert markerwalk.walk(f"{prefix}/alice/jupyterhub", prefix) == (
        f"present {prefix}/alice/jupyterhub"
    )


def test_runs_as_a_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nbinit.markerwalk", f"{tmp_path}/x", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (0, f"absent {tmp_path}/x\n")
