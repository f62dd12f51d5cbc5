"""The backend conformance suite: one set of tests that every backend passes, ours and third parties'.

Subclass :class:`BackendConformance` in a test module and provide a ``backend`` fixture that yields a
started backend built with the suite's ``conformance_context`` (a temporary project holding a module of
step functions the suite writes itself, and a temporary artifact store)::

    from mlspec.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self, conformance_context):
            b = MyBackend({"type": "mine"}, conformance_context)
            b.start()
            yield b
            b.close()

The suite checks what the executor relies on: results and stored outputs, errors, timeouts, cancellation
(no process left behind), logs, large outputs, `cmd:` steps, step environment, inputs from the store,
code changes being picked up, resources and preflight, and that ``capacity()`` tasks run at once.
Tasks are built the way :meth:`mlspec.executor.Executor.payload` builds them (see :func:`make_payload`).

Class attributes tune it for a backend: ``has_gpus`` (skip the "no GPU" preflight check),
``checks_modules`` (preflight reports a module that does not import), ``max_concurrency_checked``.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Mapping

import pytest

from mlspec.artifacts import ArtifactStore
from mlspec.procs import process_alive  # noqa: F401  (re-exported for backend test suites)
from mlspec.backends.api import Backend, Context, Requirement, Task, TaskResult, TaskStatus
from mlspec.hashing import hash_bytes

STEPS_MODULE = "conformance_steps"

STEPS_SOURCE = '''\
"""Step functions of the mlspec backend conformance suite (written by mlspec.testing)."""
import os
import threading
import sys
import time


def _write_pid(pid_file):
    if pid_file:
        tmp = pid_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(tmp, pid_file)


def ok(x: int = 1):
    return {"result": {"x": x, "doubled": 2 * x}, "score": 0.5 + x}


def boom():
    raise ValueError("boom")


def sleepy(seconds: float = 30.0, pid_file: str = ""):
    _write_pid(pid_file)
    time.sleep(seconds)
    return {}


def big(mb: int = 50):
    return {"blob": bytes(range(256)) * 4096 * mb}


def noisy():
    print("conformance line on stdout", flush=True)
    print("conformance line on stderr", file=sys.stderr, flush=True)
    os.write(1, b"conformance raw write to fd 1\\n")
    return {}


def cpu_report(seconds: float = 1.5, tag: str = ""):
    started = time.time()
    time.sleep(seconds)
    return {"started": started, "finished": time.time(), "pid": os.getpid()}


def flaky(marker: str):
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("failed once")
        raise RuntimeError("flaky: the first attempt fails")
    return {"attempts": 2}


def from_env():
    return {"value": float(os.environ["MLSPEC_CONFORMANCE_VALUE"])}


def size_of(blob):
    with open(blob, "rb") as fh:
        data = fh.read()
    return {"size": len(data), "first": data[0]}
'''

VERSION_MODULE = "conformance_version"


def big_bytes(mb: int = 50) -> bytes:
    """What ``conformance_steps.big(mb)`` returns, to check the stored hash against."""
    return bytes(range(256)) * 4096 * mb


def write_project(project_dir: Path) -> Path:
    """Write the suite's step module into a project directory (created if needed)."""
    project_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / f"{STEPS_MODULE}.py").write_text(STEPS_SOURCE, encoding="utf-8")
    (project_dir / "mlspec.yaml").write_text("project: conformance\n", encoding="utf-8")
    return project_dir


def make_payload(ctx: Context, address: str = "step.conformance", *, run: str = "", cmd: str = "",
                 params: Mapping | None = None, inputs: Mapping | None = None, outputs=(), metrics=(),
                 env: Mapping | None = None) -> dict:
    """A runner task dict shaped like the step kind's (mlspec.kinds.step.StepKind.payload)."""
    from mlspec import __version__
    from mlspec.backends.api import TASK_FORMAT_VERSION

    return {"format_version": TASK_FORMAT_VERSION, "mlspec_version": __version__, "address": address, "run": run, "cmd": cmd, "params": dict(params or {}),
            "inputs": dict(inputs or {}), "outputs": list(outputs), "metrics": list(metrics),
            "project_dir": str(ctx.project_dir), "code_paths": list(ctx.code_paths or (str(ctx.project_dir),)),
            "artifacts": {"url": ctx.artifacts_url, "options": dict(ctx.artifacts_options)},
            "env": dict(env or {})}


_ids = itertools.count(1)


