"""A real Ray cluster for the whole test session (started once: about 5 s and 0.5 GB)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from mlspec_ray.cluster import LocalRayCluster


@pytest.fixture(scope="session")
def ray_cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"  # clients must match the cluster, or connections time out
    os.environ.pop("RAY_ADDRESS", None)
    cluster = LocalRayCluster(num_cpus=2, object_store_memory=300_000_000).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def short_ray_tmpdir(monkeypatch):
    """RAY_TMPDIR for a private cluster: short (socket paths), and removed afterwards (not /tmp/ray)."""
    d = tempfile.mkdtemp(prefix="r", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", d)
    yield d
    shutil.rmtree(d, ignore_errors=True)
