"""A real Docker engine for the whole test session: ``dockerd`` started here (about 1 s), stopped by its pid.

With DOCKER_HOST set, the tests use that engine instead. Without a dockerd binary the tests fail (never
skip) with the command that installs it. Containers use ``network_mode`` host or none: the private engine
has no bridge. Images come from no registry: the backend imports its minimal root itself.
"""

from __future__ import annotations

import os

import pytest

from mlspec_docker.daemon import DockerdMissing, LocalDockerd


@pytest.fixture(scope="session")
def docker_engine():
    """The engine URL; DOCKER_HOST points at it for the session (the CLI in subprocesses inherits it)."""
    given = os.environ.get("DOCKER_HOST")
    if given:
        yield given
        return
    daemon = LocalDockerd()
    try:
        daemon.start()
    except DockerdMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    os.environ["DOCKER_HOST"] = daemon.url
    try:
        yield daemon.url
    finally:
        os.environ.pop("DOCKER_HOST", None)
        daemon.stop()


@pytest.fixture(scope="session")
def docker_client(docker_engine):
    import docker

    client = docker.DockerClient(base_url=docker_engine, version="1.41")
    yield client
    client.close()