def make_task(ctx: Context, func: str = "", *, cmd: str = "", params: Mapping | None = None, outputs=(),
              metrics=(), inputs: Mapping | None = None, env: Mapping | None = None, cpus: float = 1,
              gpus: float = 0, memory: int | None = None, custom: Mapping | None = None,
              timeout: float | None = None, address: str | None = None, module: str = STEPS_MODULE) -> Task:
    """A Task running ``module:func`` (or ``cmd``) with the given params, outputs and resources."""
    n = next(_ids)
    address = address or f"step.{func or 'cmd'}_{n}"
    payload = make_payload(ctx, address, run=f"{module}:{func}" if func else "", cmd=cmd, params=params,
                           inputs=inputs, outputs=outputs, metrics=metrics, env=env)
    resources = {"cpus": cpus, "gpus": gpus, "memory": memory, "custom": dict(custom or {})}
    return Task(f"conformance:{address}:{n}", address, payload, resources, timeout)


def result_of(future: Future, timeout: float = 120.0) -> TaskResult:
    res = future.result(timeout=timeout)
    assert isinstance(res, TaskResult), f"the future resolved to {type(res).__name__}, not a TaskResult"
    return res


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _explain(res: TaskResult) -> str:
    log = (res.log or "").strip().splitlines()[-15:]
    return f"status={res.status.value} error={res.error!r}\n" + "\n".join(log)


