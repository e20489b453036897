"""The doctor's pure parts: hub compatibility, interpreters, the table and JSON shapes."""

from __future__ import annotations

import pytest

from nbinit import doctor, singleuser


@pytest.mark.parametrize(
    "mine,hub,result,ending",
    [
        pytest.param("5.2.1", "5.2.1", "PASS", "hub 5.2.1: same version", id="same"),
        pytest.param(
            "5.2.1", "5.0.0", "PASS", "hub 5.0.0: same major version, compatible", id="minor"
        ),
        pytest.param("4.1.6", "5.2.1", "FAIL", "", id="older-major"),
        pytest.param("6.1.1", "5.2.1", "FAIL", "", id="newer-major"),
        pytest.param("5.2.1", "five", "FAIL", "", id="not-a-version"),
    ],
)
def test_hub_version_compatibility(mine, hub, result, ending):
    check = doctor._compare_hub("jupyterhub-singleuser", f"JupyterHub {mine}", mine, hub)
    assert check.result == result
    if result == "PASS":
        assert check.detail.endswith(ending)
    else:
        assert check.fix


def test_major_mismatch_fix_names_the_range():
    check = doctor._compare_hub("jupyterhub-singleuser", "JupyterHub 4.1.6", "4.1.6", "5.2.1")
    assert check.fix == "pip install 'jupyterhub>=5,<6' in the image"


@pytest.mark.parametrize(
    "first_line,expected",
    [
        pytest.param("#!/opt/conda/bin/python3.11\n", ["/opt/conda/bin/python3.11"], id="abs"),
        pytest.param("#!/usr/bin/env python3\n", ["/usr/bin/env", "python3"], id="env"),
        pytest.param("#!/usr/bin/env -S python3 -u\n", ["/usr/bin/env", "python3"], id="env-S"),
        pytest.param("#!/bin/sh\n", None, id="shell-wrapper"),
        pytest.param("#!\n", None, id="empty"),
        pytest.param("\x7fELF", None, id="binary"),
    ],
)
def test_interpreter_of_a_script(tmp_path, first_line, expected):
    script = tmp_path / "jupyterhub-singleuser"
    script.write_text(first_line + "pass\n")
    assert singleuser.script_interpreter(str(script)) == expected


def test_last_line_prefers_the_exception():
    stderr = (
        b"Traceback (most recent call last):\n  File x\n"
        b"ImportError: Failed to import default single-user server. Make sure to install\n"
        b"    pip install jupyterlab\n"
    )
    assert doctor._last_line(stderr).startswith("ImportError: Failed to import")


def test_table_shows_fix_only_for_problems():
    checks = [
        doctor.Check("tini", doctor.PASS, "/usr/bin/tini", "unused"),
        doctor.Check("git", doctor.FAIL, "not on PATH", "apt-get install git"),
    ]
    assert doctor.format_table(checks).splitlines() == [
        "RESULT  CHECK  DETAIL",
        "PASS    tini   /usr/bin/tini",
        "FAIL    git    not on PATH",
        "               fix: apt-get install git",
        "1 FAIL, 0 WARN, 1 PASS: this image will not serve JupyterHub until each FAIL is fixed",
    ]
    assert doctor.as_json(checks)["ok"] is False
    assert doctor.as_json(checks)["counts"] == {"FAIL": 1, "WARN": 0, "PASS": 1}
