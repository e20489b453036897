"""Real OCI images for the container tests: built with podman, cached in podman's storage.

    .venv/bin/python tests/helpers/images.py          # build every family (cached), print flags

Three families, each defined under tests/images/ (see tests/README.md):
  docker-stacks  docker-stacks' own start.sh & co. (unmodified, from ../shared/upstream),
                 jovyan, jupyterhub + jupyterlab, ENTRYPOINT tini -g -- start.sh, USER 1000
  ngc            NVIDIA-style entrypoint chain, JupyterLab but no jupyterhub, no jovyan
  plain-python   python3 + jupyterhub + jupyterlab, jovyan, no entrypoint
and for each the same image plus exactly `COPY build/nbinit-root/ /` (`image(family)`).

No registry is reachable: the base is made from Debian packages with mmdebstrap and imported,
and the Python packages are wheels pinned in tests/images/requirements.txt, downloaded once
into build/image-wheels and mounted into builds that run with --network=none. Every tag is a
digest of the image's inputs (definition files, base, wheels pin, nbinit tree), so an image is
rebuilt exactly when an input changed and reused otherwise.

This kernel needs explicit run flags (crun refuses hybrid cgroups; the default rlimits are
above the host's hard limits): `podman_run_flags()` tries candidate sets on a trivial
container and keeps the first that works.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

PROJECT = Path(__file__).resolve().parents[2]
DEFINITIONS = PROJECT / "tests" / "images"
REQUIREMENTS = DEFINITIONS / "requirements.txt"
WHEELS = PROJECT / "build" / "image-wheels"
# nbinit's own dependencies and test tools, for building Dockerfile.test without a network.
TEST_WHEELS = PROJECT / "build" / "test-wheels"
WORK = PROJECT / "build" / "images"
REPOSITORY = "localhost/nbinit-test"
FAMILIES = ("docker-stacks", "ngc", "plain-python")

# The base every family starts from: Debian 12 (the Python the wheels are pinned for) with
# what the images' own definitions need: tini and sudo for docker-stacks' start.sh, pip and
# venv to install the wheels, git for nbinit's repo sync; and shellcheck, iproute2 and
# e2fsprogs, so Dockerfile.test finds every tool its suite needs without a network.
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = (
    "ca-certificates",
    "e2fsprogs",
    "git",
    "iproute2",
    "procps",
    "python3",
    "python3-pip",
    "python3-venv",
    "shellcheck",
    "sudo",
    "tini",
)
# docker-stacks' scripts the docker-stacks-like image copies, as base-notebook and
# docker-stacks-foundation do (10activate-conda-env.sh is left out: there is no conda).
UPSTREAM_SCRIPTS = (
    "docker-stacks-foundation/start.sh",
    "docker-stacks-foundation/run-hooks.sh",
    "docker-stacks-foundation/_docker_stacks_log.sh",
    "docker-stacks-foundation/fix-permissions",
    "base-notebook/start-notebook.py",
    "base-notebook/start-notebook.sh",
    "base-notebook/start-singleuser.py",
    "base-notebook/start-singleuser.sh",
)
# Bump to rebuild every image after a change here that the hashed inputs do not show.
RECIPE = "1"


class ImageError(Exception):
    """Images cannot be built or run here; the message says why (a test skips with it)."""


def upstream_dir() -> Path:
    """docker-stacks' scripts: ../shared beside the checkout (CI), or shared/ inside it."""
    for shared in (PROJECT.parent / "shared", PROJECT / "shared"):
        path = shared / "upstream" / "docker-stacks" / "images"
        if path.is_dir():
            return path
    raise ImageError(
        f"docker-stacks' scripts are not at {PROJECT.parent / 'shared/upstream/docker-stacks'}:"
        " check out the shared files beside the repository"
    )


def unavailable() -> Optional[str]:
    """None when images can be built and run here, else why not."""
    if os.geteuid() != 0:
        return "podman tests run as root (rootful podman: --user 0, useradd, chown)"
    for tool in ("podman", "mmdebstrap"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/setup.sh installs it)"
    try:
        podman_run_flags()
    except ImageError as exc:
        return str(exc)
    return None


# -- running podman ------------------------------------------------------------------------