class BackendConformance:
    """What every mlspec backend must do. Subclass it and provide a ``backend`` fixture (see the module doc)."""

    #: the backend has GPUs, so a one-GPU requirement is not a preflight problem
    has_gpus: bool = False
    #: preflight reports a `run:` module that does not import in the target environment
    checks_modules: bool = False
    #: the concurrency test submits min(capacity, this) tasks
    max_concurrency_checked: int = 8
    #: seconds a timed-out or cancelled task may take to resolve
    stop_within: float = 10.0

    # fixtures ---------------------------------------------------------------------------------------
    @pytest.fixture
    def conformance_context(self, tmp_path) -> Context:
        project = write_project(tmp_path / "project")
        artifacts = tmp_path / "artifacts"
        return Context(project_dir=project, artifacts_url=str(artifacts), artifacts_options={},
                       code_paths=(str(project),))

    @pytest.fixture
    def store(self, conformance_context) -> ArtifactStore:
        return ArtifactStore(conformance_context.artifacts_url, conformance_context.artifacts_options)

    @pytest.fixture
    def backend(self, conformance_context):  # pragma: no cover - subclasses provide it
        pytest.fail(f"{type(self).__name__} must override the `backend` fixture (yield a started Backend)")

    # identity and health ----------------------------------------------------------------------------
    def test_describe_capacity_health(self, backend: Backend):
        assert isinstance(backend, Backend)
        assert backend.type and backend.describe()["type"] == backend.type
        assert isinstance(backend.capacity(), int) and backend.capacity() >= 1
        health = backend.health()
        assert isinstance(health, str) and health.startswith("ok"), health

    # results ----------------------------------------------------------------------------------------
    def test_success_stores_outputs(self, backend, conformance_context, store):
        task = make_task(conformance_context, "ok", params={"x": 3}, outputs=["result"], metrics=["score"])
        res = result_of(backend.submit(task))
        assert res.status is TaskStatus.SUCCEEDED, _explain(res)
        assert res.metrics == {"score": 3.5}
        out = res.outputs["result"]
        assert out["format"] == "json" and out["hash"].startswith("xxh128:")
        assert store.has(out["hash"])
        assert json.loads(store.read_bytes(out["hash"])) == {"x": 3, "doubled": 6}
        assert res.duration >= 0

    def test_failure_is_reported(self, backend, conformance_context):
        res = result_of(backend.submit(make_task(conformance_context, "boom")))
        assert res.status is TaskStatus.FAILED
        assert "ValueError: boom" in res.error
        assert not res.outputs

    def test_timeout(self, backend, conformance_context, tmp_path):
        pid_file = str(tmp_path / "timeout.pid")
        task = make_task(conformance_context, "sleepy", params={"seconds": 30, "pid_file": pid_file}, timeout=1)
        t0 = time.monotonic()
        res = result_of(backend.submit(task), timeout=60)
        took = time.monotonic() - t0
        assert res.status is TaskStatus.TIMED_OUT, _explain(res)
        assert took < self.stop_within, f"a 1 s timeout took {took:.1f}s to resolve"
        if os.path.exists(pid_file):
            pid = int(Path(pid_file).read_text())
            assert wait_until(lambda: not process_alive(pid), self.stop_within), \
                f"the timed-out step's process {pid} is still alive"

    def test_failed_task_can_be_resubmitted(self, backend, conformance_context, tmp_path):
        marker = str(tmp_path / "flaky.marker")
        task = make_task(conformance_context, "flaky", params={"marker": marker}, metrics=["attempts"])
        first = result_of(backend.submit(task))
        assert first.status is TaskStatus.FAILED and "RuntimeError" in first.error, _explain(first)
        again = Task(task.id + ":retry", task.address, task.payload, task.resources, task.timeout)
        second = result_of(backend.submit(again))
        assert second.status is TaskStatus.SUCCEEDED, _explain(second)
        assert second.metrics == {"attempts": 2.0}
        # and the backend is still healthy
        res = result_of(backend.submit(make_task(conformance_context, "ok", outputs=["result"], metrics=["score"])))
        assert res.status is TaskStatus.SUCCEEDED, _explain(res)

    def test_task_of_another_format_fails_naming_both_versions(self, backend, conformance_context):
        task = make_task(conformance_context, "ok", outputs=["result"], metrics=["score"])
        payload = dict(task.payload, format_version=999, mlspec_version="9.9.9")
        res = result_of(backend.submit(Task(task.id + ":v", task.address, payload, task.resources, task.timeout)))
        assert res.status is TaskStatus.FAILED, _explain(res)
        assert "9.9.9" in res.error and "task format 999" in res.error, _explain(res)

    def test_cancel_all(self, backend, conformance_context, tmp_path):
        n = min(2, backend.capacity())
        pid_files = [str(tmp_path / f"cancel{i}.pid") for i in range(n)]
        futures = [backend.submit(make_task(conformance_context, "sleepy", params={"seconds": 60, "pid_file": p}))
                   for p in pid_files]
        assert wait_until(lambda: all(os.path.exists(p) for p in pid_files), 60), "the sleeping steps never started"
        pids = [int(Path(p).read_text()) for p in pid_files]
        t0 = time.monotonic()
        backend.cancel_all()
        results = [result_of(f, timeout=self.stop_within + 5) for f in futures]
        took = time.monotonic() - t0
        assert [r.status for r in results] == [TaskStatus.CANCELLED] * n, [_explain(r) for r in results]
        assert took < self.stop_within, f"cancel_all took {took:.1f}s to resolve the futures"
        for pid in pids:
            assert wait_until(lambda: not process_alive(pid), self.stop_within), \
                f"the cancelled step's process {pid} is still alive"

    def test_large_output(self, backend, conformance_context, store):
        res = result_of(backend.submit(make_task(conformance_context, "big", params={"mb": 50}, outputs=["blob"])),
                        timeout=300)
        assert res.status is TaskStatus.SUCCEEDED, _explain(res)
        out = res.outputs["blob"]
        expected = big_bytes(50)
        assert out["size"] == len(expected) == 50 * 2**20
        assert out["hash"] == hash_bytes(expected)
        assert out["format"] == "bytes"
        assert store.has(out["hash"])

    def test_logs(self, backend, conformance_context):
        res = result_of(backend.submit(make_task(conformance_context, "noisy")))
        assert res.status is TaskStatus.SUCCEEDED, _explain(res)
        for line in ("conformance line on stdout", "conformance line on stderr", "conformance raw write to fd 1"):
            assert line in res.log, f"{line!r} missing from the log:\n{res.log}"

    def test_failure_log_has_traceback(self, backend, conformance_context):
        res = result_of(backend.submit(make_task(conformance_context, "boom")))
        assert res.status is TaskStatus.FAILED
        assert "Traceback" in res.log and "ValueError: boom" in res.log, res.log

    def test_cmd_step(self, backend, conformance_context, store):
        cmd = "printf 'hello %s' ${params.who} > ${outputs.x} && echo cmd-ran && echo cmd-err >&2"
        task = make_task(conformance_context, cmd=cmd, params={"who": "world"}, outputs=["x"])
        res = result_of(backend.submit(task))
        assert res.status is TaskStatus.SUCCEEDED, _explain(res)
        assert res.outputs["x"]["hash"] == hash_bytes(b"hello world")
        assert store.has(res.outputs["x"]["hash"])
        assert "cmd-ran" in res.log and "cmd-err" in res.log, res.log

    def test_failing_cmd(self, backend, conformance_context):
        res = result_of(backend.submit(make_task(conformance_context, cmd="exit 3", outputs=["x"])))
        assert res.status is TaskStatus.FAILED
        assert "code 3" in res.error

    def test_step_env(self, backend, conformance_context):
        task = make_task(conformance_context, "from_env", metrics=["value"], env={"MLSPEC_CONFORMANCE_VALUE": "42"})
        res = result_of(backend.submit(task))
        assert res.status is TaskStatus.SUCCEEDED, _explain(res)
        assert res.metrics == {"value": 42.0}
        assert "MLSPEC_CONFORMANCE_VALUE" not in os.environ  # nothing leaks into mlspec's own process

    def test_inputs_from_store(self, backend, conformance_context, store):
        digest, size = store.put_bytes(b"\x07" * 1000)
        task = make_task(conformance_context, "size_of", inputs={"blob": {"hash": digest, "format": "bytes"}},
                         metrics=["size", "first"])
        res = result_of(backend.submit(task))
        assert res.status is TaskStatus.SUCCEEDED, _explain(res)
        assert res.metrics == {"size": 1000.0, "first": 7.0}

    def test_code_changes_are_picked_up(self, backend, conformance_context):
        """A backend that keeps workers warm must not run a stale copy of the project's code."""
        mod = Path(conformance_context.project_dir) / f"{VERSION_MODULE}.py"
        results = []
        for version in (1, 22):
            mod.write_text(f"def version():\n    return {{'v': {version}}}\n", encoding="utf-8")
            task = make_task(conformance_context, "version", module=VERSION_MODULE, metrics=["v"])
            res = result_of(backend.submit(task))
            assert res.status is TaskStatus.SUCCEEDED, _explain(res)
            results.append(res.metrics["v"])
        assert results == [1.0, 22.0]

    # resources --------------------------------------------------------------------------------------
    def test_resources_and_preflight(self, backend, conformance_context):
        res = result_of(backend.submit(make_task(conformance_context, "ok", cpus=1, outputs=["result"],
                                                 metrics=["score"])))
        assert res.status is TaskStatus.SUCCEEDED, _explain(res)
        base = {"cpus": 1, "gpus": 0, "memory": None, "custom": {}}
        assert backend.preflight([Requirement("step.fine", dict(base), STEPS_MODULE)]) == []
        problems = backend.preflight([Requirement("step.huge", dict(base, cpus=1000), STEPS_MODULE)])
        assert len(problems) == 1 and "step.huge" in problems[0], problems
        if not self.has_gpus:
            problems = backend.preflight([Requirement("step.gpu", dict(base, gpus=1), STEPS_MODULE)])
            assert len(problems) == 1 and "step.gpu" in problems[0] and "GPU" in problems[0], problems
        assert all(isinstance(p, str) and "\n" not in p for p in problems)

    def test_preflight_reports_missing_module(self, backend):
        if not self.checks_modules:
            pytest.skip("this backend does not check imports at preflight")
        base = {"cpus": 1, "gpus": 0, "memory": None, "custom": {}}
        problems = backend.preflight([Requirement("step.nomod", base, "no_such_module_for_conformance")])
        assert len(problems) == 1 and "no_such_module_for_conformance" in problems[0], problems

    def test_concurrency_up_to_capacity(self, backend, conformance_context):
        n = min(backend.capacity(), self.max_concurrency_checked)
        if n < 2:
            pytest.skip("capacity 1: nothing runs at once")
        # warm up (worker pools, imports), so that start-up cost does not hide or fake the overlap
        warm = [backend.submit(make_task(conformance_context, "cpu_report", params={"seconds": 0.1},
                                         metrics=["started", "finished", "pid"])) for _ in range(n)]
        for f in warm:
            assert result_of(f).status is TaskStatus.SUCCEEDED
        futures = [backend.submit(make_task(conformance_context, "cpu_report", params={"seconds": 1.5, "tag": i},
                                            metrics=["started", "finished", "pid"], cpus=1)) for i in range(n)]
        results = [result_of(f) for f in futures]
        for r in results:
            assert r.status is TaskStatus.SUCCEEDED, _explain(r)
        starts = [r.metrics["started"] for r in results]
        ends = [r.metrics["finished"] for r in results]
        # every task was running at the instant the last one started
        assert max(starts) < min(ends), f"the {n} tasks did not overlap: starts {starts}, ends {ends}"
        assert len({r.metrics["pid"] for r in results}) == n


