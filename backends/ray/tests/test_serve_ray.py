"""Deployments on Ray Serve (mlspec_ray.serve) against a real Ray cluster and a real HTTP client.

One cluster serves the whole session (tests/conftest.py); every test removes what it deployed, and the
removal of the last application shuts Serve down, so the next test may put the proxy on another port.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import threading
import time

import pytest

from mlspec.artifacts import ArtifactStore
from mlspec.backends.api import BackendError, Context, Service
from mlspec_ray.backend import RayBackend
from mlspec_ray.serve import app_name


# --- helpers -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_artifact(store: ArtifactStore, version: int) -> dict:
    """A logistic regression stored as skops: version 1 predicts x1 > 0, version 2 the opposite."""
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
    digest, _ = store.put_bytes(buf.getvalue())
    return {"hash": digest, "format": "skops"}


SIGNATURE = {"inputs": [{"name": "x1", "dtype": "float64"}, {"name": "x2", "dtype": "float64"}],
             "output": {"name": "y", "dtype": "int64"}}


def service(ctx: Context, artifacts: dict, version: int, *, port: int | None, name: str = "churn", replicas: int = 1,
            token: str | None = None, drain: float = 5.0, log: dict | None = None) -> Service:
    """A Service as the deployment kind builds one (mlspec.kinds.deployment.DeploymentKind.service)."""
    config = {"deployment": name, "model": "churn", "version": version, "artifact": artifacts[version],
              "store": {"url": ctx.artifacts_url, "options_env": None}, "signature": SIGNATURE, "log": log,
              "limits": {"max_body_bytes": 1 << 20}, "token_env": "MLSPEC_SERVE_TOKEN" if token else None,
              "drain_seconds": drain}
    env = {"MLSPEC_SERVE_TOKEN": token} if token else {}
    return Service(f"deployment.{name}", name, "test", "churn", version, config, port, replicas, drain, 180.0, env)


def request(port: int, method: str, path: str, body=None, headers=None, conn=None) -> tuple[int, dict]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else {})
    finally:
        if own:
            conn.close()


def predict(port: int, x1: float, conn=None, headers=None) -> tuple[int, dict]:
    return request(port, "POST", "/predict", {"instances": [{"x1": x1, "x2": 0.0}]}, headers, conn)


def infer(port: int, x1: float, conn=None) -> tuple[int, dict]:
    return request(port, "POST", "/v2/models/churn/infer", {"inputs": [
        {"name": "x1", "datatype": "FP64", "shape": [1], "data": [x1]},
        {"name": "x2", "datatype": "FP64", "shape": [1], "data": [0.0]}]}, conn=conn)


def serve_apps() -> list:
    from ray import serve
    from ray.serve.context import _get_global_client

    if _get_global_client(raise_if_no_controller_running=False) is None:
        return []
    return sorted(serve.status().applications)


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Looper:
    """Clients that loop requests until stopped: one on a keep-alive connection, one on a new connection per
    request. Records every failure and the order of the versions that answered."""

    def __init__(self, port: int):
        self.port = port
        self.failures: list = []
        self.versions: list = []
        self.count = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(keep,), daemon=True) for keep in (True, False)]

    def _loop(self, keep_alive: bool) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None and keep_alive:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status, body = infer(self.port, 3.0, conn)
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.failures.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
                continue
            with self._lock:
                self.count += 1
                if status != 200:
                    self.failures.append((status, body))
                    continue
                v = body.get("model_version")
                if not self.versions or self.versions[-1] != v:
                    self.versions.append(v)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Looper":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.count
        while self.count < start + n and time.monotonic() < deadline:
            time.sleep(0.05)


# --- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Context:
    base = tmp_path_factory.mktemp("serve")
    project = base / "project"
    project.mkdir()
    return Context(project_dir=project, artifacts_url=str(base / "artifacts"), code_paths=(str(project),))


@pytest.fixture(scope="module")
def artifacts(ctx) -> dict:
    store = ArtifactStore(ctx.artifacts_url)
    return {v: model_artifact(store, v) for v in (1, 2)}


@pytest.fixture
def backend(ctx, ray_cluster):
    b = RayBackend({"type": "ray", "location": "local", "address": ray_cluster.address,
                    "serve": {"replica_cpus": 0.25}}, ctx)
    b.start()
    records: list = []
    b.test_records = records  # what the test deployed: removed at the end whatever happens
    yield b
    for rec in reversed(records):
        try:
            b.remove_service(rec)
        except Exception:  # noqa: BLE001 - teardown: the test already failed if it matters
            pass
    b.close()


# --- tests ---------------------------------------------------------------------------------------------
def test_the_ray_backend_serves_models():
    assert RayBackend.supports_services is True
    info = RayBackend.describe()
    assert info["services"] is True and info["api_version"] >= 2


def test_deploy_serves_the_local_http_api_then_remove_leaves_nothing(backend, ctx, artifacts):
    port = free_port()
    rec = backend.deploy_service(service(ctx, artifacts, 1, port=port))
    backend.test_records.append(rec)
    assert json.loads(json.dumps(rec)) == rec  # plain JSON: it goes to the state
    assert rec["port"] == port and rec["app"] == app_name("test", "churn") and rec["version"] == 1
    assert rec["app"] in serve_apps()
    # ready when deploy_service returned: the same endpoints as the local service
    assert request(port, "GET", "/v2/health/ready")[0] == 200
    assert request(port, "GET", "/v2/health/live")[0] == 200
    status, body = predict(port, 3.0)
    assert status == 200 and body == {"predictions": [1]}, body
    status, body = infer(port, -3.0)
    assert status == 200 and body["outputs"][0]["data"] == [0] and body["model_version"] == "1", body
    status, body = request(port, "GET", "/v2/models/churn")
    assert status == 200 and body["versions"] == ["1"], body
    # the request validation of mlspec.serve, unchanged behind Serve's proxy
    status, body = request(port, "POST", "/predict", {"instances": [{"x1": "three", "x2": 0.0}]})
    assert status == 422 and "x1" in body["error"], body
    status, body = request(port, "GET", "/nope")
    assert status == 404 and "/predict" in body["error"], body

    st = backend.service_status(rec)
    assert st.state == "running" and st.version == 1 and st.port == port, st
    assert len(st.replicas) == 1 and st.replicas[0]["version"] == 1

    backend.remove_service(rec)
    assert rec["app"] not in serve_apps()
    assert port_closed(port), "the Serve proxy still listens after the last application was removed"
    assert backend.service_status(rec).state == "gone"
    backend.remove_service(rec)  # removing a gone service is no error


def test_update_and_rollback_lose_no_request(backend, ctx, artifacts):
    """The acceptance: a client loops requests through an update (1 -> 2) and a rollback (2 -> 1) on Serve's
    in-place upgrade; no request fails, and the version that answers changes each time."""
    port = free_port()
    rec1 = backend.deploy_service(service(ctx, artifacts, 1, port=port))
    backend.test_records.append(rec1)
    with Looper(port) as looper:
        looper.wait_for(20)
        rec2 = backend.update_service(rec1, service(ctx, artifacts, 2, port=port))
        looper.wait_for(20)
        assert looper.versions[-1] == "2", looper.versions  # every replica serves 2 when update returned
        rec3 = backend.update_service(rec2, service(ctx, artifacts, 1, port=port))
        looper.wait_for(20)
    backend.test_records[:] = [rec3]
    assert looper.failures == [], looper.failures[:5]
    assert looper.versions == ["1", "2", "1"], looper.versions
    assert looper.count > 60
    assert rec2["version"] == 2 and rec3["version"] == 1 and rec3["port"] == port
    assert infer(port, 3.0)[1]["outputs"][0]["data"] == [1]
    st = backend.service_status(rec3)
    assert st.state == "running" and st.version == 1, st


def test_replicas_are_serve_replicas_and_scale_in_place(backend, ctx, artifacts):
    port = free_port()
    rec = backend.deploy_service(service(ctx, artifacts, 1, port=port, replicas=2))
    backend.test_records.append(rec)
    st = backend.service_status(rec)
    assert st.state == "running" and len(st.replicas) == 2, st
    assert len({r["pid"] for r in st.replicas}) == 2
    with Looper(port) as looper:
        looper.wait_for(10)
        rec = backend.update_service(rec, service(ctx, artifacts, 1, port=port, replicas=1))
        looper.wait_for(10)
    backend.test_records[:] = [rec]
    assert looper.failures == [], looper.failures[:5]
    st = backend.service_status(rec)
    assert st.state == "running" and len(st.replicas) == 1, st


def test_a_crashed_replica_is_replaced_by_serve(backend, ctx, artifacts):
    port = free_port()
    rec = backend.deploy_service(service(ctx, artifacts, 1, port=port))
    backend.test_records.append(rec)
    pid = backend.service_status(rec).replicas[0]["pid"]
    os.kill(pid, signal.SIGKILL)  # the replica's actor process on this machine (the cluster is local)
    deadline = time.monotonic() + 120
    st = backend.service_status(rec)
    while time.monotonic() < deadline:
        st = backend.service_status(rec)
        if st.state == "running" and st.replicas and st.replicas[0]["pid"] != pid:
            break
        time.sleep(1)
    assert st.state == "running" and st.replicas[0]["pid"] != pid, st
    assert predict(port, 3.0) == (200, {"predictions": [1]})


def test_a_deleted_application_is_gone(backend, ctx, artifacts):
    """What `mlspec refresh` sees after someone deleted the application by hand (`serve delete`)."""
    from ray import serve

    port = free_port()
    rec = backend.deploy_service(service(ctx, artifacts, 1, port=port))
    backend.test_records.append(rec)
    serve.delete(rec["app"])
    st = backend.service_status(rec)
    assert st.state == "gone" and rec["app"] in st.detail, st
    backend.remove_service(rec)


def test_bearer_token(backend, ctx, artifacts):
    port = free_port()
    rec = backend.deploy_service(service(ctx, artifacts, 1, port=port, token="s3cret-token"))
    backend.test_records.append(rec)
    assert "s3cret-token" not in json.dumps(rec)
    assert predict(port, 3.0)[0] == 401
    assert predict(port, 3.0, headers={"Authorization": "Bearer s3cret-token"}) == (200, {"predictions": [1]})
    assert request(port, "GET", "/v2/health/ready")[0] == 200  # health needs no token


def test_the_request_log_is_written_by_the_replicas(backend, ctx, artifacts, tmp_path):
    """Inputs and predictions go to the request log under the artifact store, as from the local worker; a
    replica stopped by Serve (the rollout, the removal) flushes what it holds."""
    from mlspec.serve.reqlog import read_requests

    port = free_port()
    log_url = str(tmp_path / "requests")
    log = {"url": log_url, "options_env": None, "max_bytes": 1 << 20, "flush_rows": 1000, "flush_seconds": 60}
    rec = backend.deploy_service(service(ctx, artifacts, 1, port=port, log=log))
    backend.test_records.append(rec)
    for x1 in (1.0, -2.0, 3.0):
        assert predict(port, x1)[0] == 200
    rec = backend.update_service(rec, service(ctx, artifacts, 2, port=port, log=log))
    backend.test_records[:] = [rec]
    assert predict(port, 4.0)[0] == 200
    backend.remove_service(rec)
    rows = read_requests(log_url)
    assert list(rows["x1"]) == [1.0, -2.0, 3.0, 4.0], rows
    assert list(rows["_version"].astype(str)) == ["1", "1", "1", "2"] and list(rows["_prediction"]) == [1, 0, 1, 0]


def test_one_serve_port_per_cluster(backend, ctx, artifacts):
    """Serve has one HTTP port per cluster and every deployment takes route prefix /: a second deployment is
    refused with one line naming the first (another port) or the application holding / (the same port)."""
    port = free_port()
    rec = backend.deploy_service(service(ctx, artifacts, 1, port=port))
    backend.test_records.append(rec)
    other = free_port()
    with pytest.raises(BackendError) as e:
        backend.deploy_service(service(ctx, artifacts, 1, port=other, name="other"))
    assert f"port {other}" in e.value.message and f"port {port}" in e.value.message, e.value.message
    with pytest.raises(BackendError) as e:
        backend.deploy_service(service(ctx, artifacts, 1, port=port, name="other"))
    assert rec["app"] in e.value.message and "route prefix /" in e.value.message, e.value.message
    assert serve_apps() == [rec["app"]]
    assert predict(port, 3.0) == (200, {"predictions": [1]})


def test_a_model_that_does_not_load_fails_in_one_line_and_leaves_nothing(backend, ctx, artifacts):
    port = free_port()
    broken = dict(artifacts)
    broken[1] = {"hash": "0" * 64, "format": "skops"}
    with pytest.raises(BackendError) as e:
        backend.deploy_service(service(ctx, broken, 1, port=port))
    assert "could not start" in e.value.message and "\n" not in e.value.message, e.value.message
    assert serve_apps() == []
    assert port_closed(port)


def test_a_failed_update_keeps_the_old_version_serving(backend, ctx, artifacts):
    """An update to a version that does not load fails the call; Serve keeps the old replicas (surge: they are
    stopped only once replacements run), so clients see no failure; refresh says degraded (the next apply
    rolls out again, without downtime)."""
    port = free_port()
    rec = backend.deploy_service(service(ctx, artifacts, 1, port=port))
    backend.test_records.append(rec)
    broken = dict(artifacts)
    broken[2] = {"hash": "f" * 64, "format": "skops"}
    with Looper(port) as looper:
        looper.wait_for(10)
        with pytest.raises(BackendError) as e:
            backend.update_service(rec, service(ctx, broken, 2, port=port))
        looper.wait_for(10)
    assert "could not start" in e.value.message, e.value.message
    assert looper.failures == [] and looper.versions == ["1"], (looper.failures[:5], looper.versions)
    st = backend.service_status(rec)
    assert st.state == "degraded" and st.version == 1 and "still serve" in st.detail, st
    rec = backend.update_service(rec, service(ctx, artifacts, 1, port=port))  # what the next apply does
    backend.test_records[:] = [rec]
    assert backend.service_status(rec).state == "running"


def test_port_in_use_is_refused(backend, ctx, artifacts):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(BackendError) as e:
            backend.deploy_service(service(ctx, artifacts, 1, port=port))
    assert f"127.0.0.1:{port}" in e.value.message and "in use" in e.value.message


def test_a_private_cluster_cannot_serve(ctx, artifacts):
    b = RayBackend({"type": "ray", "address": ""}, ctx)
    with pytest.raises(BackendError) as e:
        b.deploy_service(service(ctx, artifacts, 1, port=free_port()))
    assert "outlives the apply" in e.value.message and "address" in e.value.hint
