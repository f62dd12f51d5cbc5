"""The Docker backend's own behaviour against a real engine: memory limits, cleanup, images, errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mlspec.backends.api import BackendError, Context, Task, TaskStatus
from mlspec.testing import make_task, result_of, wait_until, write_project
from mlspec_docker import images
from mlspec_docker.backend import LABEL_APPLY, DockerBackend

HOGS = '''
def hog(mb: int = 600):
    blocks = []
    for _ in range(mb):
        blocks.append(bytearray(1 << 20))
    return {"held": len(blocks)}


def nap(seconds: float = 60):
    import time
    time.sleep(seconds)
    return {}
'''


@pytest.fixture
def ctx(tmp_path) -> Context:
    project = write_project(tmp_path / "project")
    (project / "hogs.py").write_text(HOGS)
    return Context(project_dir=project, artifacts_url=str(tmp_path / "artifacts"), code_paths=(str(project),))


def _backend(ctx, docker_engine, **settings) -> DockerBackend:
    return DockerBackend({"type": "docker", "host": docker_engine, "network_mode": "none", **settings}, ctx)


def _ours(docker_client, backend) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL_APPLY}={backend.apply_label}"})


def test_memory_limit_kill_is_reported_with_the_limit(ctx, docker_engine, docker_client):
    b = _backend(ctx, docker_engine)
    b.start()
    try:
        task = make_task(ctx, "hog", module="hogs", params={"mb": 600}, metrics=["held"], memory=256 * 2**20)
        res = result_of(b.submit(task))
        assert res.status is TaskStatus.FAILED
        assert "killed: memory limit 256 MiB exceeded" in res.error, res.error
        fits = result_of(b.submit(make_task(ctx, "hog", module="hogs", params={"mb": 50}, metrics=["held"],
                                            memory=256 * 2**20)))
        assert fits.status is TaskStatus.SUCCEEDED and fits.metrics == {"held": 50}, fits.error
    finally:
        b.close()
    assert not _ours(docker_client, b)


def test_cpu_and_memory_limits_reach_the_container(ctx, docker_engine, docker_client):
    cmd = "cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max > ${outputs.limits} 2>/dev/null || " \
          "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes > ${outputs.limits}"
    b = _backend(ctx, docker_engine)
    b.start()
    try:
        res = result_of(b.submit(make_task(ctx, cmd=cmd, outputs=["limits"], cpus=0.5, memory=300 * 2**20)))
        assert res.status is TaskStatus.SUCCEEDED, res.error + res.log
        from mlspec.artifacts import ArtifactStore

        text = ArtifactStore(ctx.artifacts_url).read_bytes(res.outputs["limits"]["hash"]).decode()
        assert str(300 * 2**20) in text and "50000" in text, text  # 0.5 CPU: 50 ms of every 100 ms
    finally:
        b.close()


def test_cancel_all_kills_and_removes_every_container(ctx, docker_engine, docker_client):
    b = _backend(ctx, docker_engine)
    b.start()
    try:
        futures = [b.submit(make_task(ctx, "nap", module="hogs", params={"seconds": 120})) for _ in range(2)]
        assert wait_until(lambda: len([c for c in _ours(docker_client, b) if c.status == "running"]) == 2, 60)
        t0 = time.monotonic()
        b.cancel_all()
        results = [result_of(f, timeout=30) for f in futures]
        assert [r.status for r in results] == [TaskStatus.CANCELLED] * 2
        assert time.monotonic() - t0 < 15
        assert not _ours(docker_client, b)  # removed before the futures resolved
    finally:
        b.close()


def test_timeout_kills_and_removes_the_container(ctx, docker_engine, docker_client):
    b = _backend(ctx, docker_engine)
    b.start()
    try:
        res = result_of(b.submit(make_task(ctx, "nap", module="hogs", params={"seconds": 60}, timeout=1)))
        assert res.status is TaskStatus.TIMED_OUT and "timed out after 1s" in res.error
        assert not _ours(docker_client, b)
    finally:
        b.close()


def test_unreachable_engine_is_one_line(ctx, tmp_path):
    b = DockerBackend({"type": "docker", "host": f"unix://{tmp_path}/nothing.sock"}, ctx)
    with pytest.raises(BackendError) as err:
        b.start()
    assert f"cannot reach the Docker engine at unix://{tmp_path}/nothing.sock" in err.value.message
    assert "DOCKER_HOST" in err.value.hint
    assert b.health().startswith("unreachable: cannot reach the Docker engine")
    problems = b.preflight([])
    assert len(problems) == 1 and "cannot reach the Docker engine" in problems[0]


def test_missing_image_names_it_and_how_to_build_it(ctx, docker_engine):
    b = _backend(ctx, docker_engine, image="mlspec-test-no-such-image:1", pull="never")
    problems = b.preflight([])
    assert len(problems) == 1, problems
    assert "image mlspec-test-no-such-image:1 is missing" in problems[0]
    assert "docker build -t mlspec-test-no-such-image:1" in problems[0] and "backend.build" in problems[0]


def test_image_with_another_mlspec_fails_preflight_naming_both_versions(ctx, docker_engine, docker_client, tmp_path):
    """An image whose mlspec speaks another task format: preflight names both versions."""
    fake = tmp_path / "fake-mlspec"
    (fake / "mlspec" / "backends").mkdir(parents=True)
    (fake / "mlspec" / "__init__.py").write_text('__version__ = "0.0.9"\n')
    (fake / "mlspec" / "backends" / "__init__.py").write_text("")
    (fake / "mlspec" / "backends" / "api.py").write_text("TASK_FORMAT_VERSION = 1\n")
    (fake / "Dockerfile").write_text(f"FROM {images.ensure_host_root(docker_client)}\nCOPY mlspec /opt/old/mlspec\n")
    tag = "mlspec-test-old-mlspec:1"
    docker_client.images.build(path=str(fake), tag=tag, rm=True)
    try:
        b = _backend(ctx, docker_engine, image=tag, pull="never", python=os.path.realpath(__import__("sys").executable),
                     mounts=["/usr:/usr:ro", f"{__import__('sys').base_prefix}:{__import__('sys').base_prefix}:ro"],
                     env={"PYTHONPATH": "/opt/old"})
        problems = b.preflight([])
        assert any("has mlspec 0.0.9 (task format 1)" in p and "this mlspec is 0.1.0 (task format 2)" in p
                   for p in problems), problems
    finally:
        docker_client.images.remove(tag, force=True)


def test_gpu_requests_become_device_requests_and_are_checked(ctx, docker_engine):
    """There is no GPU here: what can be checked is the request the engine would get, and preflight."""
    task = make_task(ctx, "ok", gpus=2)
    payload = dict(task.payload)
    with_gpus = _backend(ctx, docker_engine, gpus="all")
    req = with_gpus.host_config(task, payload)["DeviceRequests"]
    assert req == [{"Driver": "", "Count": 2, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
    listed = _backend(ctx, docker_engine, gpus=["GPU-1", "GPU-2", "GPU-3"])
    assert listed.host_config(task, payload)["DeviceRequests"][0]["DeviceIDs"] == ["GPU-1", "GPU-2"]
    assert "DeviceRequests" not in with_gpus.host_config(make_task(ctx, "ok"), payload)
    base = {"cpus": 1, "gpus": 1, "memory": None, "custom": {}}
    from mlspec.backends.api import Requirement

    problems = _backend(ctx, docker_engine).preflight([Requirement("step.train", base, "")])
    assert problems == ["step.train asks for 1 GPU(s); backend.gpus declares none for this engine (set backend.gpus: "
                        "all where the NVIDIA container toolkit is installed)"]
    for b in (with_gpus, listed):
        b.close()
