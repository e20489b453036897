"""Fixtures for real containers (podman): images, a container runner, a stand-in hub API.

Every test here is marked `container` and skips, saying why, where podman cannot build or
run images (not root, podman or mmdebstrap missing, no working run flags).
"""

from __future__ import annotations

import pytest
from helpers import containers, images


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/container/" in str(item.fspath):
            item.add_marker(pytest.mark.container)


@pytest.fixture(scope="session")
def podman_ready() -> None:
    """Skip, with the reason, where images cannot be built or run."""
    why = images.unavailable()
    if why:
        pytest.skip(f"podman: {why}")


@pytest.fixture(scope="session")
def image(podman_ready):
    """`image(family, nbinit=True)`: the tag of a test image, built once and cached."""

    def get(family: str, nbinit: bool = True) -> str:
        try:
            return images.image(family, nbinit)
        except images.ImageError as exc:
            pytest.fail(f"cannot build the {family} image: {exc}")

    return get


@pytest.fixture
def container(podman_ready):
    """`container(image, *command, env=..., user=..., volumes=...)`: a started Container;
    all are removed after the test."""
    started: list[containers.Container] = []

    def run(image_tag: str, *command: str, **kwargs) -> containers.Container:
        started.append(containers.run(image_tag, *command, **kwargs))
        return started[-1]

    yield run
    for each in started:
        each.remove()


@pytest.fixture
def hub_api(http_server):
    """A stand-in for the hub's API: `GET /hub/api` answers its version, as singleuser asks
    before it listens. Returns the API URL for JUPYTERHUB_API_URL."""
    from helpers.httpserver import serve_hub_api
    from jupyterhub import __version__

    return serve_hub_api(http_server(), __version__)