__all__ = ["BackendConformance", "make_payload", "make_task", "write_project", "process_alive", "wait_until",
           "big_bytes", "result_of", "STEPS_MODULE", "STEPS_SOURCE"]


# --- services (backend API 2) --------------------------------------------------------------------------
def make_model_artifact(store: ArtifactStore, version: int = 1) -> tuple[dict, dict]:
    """A small scikit-learn model stored as skops in ``store``: (artifact {"hash", "format"}, signature). Version
    1 predicts ``x1 > 0``, version 2 the opposite, so a client can tell which version answered."""
    import io

    import numpy as np
    import pandas as pd
    import skops.io
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(version)
    x = pd.DataFrame({"x1": rng.normal(size=200), "x2": rng.normal(size=200)})
    y = (x["x1"] > 0).astype("int64")
    model = LogisticRegression().fit(x, y if version % 2 else 1 - y)
    buf = io.BytesIO()
    skops.io.dump(model, buf)
    digest, _size = store.put_bytes(buf.getvalue())
    signature = {"from": "conformance", "step": "conformance", "target_known": True,
                 "inputs": [{"name": "x1", "dtype": "float64"}, {"name": "x2", "dtype": "float64"}],
                 "output": {"name": "y", "dtype": "int64"}}
    return {"hash": digest, "format": "skops"}, signature


