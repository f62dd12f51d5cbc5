"""The backend conformance suite (mlspec.testing) against the local backend."""

from __future__ import annotations

import pytest

from mlspec.backends.local import LocalBackend
from mlspec.testing import BackendConformance


class TestLocalConformance(BackendConformance):
    checks_modules = True

    @pytest.fixture
    def backend(self, conformance_context):
        b = LocalBackend({"type": "local", "location": "local", "max_workers": 2}, conformance_context)
        b.start()
        yield b
        b.cancel_all()
        b.close()


class TestLocalFreshProcessConformance(TestLocalConformance):
    """The same suite with one interpreter per step (`fresh_process: true`) instead of the worker pool."""

    @pytest.fixture
    def backend(self, conformance_context):
        b = LocalBackend({"type": "local", "location": "local", "max_workers": 2, "fresh_process": True},
                         conformance_context)
        b.start()
        yield b
        b.cancel_all()
        b.close()
