"""The backend conformance suite (mlspec.testing) against a real Ray cluster."""

from __future__ import annotations

import pytest

from mlspec.testing import BackendConformance
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
