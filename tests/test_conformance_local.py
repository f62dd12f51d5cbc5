"""The backend conformance suite (mlspec.testing) against the local backend."""

from __future__ import annotations

import pytest

from mlspec.backends.local import LocalBackend
from mlspec.testing import BackendConformance


class TestLocalConformance(BackendConformance):
    checks_modules = False  # the local backend imports modules only when a step runs

    @pytest.fixture
    def backend(self, conformance_context):
        b = LocalBackend({"type": "local", "location": "local", "max_workers": 2}, conformance_context)
        b.start()
        yield b
        b.cancel_all()
        b.close()