def make_service(ctx: Context, artifact: Mapping, signature: Mapping, version: int, *, name: str = "conformance",
                 port: int | None = None, replicas: int = 1, drain_seconds: float = 5.0):
    """A Service as the deployment kind builds one (see mlspec.kinds.deployment.DeploymentKind.service)."""
    from mlspec.backends.api import Service

    config = {"deployment": name, "model": "conf-model", "version": version, "artifact": dict(artifact),
              "store": {"url": ctx.artifacts_url, "options_env": None}, "signature": dict(signature), "log": None,
              "limits": {"max_body_bytes": 1 << 20}, "token_env": None, "drain_seconds": drain_seconds}
    return Service(f"deployment.{name}", name, "conformance", "conf-model", version, config, port, replicas,
                   drain_seconds, 120.0, {})


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:PORT."""
    import socket

    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LoopingClient(threading.Thread):
    """A real HTTP client sending requests without pause (``send()`` -> (status, JSON body)) until
    :meth:`finish`; it counts the answers, keeps every failure, and the model versions that answered, in order
    (a rollout under traffic: ``client.failures == []`` and ``client.versions == [1, 2]``)."""

    def __init__(self, send: Callable[[], tuple], linger: float = 0.3):
        super().__init__(daemon=True)
        self.send, self.linger = send, linger
        self.halt, self.ok, self.failures, self.versions = threading.Event(), 0, [], []

    def run(self):
        import http.client

        while not self.halt.is_set():
            try:
                status, body = self.send()
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                continue
            if status != 200:
                self.failures.append((status, body))
                continue
            self.ok += 1
            if not self.versions or self.versions[-1] != body.get("model_version"):
                self.versions.append(body.get("model_version"))

    def finish(self, timeout: float = 60.0) -> "LoopingClient":
        time.sleep(self.linger)  # some requests after the switch too
        self.halt.set()
        self.join(timeout)
        return self


def http_json(port: int, method: str, path: str, body=None, timeout: float = 10.0) -> tuple[int, dict]:
    """One request on a new connection to 127.0.0.1:PORT; (status, JSON body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else {}
    finally:
        conn.close()


class ServiceConformance:
    """What a backend that serves models (``supports_services``) must do: the service part of the suite.

    Subclass it with a ``service_backend`` fixture that yields a started backend built with the suite's
    ``service_context``, and implement :meth:`kill_service` (kill a recorded service's processes by hand,
    the way an operator or a crash would)::

        class TestMyServices(ServiceConformance):
            @pytest.fixture
            def service_backend(self, service_context):
                b = MyBackend({"type": "mine"}, service_context)
                b.start()
                yield b
                b.close()

            def kill_service(self, record):
                ...

    It checks: create (ready when deploy_service returns) and health, predictions over HTTP, a rolling
    update under a looping client with no failed request, N replicas, status after the service was killed
    (``gone``), and remove (no process answers, the port is closed; removing again is no error).
    """

    @pytest.fixture
    def service_context(self, tmp_path) -> Context:
        project = tmp_path / "project"
        project.mkdir()
        return Context(project_dir=project, artifacts_url=str(tmp_path / "artifacts"), artifacts_options={},
                       code_paths=(str(project),))

    @pytest.fixture
    def models(self, service_context) -> dict:
        store = ArtifactStore(service_context.artifacts_url)
        return {v: make_model_artifact(store, v) for v in (1, 2)}

    @pytest.fixture
    def service_backend(self, service_context):  # pragma: no cover - subclasses provide it
        pytest.fail(f"{type(self).__name__} must override the `service_backend` fixture")

    @pytest.fixture
    def deployed(self, service_backend, service_context, models):
        """A service of version 1 on a free port; removed at the end whatever happens."""
        records = []
        svc = make_service(service_context, *models[1], 1, port=free_port())
        records.append(service_backend.deploy_service(svc))
        yield service_backend, svc, records
        for rec in reversed(records):
            try:
                service_backend.remove_service(rec)
            except Exception:  # noqa: BLE001 - teardown: the test already failed if it matters
                pass

    def kill_service(self, record: Mapping) -> None:  # pragma: no cover - subclasses provide it
        pytest.fail(f"{type(self).__name__} must implement kill_service(record)")

    @staticmethod
    def predict(port: int, x1: float) -> tuple[int, dict]:
        return http_json(port, "POST", "/v2/models/conf-model/infer", {"inputs": [
            {"name": "x1", "datatype": "FP64", "shape": [1], "data": [x1]},
            {"name": "x2", "datatype": "FP64", "shape": [1], "data": [0.0]}]})

    def test_backend_says_it_serves(self, service_backend):
        assert service_backend.supports_services is True
        assert service_backend.describe()["api_version"] >= 2 and service_backend.describe()["services"] is True

    def test_create_health_predict(self, deployed):
        backend, svc, records = deployed
        rec = records[0]
        port = rec["port"]
        assert port == svc.port
        assert http_json(port, "GET", "/v2/health/ready")[0] == 200  # ready when deploy_service returned
        status, body = self.predict(port, 3.0)
        assert status == 200 and body["outputs"][0]["data"] == [1] and body["model_version"] == "1", body
        st = backend.service_status(rec)
        assert st.state == "running" and st.version == 1 and st.port == port, st
        assert json.loads(json.dumps(rec)) == rec  # the record is plain JSON (it goes to the state)

    def test_rolling_update_loses_no_request(self, deployed, models):
        backend, svc, records = deployed
        port = records[0]["port"]
        client = LoopingClient(lambda: self.predict(port, 3.0))
        client.start()
        time.sleep(0.3)
        new = make_service(ctx_of(svc), *models[2], 2, port=svc.port)
        rec2 = backend.update_service(records[0], new)
        records.append(rec2)
        client.finish(30)
        failures, versions = client.failures, client.versions
        assert failures == [], failures[:5]
        assert versions[0] == "1" and versions[-1] == "2", versions
        assert rec2["port"] == port and self.predict(port, 3.0)[1]["outputs"][0]["data"] == [0]
        assert backend.service_status(rec2).version == 2

    def test_replicas(self, service_backend, service_context, models):
        svc = make_service(service_context, *models[1], 1, name="replicated", port=free_port(), replicas=2)
        rec = service_backend.deploy_service(svc)
        try:
            st = service_backend.service_status(rec)
            assert st.state == "running" and len(st.replicas) == 2, st
            assert len({r["pid"] for r in st.replicas}) == 2
        finally:
            service_backend.remove_service(rec)

    def test_status_after_a_kill_and_remove(self, deployed):
        backend, svc, records = deployed
        rec = records[0]
        self.kill_service(rec)
        assert wait_until(lambda: backend.service_status(rec).state == "gone", 15), backend.service_status(rec)
        backend.remove_service(rec)  # removing a gone service is no error, and cleans up after it

    def test_remove_leaves_no_port(self, deployed):
        import socket

        backend, svc, records = deployed
        rec = records.pop()
        backend.remove_service(rec)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", rec["port"])) != 0, "the port still accepts connections"
        assert backend.service_status(rec).state == "gone"
        backend.remove_service(rec)  # twice: no error


def ctx_of(svc) -> Context:
    """The context a service was made with (its store URL is in the worker config)."""
    return Context(project_dir=Path("."), artifacts_url=svc.config["store"]["url"])
