"""Dockerfile.test builds with podman, offline, as docs/development.md says; its suite runs.

The build (on the docker-stacks-like image, with build/test-wheels) runs `nbinit check` and
the unit tests; the container then runs scripts/test.sh as root, with no network, and here
a sandbox test file: the overlays need root, namespaces (--privileged) and a /tmp that is
not the image's overlay, which the image's own `VOLUME /tmp` provides. The whole suite
runs the same way (`podman run --rm --privileged nbinit-test`); it is not repeated here.
"""

from __future__ import annotations

import re

from helpers import images


def test_dockerfile_test_builds_offline_and_runs_the_suite_as_root(podman_ready):
    tag = images.dockerfile_test_image()
    run = images.podman(
        "run",
        "--rm",
        "--privileged",
        "--network=none",
        *images.podman_run_flags(),
        tag,
        "scripts/test.sh",
        "-p",
        "no:cacheprovider",
        "tests/sandbox/test_start_basics.py",
        timeout=900,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "== pytest" in run.stderr  # after setup, ruff, mypy, hadolint and shellcheck
    summary = run.stdout.strip().splitlines()[-1]  # pytest's, on stdout
    assert re.search(r"\b\d+ passed\b", summary), output[-3000:]
    assert not re.search(r"\b(failed|errors?)\b", summary), output[-3000:]
