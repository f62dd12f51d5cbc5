"""The service part of the backend conformance suite (mlspec.testing.ServiceConformance) on the local backend."""

from __future__ import annotations

import os
import signal

import pytest

from mlspec.backends.local import LocalBackend
from mlspec.testing import ServiceConformance


class TestLocalServices(ServiceConformance):
    @pytest.fixture
    def service_backend(self, service_context, monkeypatch):
        monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)  # workers import sklearn: use compiled caches
        b = LocalBackend({"type": "local", "location": "local"}, service_context)
        b.start()
        yield b
        b.close()

    def kill_service(self, record):
        os.kill(record["supervisor"]["pid"], signal.SIGKILL)
