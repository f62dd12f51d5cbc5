"""The backend conformance suite (mlspec.testing) against a real Docker engine: every task in a container."""

from __future__ import annotations

import pytest

from mlspec.testing import BackendConformance
from mlspec_docker.backend import LABEL_APPLY, DockerBackend


class TestDockerConformance(BackendConformance):
    """The suite's steps write pid and marker files into the test's temporary directory (outside the project),
    and check host pids: the containers mount that directory (``mounts``) and share the host's process
    namespace (``pid_mode: host``), as a user would set them for such steps."""

    checks_modules = True

    @pytest.fixture
    def backend(self, conformance_context, docker_engine, docker_client):
        b = DockerBackend({"type": "docker", "location": "local", "host": docker_engine, "network_mode": "none",
                           "pid_mode": "host", "mounts": [f"{conformance_context.project_dir.parent}:"
                                                           f"{conformance_context.project_dir.parent}"]},
                          conformance_context)
        b.start()
        yield b
        b.cancel_all()
        b.close()
        left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_APPLY}={b.apply_label}"})
        assert not left, f"containers left behind: {[c.name for c in left]}"
