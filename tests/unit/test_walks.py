"""Walks over trees a user controls: one loop each, bounded in depth and count, no recursion."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from nbinit import fdwalk


def nest(base, depth: int) -> None:
    """`depth` directories under base, each with a file and a symlink to /etc/passwd."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
            os.symlink("/etc/passwd", "l", dir_fd=fd)
            os.mkdir("d", dir_fd=fd)
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
    finally:
        os.close(fd)


@pytest.fixture
def deep(tmp_path):
    top = tmp_path / "deep"
    top.mkdir()
    nest(top, 1500)  # os.fwalk and shutil.rmtree raised RecursionError on this
    yield top
    subprocess.run(["rm", "-rf", str(top)], check=False)


def test_chown_tree_stops_at_the_depth_limit_with_oserror(deep):
    passwd = os.lstat("/etc/passwd")
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as caught:
            fdwalk.chown_tree(fd, 4321, 4321, lambda: 60.0)
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ELOOP
    assert (deep / "d" / "f").stat().st_uid == 4321
    assert os.lstat(deep / "l").st_uid == 4321  # the link itself, never its target
    assert os.lstat("/etc/passwd") == passwd


def test_copy_tree_stops_at_the_depth_limit_and_hands_over_what_it_made(deep, tmp_path):
    target = tmp_path / "home"
    target.mkdir(mode=0o700)
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as caught:
            fdwalk.copy_tree(str(deep), fd, 4321, 4321, lambda: 60.0)
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ELOOP
    assert (target / "d").stat().st_uid == 4321
    subprocess.run(["rm", "-rf", str(target)], check=False)


def test_remove_tree_removes_what_is_in_bounds_and_never_raises(deep):
    fdwalk.remove_tree(str(deep))
    assert not (deep / "f").exists() and not (deep / "l").is_symlink()
    assert not (deep / ("d/" * 100) / "f").exists()
    assert (deep / ("d/" * 200) / "f").exists()  # deeper than MAX_WALK_DEPTH: left, not recursed
    assert os.path.exists("/etc/passwd")


def test_remove_tree_looks_at_a_bounded_number_of_entries(tmp_path, monkeypatch):
    top = tmp_path / "many"
    top.mkdir()
    for i in range(50):
        (top / f"f{i}").touch()
    monkeypatch.setattr(fdwalk, "MAX_REMOVED", 10)
    fdwalk.remove_tree(str(top))
    assert 35 <= len(os.listdir(top)) < 50
