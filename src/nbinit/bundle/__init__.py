"""Build the one-file nbinit (a zipapp) and the tree an image author copies with one line.

    python3 -m nbinit.bundle -o build/nbinit.pyz        # the zipapp alone
    python3 -m nbinit.bundle --tree build/nbinit-root   # then in a Dockerfile:
                                                        #   COPY build/nbinit-root/ /

The zipapp holds nbinit and the pure-Python code of its dependencies, taken from pinned,
hash-checked wheels, so it runs on an image's own python3 (3.9 or newer) with nothing
installed; psutil is used only when the image has it. The same inputs give the same bytes:
entries are sorted, timestamps, permissions and compression are fixed, compiled modules
(`.so`) and tests are left out, and each dependency's licence files go in `licenses/`.

The package is the build tool and never ships: `runtimes` builds the singleuser runtimes
the tree also carries, `bytecode` is the compiler each target interpreter runs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple, Optional

# (project, version, top-level packages, sha256 of the wheel). The versions are the newest
# that still install on Python 3.9 (PyYAML 6.0.4 needs 3.10). PyYAML has no pure wheel: its
# manylinux wheel is used and the C extension left out. certifi is the CA bundle for an
# image without a system trust store; the fetch itself is nbinit.httpget over a socket.
PINS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (
        "certifi",
        "2026.10.19.post1",
        ("certifi",),
        "1324c476b4811eff41a8bc2122cd0bbd4d9c7234c725446d99ab1612b3a7fdd2",
    ),
    (
        "PyYAML",
        "6.0.3",
        ("yaml",),
        "0150219816b6a1fa26fb4699fb7daa9caf09eb1999f3b70fb6e786805e80375a",
    ),
)

# Non-Python files the code reads at run time; everything else that is not .py stays out.
DATA_FILES = ("certifi/cacert.pem",)
LICENSE_WORDS = ("LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS")

# 1980-01-01 is the earliest time a zip entry can carry; a fixed one makes builds identical.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
FIXED_MTIME = 315532800  # the same instant, for the files of the tree
COMPRESS_LEVEL = 9

SHEBANG = b"#!/usr/bin/env python3\n"
PACKAGE = Path(__file__).resolve().parent.parent  # nbinit itself
MAIN_SOURCE = PACKAGE / "zipmain.py"
COMPILER = Path(__file__).resolve().parent / "bytecode.py"
# The interpreters images have (docker-stacks and NGC: 3.12; Debian 12: 3.11; Ubuntu 22.04:
# 3.10; RHEL 9: 3.9; Ubuntu 24.10 and newer stacks: 3.13), looked for when none is named.
PYTHON_VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")

# Where each file of the tree goes (relative to the image's /), what it is, and its mode.
# One tree for every image: a hook directory that an image does not use is simply inert.
ZIPAPP = "<zipapp>"
TREE: tuple[tuple[str, str, int], ...] = (
    ("usr/local/bin/nbinit", ZIPAPP, 0o755),
    ("usr/local/bin/nbinit-entrypoint", "nbinit-entrypoint", 0o755),
    # docker-stacks: start.sh sources these (as root, before its own user switch).
    ("usr/local/bin/start-notebook.d/zz-nbinit.sh", "docker-stacks-hook.sh", 0o644),
    ("usr/local/bin/before-notebook.d/zz-nbinit.sh", "docker-stacks-hook.sh", 0o644),
    # NGC: nvidia_entrypoint.sh sources entrypoint.d/*.sh in order; ours runs last.
    ("opt/nvidia/entrypoint.d/zz-nbinit.sh", "nvidia-entrypoint-part.sh", 0o644),
)

DEFAULT_WHEELS = Path("build/bundle-wheels")
# The shell shims, shipped as package data (in a checkout, a link to entrypoints/).
SHIMS = PACKAGE / "shims"


class BundleError(Exception):
    """A build problem with its fix, printed as one line."""


class Entry(NamedTuple):
    name: str
    data: bytes


def wheel_name(project: str, version: str) -> str:
    return f"{project.replace('-', '_').lower()}-{version}-"


def find_wheel(wheels: Path, project: str, version: str, sha256: str) -> Optional[Path]:
    """The pinned wheel in the directory, if its bytes match the pin."""
    prefix = wheel_name(project, version)
    for path in sorted(wheels.glob("*.whl")):
        if path.name.lower().startswith(prefix) and _sha256(path.read_bytes()) == sha256:
            return path
    return None


def fetch_wheels(wheels: Path) -> None:
    """Download the pinned wheels with pip (hash-checked); needs a package index once."""
    # The target, not this machine: pure wheels, or PyYAML's cp39 one for its .py files.
    target = ("3.9", "cp", "cp39", "manylinux2014_x86_64")
    download_pinned(wheels, PINS, "requirements.txt", target, "the pinned wheels")


def download_pinned(
    wheels: Path,
    pins: Sequence[tuple[str, str, tuple[str, ...], str]],
    requirements_name: str,
    target: tuple[str, str, str, str],
    what: str,
) -> None:
    """pip download of exactly the pins (no dependencies, hashes required) for a target
    (python version, implementation, abi, platform)."""
    wheels.mkdir(parents=True, exist_ok=True)
    requirements = wheels / requirements_name
    requirements.write_text(
        "".join(f"{p}=={v} --hash=sha256:{h}\n" for p, v, _, h in pins), encoding="utf-8"
    )
    python, implementation, abi, platform = target
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        f"--python-version={python}",
        f"--implementation={implementation}",
        f"--abi={abi}",
        f"--platform={platform}",
        "--dest",
        str(wheels),
        "--requirement",
        str(requirements),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise BundleError(
            f"cannot download {what} into {wheels}: {last}: "
            "reach a package index once, or copy the wheels there by hand"
        )


def wheel_entries(
    path: Path,
    packages: tuple[str, ...],
    project: str,
    keep: Optional[Callable[[str], bool]] = None,
) -> list[Entry]:
    """The .py files (and needed data) of the packages, plus the licence files, from a wheel.

    `keep` replaces the default choice of files within the packages (the runtimes' own).
    """
    entries = []
    with zipfile.ZipFile(path) as wheel:
        for name in wheel.namelist():
            parts = PurePosixPath(name).parts
            if not parts or name.endswith("/"):
                continue
            if parts[0].endswith(".dist-info"):
                if any(word in parts[-1].upper() for word in LICENSE_WORDS):
                    entries.append(Entry(f"licenses/{project}/{parts[-1]}", wheel.read(name)))
                continue
            if parts[0] not in packages:
                continue
            if keep is not None:
                if keep(name):
                    entries.append(Entry(name, wheel.read(name)))
                continue
            if "test" in parts or "tests" in parts:
                continue
            if name.endswith(".py") or name in DATA_FILES:
                entries.append(Entry(name, wheel.read(name)))
    return entries


# The build tool (this package, its compiler and the runtimes' builder) stays out of the
# zipapp that ships in every image: `python3 -m nbinit.bundle` runs from a checkout or an
# installed nbinit, never from it.
BUILD_ONLY = "bundle/"


def nbinit_entries() -> list[Entry]:
    return [
        Entry(f"nbinit/{path.relative_to(PACKAGE).as_posix()}", path.read_bytes())
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts
        and not path.relative_to(PACKAGE).as_posix().startswith(BUILD_ONLY)
    ]


def collect(wheels: Path) -> list[Entry]:
    """Every entry of the zipapp, sorted by name; fetches the wheels when any is missing."""
    found = [find_wheel(wheels, p, v, h) for p, v, _, h in PINS]
    if None in found:
        fetch_wheels(wheels)
        found = [find_wheel(wheels, p, v, h) for p, v, _, h in PINS]
    entries = [Entry("__main__.py", MAIN_SOURCE.read_bytes())]
    manifest = ["nbinit and the pure-Python code of these projects (licences beside this file):"]
    for (project, version, packages, sha256), path in zip(PINS, found):
        if path is None:
            raise BundleError(
                f"{wheels}: no {project} {version} wheel with sha256 {sha256[:16]}...: "
                "delete the directory and build again to download it"
            )
        entries += wheel_entries(path, packages, project)
        manifest.append(f"{project}=={version} ({path.name}, sha256 {sha256})")
    entries += nbinit_entries()
    entries.append(Entry("licenses/MANIFEST.txt", ("\n".join(manifest) + "\n").encode()))
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BundleError(f"two packages ship the same files: {', '.join(duplicates[:3])}")
    return sorted(entries, key=lambda e: e.name)


def find_pythons() -> list[str]:
    """The interpreters of PYTHON_VERSIONS on this machine: PATH, /usr, /usr/local, pyenv."""
    import glob
    import shutil

    found = [os.path.realpath(sys.executable)]  # a venv's python is its base's
    for version in PYTHON_VERSIONS:
        found += [shutil.which(f"python{version}") or ""]
        found += glob.glob(f"/usr/local/bin/python{version}") + glob.glob(
            f"/usr/bin/python{version}"
        )
        found += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python3")))
    return [p for p in dict.fromkeys(found) if p]


def bytecode_entries(
    entries: list[Entry], pythons: list[str], strict: bool = False
) -> tuple[list[Entry], list[str]]:
    """The sources compiled by each interpreter, under `pyc.<magic>/` (zipmain loads them).

    Returns the entries and a line per interpreter used. One set per magic number: two
    interpreters of the same minor version (3.12.1 and 3.12.7) share one. An interpreter
    that cannot run (a pyenv shim without that version) is skipped, or with `strict` (the
    builder named it) is an error.
    """
    from concurrent.futures import ThreadPoolExecutor

    sources = zipapp_bytes([e for e in entries if e.name.endswith(".py") and "/" in e.name])[
        len(SHEBANG) :
    ]
    env = {"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def compile_with(python: str) -> tuple[str, bytes, str]:
        try:
            result = subprocess.run(
                [python, "-S", "-s", str(COMPILER)],
                input=sources,
                capture_output=True,
                env=env,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return python, b"", str(exc)
        if result.returncode != 0 or not result.stdout.startswith(b"PK"):
            last = result.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
            return python, b"", last[-1]
        return python, result.stdout, ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(compile_with, pythons))
    failed = [(python, why) for python, _, why in results if why]
    if strict and failed:
        python, why = failed[0]
        raise BundleError(f"cannot compile with {python}: {why}: name an interpreter that runs")
    compiled = [(python, data) for python, data, why in results if not why]
    out: dict[str, list[Entry]] = {}
    used = []
    for python, archive_bytes in compiled:
        with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
            names = archive.namelist()
            magic = archive.read(names[0])[:4].hex()
            if magic in out:
                continue
            out[magic] = [Entry(f"pyc.{magic}/{n}", archive.read(n)) for n in names]
        used.append(f"{python} (magic {magic})")
    return [e for magic in sorted(out) for e in out[magic]], used


def zipapp_bytes(entries: list[Entry], shebang: bytes = SHEBANG) -> bytes:
    """Shebang + a zip whose every header is fixed: the same entries give the same bytes."""
    buffer = io.BytesIO()
    buffer.write(shebang)
    with zipfile.ZipFile(buffer, "w") as archive:
        for entry in entries:
            info = zipfile.ZipInfo(entry.name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the mode below is honoured
            info.external_attr = (0o100644 & 0xFFFF) << 16
            archive.writestr(info, entry.data, compresslevel=COMPRESS_LEVEL)
    return buffer.getvalue()


def build_zipapp(
    wheels: Path = DEFAULT_WHEELS, pythons: Optional[list[str]] = None, strict: bool = False
) -> tuple[bytes, list[str]]:
    """The zipapp, with bytecode for each interpreter in `pythons` (none when empty), and a
    line per interpreter whose bytecode it carries."""
    entries = collect(wheels)
    used: list[str] = []
    if pythons:
        compiled, used = bytecode_entries(entries, pythons, strict)
        entries = sorted(entries + compiled, key=lambda e: e.name)
    return zipapp_bytes(entries), used


def write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.utime(tmp, (FIXED_MTIME, FIXED_MTIME))
    os.replace(tmp, path)


def write_tree(
    root: Path,
    zipapp: bytes,
    shims: Path = SHIMS,
    extra: Optional[dict[str, bytes]] = None,
) -> list[Path]:
    """Lay out the tree that `COPY ROOT/ /` brings into an image; returns the files written.

    `extra`: more files (tree path -> bytes, mode 0644), e.g. the singleuser runtimes.
    """
    written = []
    for relative, data in sorted((extra or {}).items()):
        write_file(root / relative, data, 0o644)
        written.append(root / relative)
    for relative, source, mode in TREE:
        if source == ZIPAPP:
            data = zipapp
        else:
            try:
                data = (shims / source).read_bytes()
            except OSError as exc:
                raise BundleError(
                    f"cannot read the shim {shims / source}: {exc.strerror}: "
                    "reinstall nbinit (the shims are its package data)"
                ) from None
        target = root / relative
        write_file(target, data, mode)
        written.append(target)
    # Directories too: the same modes and times on every build (COPY copies them as they are).
    for directory in sorted({p for f in written for p in f.relative_to(root).parents}):
        path = root / directory
        os.chmod(path, 0o755)  # noqa: S103 - image directories: root-owned, world-readable
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return written


def main(argv: Optional[list[str]] = None) -> int:
    from nbinit.bundle import runtimes  # it builds on this module's wheels and zips

    parser = argparse.ArgumentParser(
        prog="python3 -m nbinit.bundle",
        description="Build nbinit as one executable file, and the tree one COPY line brings in.",
    )
    parser.add_argument("-o", "--output", type=Path, help="write the zipapp here")
    parser.add_argument(
        "--tree", type=Path, help="lay out DIR for `COPY DIR/ /` (zipapp and shims)"
    )
    parser.add_argument(
        "--wheels",
        type=Path,
        default=DEFAULT_WHEELS,
        help=f"pinned dependency wheels (default {DEFAULT_WHEELS}; downloaded when missing)",
    )
    parser.add_argument(
        "--fetch-only", action="store_true", help="download the pinned wheels and stop"
    )
    parser.add_argument(
        "--runtime-wheels",
        type=Path,
        default=runtimes.DEFAULT_RUNTIME_WHEELS,
        help="pinned wheels of the jupyterhub-singleuser runtimes the tree carries "
        f"(default {runtimes.DEFAULT_RUNTIME_WHEELS}; downloaded when missing)",
    )
    parser.add_argument(
        "--python",
        action="append",
        metavar="PATH",
        help="also carry bytecode compiled by this interpreter (repeat; 'none' for sources "
        f"only; default: every Python {PYTHON_VERSIONS[0]}-{PYTHON_VERSIONS[-1]} found here)",
    )
    args = parser.parse_args(argv)
    if not (args.output or args.tree or args.fetch_only):
        parser.error("give -o FILE, --tree DIR or --fetch-only")
    try:
        if args.fetch_only:
            if any(find_wheel(args.wheels, p, v, h) is None for p, v, _, h in PINS):
                fetch_wheels(args.wheels)
            runtimes.fetch_runtime_wheels(args.runtime_wheels)
            return 0
        pythons = find_pythons() if args.python is None else args.python
        named = args.python is not None  # named interpreters must work; found ones may not
        data, used = build_zipapp(args.wheels, [p for p in pythons if p != "none"], named)
        digest = _sha256(data)
        for line in used:
            print(f"bytecode: {line}")
        if args.output:
            write_file(args.output, data, 0o755)
            print(f"{args.output}: {len(data)} bytes, sha256 {digest}")
        if args.tree:
            zips = runtimes.build_runtimes(args.runtime_wheels)
            for path in write_tree(args.tree, data, extra=zips):
                print(f"{path}")
    except BundleError as exc:
        sys.stderr.write(f"nbinit.bundle: error: {exc}\n")
        return 1
    return 0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
