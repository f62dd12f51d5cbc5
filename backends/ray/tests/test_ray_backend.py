"""Ray-specific behaviour beyond the conformance suite: addresses, settings, preflight, code shipping, crashes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

import mlspec_ray.addresses as addresses
import mlspec_ray.backend as rb
from mlspec.backends.api import BackendError, Context, Requirement, TaskStatus
from mlspec.testing import make_task, result_of, write_project
from mlspec_ray.backend import RayBackend, resolve_address

BASE = {"cpus": 1, "gpus": 0, "memory": None, "custom": {}}


@pytest.fixture
def ctx(tmp_path) -> Context:
    project = write_project(tmp_path / "project")
    return Context(project_dir=project, artifacts_url=str(tmp_path / "artifacts"), code_paths=(str(project),))


def settings(address: str, **more) -> dict:
    return {"type": "ray", "location": "local", "address": address, **more}


# --- settings and addresses ----------------------------------------------------------------------------
def test_schema_is_valid_and_documents_every_setting():
    schema = RayBackend.settings_schema
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False

    def walk(props):
        for name, sub in props.items():
            assert sub.get("description"), f"setting {name} has no description"
            walk(sub.get("properties") or {})

    walk(schema["properties"])
    v = Draft202012Validator(schema)
    good = settings("ray://10.0.0.5:10001", namespace="ml", connect_timeout=2.5, num_cpus=4,
                    object_store_memory=10**9, runtime_env={"working_dir": ".", "pip": ["pandas"],
                                                            "env_vars": {"A": "1"}})
    assert list(v.iter_errors(good)) == []
    for bad in (settings(6379), settings("", gpus=1), settings("", runtime_env={"conda": "x"}),
                settings("", connect_timeout=0), {"type": "local"}):
        assert list(v.iter_errors(bad)), bad


def test_resolve_address_forms(monkeypatch, tmp_path):
    assert resolve_address("").kind == "private"
    t = resolve_address("10.1.2.3:6379")
    assert (t.kind, t.init_address, t.host, t.port) == ("gcs", "10.1.2.3:6379", "10.1.2.3", 6379)
    t = resolve_address("ray://head:10001")
    assert (t.kind, t.init_address, t.label) == ("client", "ray://head:10001", "ray://head:10001")
    for bad in ("head", "head:port", "head:0", "http://head:80", "ray://head"):
        with pytest.raises(BackendError, match="is not an address"):
            resolve_address(bad)
    # auto: RAY_ADDRESS first, then the file `ray start` writes
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:7777")
    assert resolve_address("auto").init_address == "127.0.0.1:7777"
    monkeypatch.delenv("RAY_ADDRESS")
    recorded = tmp_path / "ray_current_cluster"
    recorded.write_text("127.0.0.1:8888\n")
    monkeypatch.setattr(addresses, "bootstrap_address_file", lambda: str(recorded))
    assert resolve_address("auto").init_address == "127.0.0.1:8888"
    recorded.unlink()
    with pytest.raises(BackendError, match="no Ray cluster is recorded"):
        resolve_address("auto")


def test_on_this_machine():
    assert addresses.on_this_machine(resolve_address("127.0.0.1:1"))
    assert addresses.on_this_machine(resolve_address("localhost:1"))
    assert addresses.on_this_machine(resolve_address(""))
    assert not addresses.on_this_machine(resolve_address("203.0.113.9:6379"))


def test_runtime_env_ships_the_project_only_to_a_remote_cluster(ctx):
    assert RayBackend(settings("127.0.0.1:6379"), ctx).runtime_env(resolve_address("127.0.0.1:6379")) is None
    remote = resolve_address("203.0.113.9:6379")
    env = RayBackend(settings("203.0.113.9:6379"), ctx).runtime_env(remote)
    assert env == {"working_dir": str(ctx.project_dir), "excludes": [".mlspec/", ".git/", "__pycache__/"]}
    env = RayBackend(settings("203.0.113.9:6379", runtime_env={"working_dir": "src", "pip": ["x"]}), ctx) \
        .runtime_env(remote)
    assert env["working_dir"] == str(ctx.project_dir / "src") and env["pip"] == ["x"]


def test_task_options_map_resources():
    task = make_task(Context(Path("/p"), "/a"), "ok", cpus=0.5, gpus=1, memory=2**30, custom={"licensed": 1})
    assert RayBackend.task_options(task) == {"num_cpus": 0.5, "num_gpus": 1.0, "memory": 2**30,
                                             "resources": {"licensed": 1.0}, "name": task.address}


# --- a dead address never hangs ------------------------------------------------------------------------
def test_dead_address_preflight_health_and_start_fail_fast(ctx):
    b = RayBackend(settings("127.0.0.1:1", connect_timeout=2), ctx)
    t0 = time.monotonic()
    problems = b.preflight([Requirement("step.a", BASE, "conformance_steps")])
    assert problems == ["cannot reach the Ray cluster at 127.0.0.1:1 within 2s (connection refused): start it "
                        "(`ray start --head`) or fix backend.address"]
    assert b.health().startswith("unreachable: cannot reach the Ray cluster at 127.0.0.1:1")
    with pytest.raises(BackendError, match="cannot reach"):
        b.start()
    assert time.monotonic() - t0 < 10


def test_open_port_that_is_not_ray_does_not_hang(tmp_path):
    """ray.init towards a port that accepts TCP but is not a Ray GCS never returns: mlspec gives up.

    In a subprocess: the abandoned ray.init keeps running in its thread, and Ray's core ends that process a
    minute later (which would end pytest)."""
    import socket
    import subprocess
    import sys

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    project = write_project(tmp_path / "project")
    code = f"""
