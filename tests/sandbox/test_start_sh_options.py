"""docker-stacks start.sh's own options when nbinit starts as root (docs/delivery.md table).

The container-level proof (through the real start.sh hook) is in
tests/container/test_real_images.py; here, as PID 1 in the sandbox, the branches the
container test does not take: an invalid NB_UMASK, CHOWN_HOME_OPTS=-R for a marked user,
and a valid umask reaching the command.
"""

from __future__ import annotations

import pytest
from helpers.sandbox import ALICE

pytestmark = pytest.mark.sandbox


def marked(sandbox) -> None:
    sandbox.add_jovyan()
    sandbox.mkdir("/s/alice/jupyterhub")


def test_nb_umask_reaches_the_server(sandbox):
    marked(sandbox)
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "umask"], env={**ALICE, "NB_UMASK": "0077"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0077\n"
    assert any("NB_UMASK: the server starts with umask 0077" in x for x in result.lines("INFO"))
    assert result.lines("WARNING") == []


@pytest.mark.parametrize(
    "value", ["abc", "0o22", "12345", "8"], ids=["letters", "prefix", "long", "short"]
)
def test_an_invalid_nb_umask_is_one_warning_and_ignored(sandbox, value):
    marked(sandbox)
    result = sandbox.run(
        ["nbinit", "start", "--", "sh", "-c", "umask"], env={**ALICE, "NB_UMASK": value}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0022\n"  # nbinit's own, unchanged
    [warning] = result.lines("WARNING")
    assert f"NB_UMASK={value!r} is not an octal umask: ignored; set it like NB_UMASK=022" in warning


def test_recursive_chown_home_for_a_marked_user_names_user_chown_home(sandbox):
    marked(sandbox)
    env = {**ALICE, "CHOWN_HOME": "yes", "CHOWN_HOME_OPTS": "-R"}
    result = sandbox.run(["nbinit", "start", "--", "id", "-un"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alice\n"
    [warning] = result.lines("WARNING")
    assert "CHOWN_HOME_OPTS=-R is not honoured" in warning
    assert "set user.chown_home: recursive" in warning


def test_chown_home_for_a_marked_user_is_already_done_by_nbinit(sandbox):
    marked(sandbox)
    result = sandbox.run(["nbinit", "start", "--", "id", "-un"], env={**ALICE, "CHOWN_HOME": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alice\n"
    assert result.lines("WARNING") == []