def podman(
    *args: str, timeout: float = 120, check: bool = True, **kwargs
) -> subprocess.CompletedProcess:
    """Run podman; on failure an ImageError with the command and its last lines of output."""
    try:
        result = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, **kwargs
        )
    except subprocess.TimeoutExpired:
        raise ImageError(f"podman {' '.join(args[:3])} ... took over {timeout:.0f} s") from None
    if check and result.returncode != 0:
        # Both streams: a build's RUN step prints its failure (pytest's) on stdout.
        tail = "\n".join(
            (result.stdout or "").strip().splitlines()[-15:]
            + (result.stderr or "").strip().splitlines()[-15:]
        )
        raise ImageError(f"podman {' '.join(args[:4])} ... exited {result.returncode}:\n{tail}")
    return result


def flag_candidates() -> list[list[str]]:
    """Run flags to try, simplest first: none, runc, rlimits at the hard limits, both."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    limits = [f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={nproc}:{nproc}"]
    return [[], ["--runtime=runc"], limits, ["--runtime=runc", *limits]]


@functools.cache
def podman_run_flags() -> tuple[str, ...]:
    """The first candidate set of flags with which a trivial container runs here."""
    if not shutil.which("podman"):
        raise ImageError("podman is not installed (scripts/setup.sh installs it)")
    probe = base_image()
    failures = []
    for flags in flag_candidates():
        result = podman("run", "--rm", "--network=none", *flags, probe, "true", check=False)
        if result.returncode == 0:
            return tuple(flags)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        failures.append(f"[{' '.join(flags) or 'no flags'}]: {last}")
    raise ImageError("no podman run flags work here: " + "; ".join(failures))


# -- inputs and tags -----------------------------------------------------------------------


def digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()[:16]


def tree_digest(root: Path) -> list[bytes]:
    """Every file under root as (path, mode, bytes), in a stable order."""
    parts = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        mode = path.stat().st_mode & 0o7777
        parts += [str(path.relative_to(root)).encode(), str(mode).encode(), path.read_bytes()]
    return parts


def exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


@contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time per checkout: two test processes must not build the same tag."""
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# -- building ------------------------------------------------------------------------------


@functools.cache
def base_image() -> str:
    """Debian minbase with BASE_PACKAGES, from mmdebstrap, imported as an image."""
    inputs = [RECIPE.encode(), SUITE.encode(), *(package.encode() for package in BASE_PACKAGES)]
    tag = f"{REPOSITORY}/base:{digest(*inputs)}"
    with build_lock():
        if exists(tag):
            return tag
        _say(f"building {tag} with mmdebstrap (needs the Debian mirror once)")
        command = [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            # No apt lists or caches in the image: it is rebuilt, never upgraded.
            "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
            SUITE,
            "-",
            MIRROR,
        ]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as debootstrap:
            assert debootstrap.stdout is not None
            imported = podman(
                "import",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                tag,
                stdin=debootstrap.stdout,
                timeout=900,
                check=False,
            )
            errors = (
                debootstrap.stderr.read().decode(errors="replace") if debootstrap.stderr else ""
            )
            debootstrap.wait(timeout=60)
        if debootstrap.returncode != 0 or imported.returncode != 0:
            tail = "\n".join((errors + imported.stderr).strip().splitlines()[-15:])
            raise ImageError(f"cannot build the base image {tag}:\n{tail}")
    return tag


def fetch_wheels() -> Path:
    """The pinned wheels in build/image-wheels, downloaded (hash-checked) when missing."""
    stamp = WHEELS / ".complete"
    if stamp.exists() and stamp.read_bytes() == REQUIREMENTS.read_bytes():
        return WHEELS
    _say(f"downloading the images' wheels into {WHEELS} (needs PyPI once)")
    WHEELS.mkdir(parents=True, exist_ok=True)
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
        "--dest",
        str(WHEELS),
        "--requirement",
        str(REQUIREMENTS),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ImageError(f"cannot download the images' wheels into {WHEELS}: {last}")
    stamp.write_bytes(REQUIREMENTS.read_bytes())
    return WHEELS


def test_requirements() -> list[str]:
    """What `pip install -e '.[test]'` needs: the dependencies, the test extra, the backend."""
    import tomllib

    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    build_system = project["build-system"]["requires"]
    extra = project["project"]["optional-dependencies"]["test"]
    return [*build_system, *project["project"]["dependencies"], *extra]