import json, time
import mlspec_ray.addresses as addresses
import mlspec_ray.backend as rb
from mlspec.backends.api import Context, Requirement
rb.INIT_TIMEOUT = 3.0
ctx = Context(project_dir=__import__("pathlib").Path({str(project)!r}), artifacts_url={str(tmp_path / "a")!r})
b = rb.RayBackend({{"type": "ray", "address": "127.0.0.1:{srv.getsockname()[1]}"}}, ctx)
t0 = time.monotonic()
first = b.preflight([Requirement("step.a", {{"cpus": 1}})])
second = b.preflight([Requirement("step.a", {{"cpus": 1}})])
print(json.dumps({{"first": first, "second": second, "took": time.monotonic() - t0}}))
"""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    finally:
        srv.close()
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(answer["first"]) == 1 and "did not complete ray.init within 3s" in answer["first"][0], answer
    assert "still running in this process" in answer["second"][0], answer
    assert answer["took"] < 15


# --- against the real cluster --------------------------------------------------------------------------
def test_preflight_resources_grouped_by_step(ctx, ray_cluster):
    b = RayBackend(settings(ray_cluster.address), ctx)
    reqs = [Requirement(f"step.train[C={c}]", dict(BASE, gpus=2), "conformance_steps") for c in (1, 2)]
    reqs += [Requirement("step.big", dict(BASE, cpus=3, memory=10**15, custom={"tpu": 1}), "conformance_steps"),
             Requirement("step.fine", BASE, "conformance_steps")]
    problems = b.preflight(reqs)
    where = f"the Ray cluster at {ray_cluster.address}"
    assert problems == [
        f"step.train (2 instances) asks for 2 GPUs; {where} has none",
        f"step.big asks for 3 CPUs; the largest node of {where} has 2",
        problems[2],  # memory: the node's size depends on the machine
        f"step.big asks for custom resource 'tpu' (1); {where} has none",
    ]
    assert problems[2].startswith("step.big asks for 931322.6 GiB of memory; the largest node of")
    assert not rb_initialised()  # preflight connected and disconnected


def rb_initialised() -> bool:
    import ray

    return ray.is_initialized()


def test_local_store_with_a_remote_cluster_is_a_preflight_problem(ctx, ray_cluster, monkeypatch):
    monkeypatch.setattr(rb, "on_this_machine", lambda target: target.kind == "private")
    b = RayBackend(settings(ray_cluster.address), ctx)
    problems = b.preflight([Requirement("step.fine", BASE, "conformance_steps")])
    assert problems == [f"the artifact store {ctx.artifacts_url} is a local path, which a remote cluster cannot "
                        "reach: use a shared store (storage.artifacts: s3://...)"]


def test_project_shipped_with_runtime_env_working_dir(tmp_path, ray_cluster):
    """The remote-cluster path: the driver's project path does not exist where the task runs."""
    real = write_project(tmp_path / "real")
    ghost = tmp_path / "not-on-the-cluster"
    ctx = Context(project_dir=ghost, artifacts_url=str(tmp_path / "artifacts"), code_paths=(str(ghost),))
    b = RayBackend(settings(ray_cluster.address, runtime_env={"working_dir": str(real)}), ctx)
    b.start()
    try:
        assert b.preflight([Requirement("step.ok", BASE, "conformance_steps")]) == []
        res = result_of(b.submit(make_task(ctx, "ok", params={"x": 2}, outputs=["result"], metrics=["score"])))
        assert res.status is TaskStatus.SUCCEEDED, res.error
        assert res.metrics == {"score": 2.5}
    finally:
        b.close()


