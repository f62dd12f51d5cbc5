"""The service part of the conformance suite (mlspec.testing.ServiceConformance) on Ray Serve, against the
session's real cluster."""

from __future__ import annotations

from typing import Mapping

import pytest

from mlspec.testing import ServiceConformance
from mlspec_ray.backend import RayBackend


class TestRayServeConformance(ServiceConformance):
    @pytest.fixture
    def service_backend(self, service_context, ray_cluster):
        b = RayBackend({"type": "ray", "location": "local", "address": ray_cluster.address,
                        "serve": {"replica_cpus": 0.25}}, service_context)
        b.start()
        yield b
        b.close()

    def kill_service(self, record: Mapping) -> None:
        """Ray Serve restarts a replica whose process dies (test_serve_ray.py checks it), so "killed by hand"
        here is what an operator does to a Serve application: `serve delete` of the application."""
        from ray import serve

        serve.delete(record["app"])
