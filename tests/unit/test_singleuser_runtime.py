"""The singleuser runtime zips: pinned, reproducible, small, and importable next to jupyter_server.

Built from the pinned wheels in build/singleuser-wheels (scripts/setup.sh downloads them).
The import check runs in build/lab-venv, a Python with jupyter_server and ipykernel but no
jupyterhub (what an NGC image has); it is skipped, saying so, when setup has not made it.
"""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

import pytest

from nbinit import bundle
from nbinit.bundle.runtimes import (
    DEFAULT_RUNTIME_WHEELS,
    RUNTIME_DIR,
    RUNTIME_LEFT_OUT,
    RUNTIMES,
    build_runtimes,
    runtime_pins,
)

PROJECT = Path(__file__).resolve().parents[2]
WHEELS = PROJECT / DEFAULT_RUNTIME_WHEELS
LAB_PYTHON = PROJECT / "build" / "lab-venv" / "bin" / "python"
SIZE_BUDGET = 2_600_000  # bytes per runtime; today 2.0 to 2.4 MB


@pytest.fixture(scope="module")
def runtimes() -> dict[str, bytes]:
    return build_runtimes(WHEELS)


def names(data: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_one_runtime_per_major_version_in_the_tree(runtimes):
    assert sorted(runtimes) == [
        f"{RUNTIME_DIR}/jupyterhub-4.1.6.zip",
        f"{RUNTIME_DIR}/jupyterhub-5.5.4.zip",
        f"{RUNTIME_DIR}/jupyterhub-6.1.1.zip",
    ]


def test_two_builds_give_the_same_bytes(runtimes):
    assert build_runtimes(WHEELS) == runtimes


@pytest.mark.parametrize("version", list(RUNTIMES))
def test_holds_jupyterhub_its_dependencies_and_their_licences(runtimes, version):
    data = runtimes[f"{RUNTIME_DIR}/jupyterhub-{version}.zip"]
    listed = names(data)
    assert listed == sorted(listed)
    assert len(data) < SIZE_BUDGET
    archive = zipfile.ZipFile(io.BytesIO(data))
    for project, pinned, packages, _ in runtime_pins(version):
        top = packages[0]
        assert any(n == top or n.startswith(f"{top}/") for n in listed), project
        assert any(n.startswith(f"nbinit-licenses/{project}/") for n in listed), project
        assert f"{project}=={pinned}" in archive.read("nbinit-licenses/MANIFEST.txt").decode()
    assert not [n for n in listed if n.startswith(RUNTIME_LEFT_OUT)]
    assert not [n for n in listed if n.endswith((".so", ".pyc", ".pyx", ".pyi"))]
    assert not [n for n in listed if "/tests/" in n or "/test/" in n]


def test_the_tree_carries_the_runtimes(tmp_path, runtimes):
    written = bundle.write_tree(tmp_path, b"zipapp", extra=runtimes)
    for relative, data in runtimes.items():
        path = tmp_path / relative
        assert path in written
        assert path.read_bytes() == data
        assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / RUNTIME_DIR).stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("version", list(RUNTIMES))
def test_singleuser_imports_from_the_zip_next_to_jupyter_server(runtimes, version, tmp_path):
    """Everything left out is never imported: the extension and its mixins load from the zip."""
    if not LAB_PYTHON.exists():
        pytest.skip(f"{LAB_PYTHON} is missing (scripts/setup.sh makes it)")
    path = tmp_path / f"jupyterhub-{version}.zip"
    path.write_bytes(runtimes[f"{RUNTIME_DIR}/jupyterhub-{version}.zip"])
    code = (
        "import sys; sys.path.append(sys.argv[1]); import jupyterhub, jupyterhub.singleuser, "
        "jupyterhub.singleuser.extension, jupyterhub.singleuser.mixins; "
        "print(jupyterhub.__version__, jupyterhub.__file__)"
    )
    result = subprocess.run(
        [str(LAB_PYTHON), "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [version, f"{path}/jupyterhub/__init__.py"]
