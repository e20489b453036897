"""~/.nbinit.yaml read by the real child (`python -m nbinit.dotfile`) under its limits."""

from __future__ import annotations

import os

import pytest

from nbinit import dotfile
from nbinit.errors import NbinitError

GOOD = "repos:\n - url: https://git.example.org/a.git\n   dest: a\n"


def read(home):
    return dotfile.read(None, str(home), timeout=10)


def test_no_dotfile_costs_no_child(tmp_path):
    assert read(tmp_path) == ([], [])


def test_good_dotfile(tmp_path):
    (tmp_path / ".nbinit.yaml").write_text(GOOD + "user: {home: /etc}\n")
    assert read(tmp_path) == (
        [{"url": "https://git.example.org/a.git", "dest": "a"}],
        ["~/.nbinit.yaml: user: only `repos` is honoured in a user dotfile, ignored"],
    )


@pytest.mark.parametrize(
    "make, problem",
    [
        pytest.param(
            lambda p: p.write_text("repos: [\n"),
            "~/.nbinit.yaml: invalid YAML at line 2, column 1: expected the node content, but "
            "found '<stream end>'",
            id="broken-yaml",
        ),
        pytest.param(
            lambda p: p.write_text("repos: !!float x\n"),
            '~/.nbinit.yaml: invalid YAML at line 1, column 8: "x" is not a valid !!float',
            id="float-tag",
        ),
        pytest.param(
            lambda p: p.write_bytes(b"repos: []\n#" + b"x" * (64 << 10)),
            "~/.nbinit.yaml: larger than 65536 bytes, the limit of a dotfile",
            id="over-64-KiB",
        ),
        pytest.param(
            lambda p: p.symlink_to("/etc/shadow"),
            "cannot read {home}/.nbinit.yaml: a symlink",
            id="symlink-to-shadow",
        ),
        pytest.param(
            lambda p: os.mkfifo(p), "{home}/.nbinit.yaml is not a regular file", id="fifo"
        ),
        pytest.param(
            lambda p: p.mkdir(), "{home}/.nbinit.yaml is not a regular file", id="directory"
        ),
        pytest.param(
            lambda p: p.write_text("repos:\n" + " - url: u\n" * 1001),
            "~/.nbinit.yaml: a list or mapping has more than 1000 entries",
            id="1001-repos",
        ),
    ],
)
def test_bad_dotfile_is_one_error_naming_the_file(tmp_path, make, problem):
    make(tmp_path / ".nbinit.yaml")
    with pytest.raises(NbinitError) as caught:
        read(tmp_path)
    assert caught.value.problem == problem.format(home=tmp_path)
    assert caught.value.fix


def test_the_child_runs_under_hard_limits(tmp_path, monkeypatch):
    """Root picks the child's limits; a child that cannot finish within them is one error."""
    (tmp_path / ".nbinit.yaml").write_text(GOOD)
    monkeypatch.setattr(dotfile, "ADDRESS_SPACE", 1 << 20)  # too small to read anything
    with pytest.raises(NbinitError) as caught:
        read(tmp_path)
    assert caught.value.problem in (
        "~/.nbinit.yaml needs more than 1 MB to read",  # MemoryError, caught in the child
        "~/.nbinit.yaml could not be read within its limits (2 s of CPU, 1 MB)",  # killed
    )