def fetch_test_wheels() -> Path:
    """build/test-wheels, filled (once per change of the requirements) with pip download."""
    wanted = "\n".join(test_requirements()).encode()
    stamp = TEST_WHEELS / ".complete"
    if stamp.exists() and stamp.read_bytes() == wanted:
        return TEST_WHEELS
    _say(f"downloading nbinit's test dependencies into {TEST_WHEELS} (needs PyPI once)")
    TEST_WHEELS.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--dest", str(TEST_WHEELS), *test_requirements()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ImageError(f"cannot download the test wheels into {TEST_WHEELS}: {last}")
    stamp.write_bytes(wanted)
    return TEST_WHEELS


def dockerfile_test_image() -> str:
    """Dockerfile.test built offline as docs/development.md says, on the stacks-like base."""
    fetch_test_wheels()
    base = family_image("docker-stacks")  # before the lock: it takes the lock itself
    tag = f"{REPOSITORY}/dockerfile-test:latest"  # podman's layer cache does the reuse
    with build_lock():
        nbinit_tree(PROJECT / "build" / "nbinit-root")
        build(tag, PROJECT / "Dockerfile.test", PROJECT, base, wheels=False)
    return tag


def build(tag: str, containerfile: Path, context: Path, base: str, wheels: bool) -> None:
    """podman build with the probed flags, no network, and the wheels mounted at /wheels."""
    flags = [f for f in podman_run_flags() if f.startswith(("--runtime", "--ulimit"))]
    volumes = [f"--volume={fetch_wheels()}:/wheels:ro"] if wheels else []
    _say(f"building {tag}")
    podman(
        "build",
        "--quiet",
        "--network=none",
        "--pull=never",
        *flags,
        *volumes,
        f"--build-arg=BASE={base}",
        f"--build-arg=BASE_IMAGE={base}",
        f"--label=org.nbinit.test.inputs={tag.rsplit(':', 1)[1]}",
        "--file",
        str(containerfile),
        "--tag",
        tag,
        str(context),
        timeout=1800,
    )


@functools.cache
def family_image(family: str) -> str:
    """The family's image without nbinit, built when its inputs changed."""
    if family not in FAMILIES:
        raise ValueError(f"unknown image family {family!r}: one of {', '.join(FAMILIES)}")
    base = base_image()
    definition = DEFINITIONS / family
    upstream = (
        [upstream_dir() / script for script in UPSTREAM_SCRIPTS]
        if family == "docker-stacks"
        else []
    )
    inputs = [
        RECIPE.encode(),
        base.encode(),
        REQUIREMENTS.read_bytes(),
        *tree_digest(definition),
        *(part for path in upstream for part in (path.name.encode(), path.read_bytes())),
    ]
    tag = f"{REPOSITORY}/{family}:{digest(*inputs)}"
    with build_lock():
        if exists(tag):
            return tag
        context = Path(tempfile.mkdtemp(prefix=f"context-{family}-", dir=WORK))
        try:
            shutil.copytree(definition, context, dirs_exist_ok=True)
            if upstream:
                (context / "upstream").mkdir()
                for path in upstream:
                    shutil.copy2(path, context / "upstream" / path.name)
            build(tag, context / "Containerfile", context, base, wheels=True)
        finally:
            shutil.rmtree(context, ignore_errors=True)
    return tag


def nbinit_tree(root: Path) -> None:
    """`python3 -m nbinit.bundle --tree ROOT`, as an image author runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "nbinit.bundle", "--tree", str(root)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise ImageError(f"python3 -m nbinit.bundle --tree failed: {result.stderr.strip()}")


@functools.cache
def image(family: str, nbinit: bool = True) -> str:
    """The tag of the family's image; with nbinit, plus exactly `COPY build/nbinit-root/ /`."""
    base = family_image(family)
    if not nbinit:
        return base
    WORK.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="context-nbinit-", dir=WORK))
    try:
        nbinit_tree(context / "build" / "nbinit-root")
        inputs = [RECIPE.encode(), base.encode(), *tree_digest(context / "build")]
        tag = f"{REPOSITORY}/{family}-nbinit:{digest(*inputs)}"
        with build_lock():
            if not exists(tag):
                build(tag, DEFINITIONS / "nbinit.Containerfile", context, base, wheels=False)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return tag


def _say(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def main() -> int:
    why = unavailable()
    if why:
        _say(f"not building the test images: {why}")
        return 0
    _say(f"podman run flags: {' '.join(podman_run_flags()) or '(none needed)'}")
    try:
        for family in FAMILIES:
            _say(f"{family}: {family_image(family)}")
        fetch_test_wheels()
    except ImageError as exc:
        _say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
