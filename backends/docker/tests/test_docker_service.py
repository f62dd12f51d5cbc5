"""Deployments in containers: the service part of the conformance suite and the Docker-specific behaviour
(labels, real state from the engine, container replacement without a failed request, no secret in the
container's configuration, nothing left after removal), against a real dockerd started by the tests."""

from __future__ import annotations

import socket

import pytest

from mlspec.testing import ServiceConformance
from mlspec_docker.backend import DockerBackend
from mlspec_docker.service import LABEL_DEPLOYMENT


def docker_backend(context, engine, **settings):
    b = DockerBackend({"type": "docker", "location": "local", "host": engine, **settings}, context)
    b.start()
    return b


class TestDockerServices(ServiceConformance):
    @pytest.fixture
    def service_backend(self, service_context, docker_engine, docker_client):
        b = docker_backend(service_context, docker_engine)
        yield b
        b.close()
        left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_DEPLOYMENT}"})
        for c in left:  # the suite removes what it deploys; a leftover is a defect (reported after cleanup)
            c.remove(force=True)
        assert not left, f"service containers left behind: {[c.name for c in left]}"

    def kill_service(self, record):
        import docker

        client = docker.DockerClient(base_url=record["engine"], version="1.41")
        try:
            client.api.kill(record["container"])  # as an operator would: docker kill
        finally:
            client.close()