def test_cancel_pending_and_running_tasks(ctx, ray_cluster):
    b = RayBackend(settings(ray_cluster.address), ctx)
    b.start()
    try:
        futures = [b.submit(make_task(ctx, "sleepy", params={"seconds": 60})) for _ in range(3)]  # 2 CPUs
        time.sleep(2)
        t0 = time.monotonic()
        b.cancel_all()
        assert [result_of(f, 15).status for f in futures] == [TaskStatus.CANCELLED] * 3
        assert time.monotonic() - t0 < 10
        # the backend keeps working after a cancel
        res = result_of(b.submit(make_task(ctx, "ok", outputs=["result"], metrics=["score"])))
        assert res.status is TaskStatus.SUCCEEDED, res.error
    finally:
        b.close()


def test_worker_crash_is_a_failed_step(ctx, ray_cluster):
    (ctx.project_dir / "crash.py").write_text("import os\n\ndef die():\n    os._exit(3)\n")
    b = RayBackend(settings(ray_cluster.address), ctx)
    b.start()
    try:
        res = result_of(b.submit(make_task(ctx, "die", module="crash")))
        assert res.status is TaskStatus.FAILED
        assert "the Ray worker running the step died" in res.error, res.error
    finally:
        b.close()


def test_private_local_cluster(ctx, monkeypatch, short_ray_tmpdir):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    b = RayBackend(settings("", num_cpus=1, object_store_memory=100_000_000), ctx)
    assert b.preflight([Requirement("step.a", dict(BASE, cpus=2), "conformance_steps"),
                        Requirement("step.b", BASE, "no_such_module_here")]) == [
        "step.a asks for 2 CPUs; the largest node of the private local Ray cluster (1 CPUs) has 1",
        "module 'no_such_module_here' does not import on the private local Ray cluster (1 CPUs): no such module"]
    assert b.health().startswith("ok: a private local Ray cluster of 1 CPUs")
    b.start()
    try:
        assert b.capacity() == 1
        res = result_of(b.submit(make_task(ctx, "ok", outputs=["result"], metrics=["score"])))
        assert res.status is TaskStatus.SUCCEEDED, res.error
        assert b.health().startswith("ok: 1 CPUs, 0 GPUs at a private local cluster")
    finally:
        b.close()
    assert not rb_initialised()


def test_describe_reports_versions():
    info = RayBackend.describe()
    assert info["type"] == "ray" and info["package"] == "mlspec-ray" and info["ray"].count(".") >= 1
    json.dumps(info)


def test_a_task_ray_refuses_is_a_failed_step(ctx, ray_cluster):
    b = RayBackend(settings(ray_cluster.address), ctx)
    b.start()
    try:
        res = result_of(b.submit(make_task(ctx, "ok", custom={"CPU": 1})))  # a predefined resource name
        assert res.status is TaskStatus.FAILED and res.error.startswith("Ray refused the task"), res.error
    finally:
        b.close()
