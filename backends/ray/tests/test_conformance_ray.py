"""The backend conformance suite (mlspec.testing) against a real Ray cluster, directly and through Ray Client."""

from __future__ import annotations

import pytest

from mlspec.backends.api import Context
from mlspec.testing import BackendConformance, write_project
from mlspec_ray.backend import RayBackend


class TestRayConformance(BackendConformance):
    checks_modules = True

    @pytest.fixture
    def backend(self, conformance_context, ray_cluster):
        b = RayBackend({"type": "ray", "location": "local", "address": ray_cluster.address, "namespace": "mlspec"},
                       conformance_context)
        b.start()
        yield b
        b.cancel_all()
        b.close()


class TestRayClientConformance(BackendConformance):
    """The same suite through the Ray Client server (`address: ray://HOST:PORT`).

    One client connection serves the whole class (the backends of the tests share it, as two Ray backends
    of one apply would): a Ray Client connection costs 1-3 s, and now and then the client server fails to
    start one (Ray 2.60), which the backend retries at the price of ~40 s.
    """

    checks_modules = True

    @pytest.fixture(scope="class")
    @classmethod
    def client_connection(cls, ray_cluster, tmp_path_factory):
        project = write_project(tmp_path_factory.mktemp("client") / "project")
        holder = RayBackend({"type": "ray", "address": ray_cluster.client_address},
                            Context(project_dir=project, artifacts_url=str(project.parent / "artifacts")))
        holder.start()
        yield ray_cluster.client_address
        holder.close()

    @pytest.fixture
    def backend(self, conformance_context, client_connection):
        b = RayBackend({"type": "ray", "location": "local", "address": client_connection}, conformance_context)
        b.start()
        yield b
        b.cancel_all()
        b.close()
