"""Deployments end to end through the CLI: apply serves the alias's version on a fixed port; real HTTP clients
get predictions (and a 422 naming a missing column); a promoted version and a rollback roll out while a client
sends requests without pause (0 failed); a service killed by hand is seen by `refresh`, planned as a recreate
and recreated by `apply`; `destroy` leaves no process and a closed port."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time

import pytest

from conftest import Project
from mlspec.procs import process_alive
from mlspec.testing import LoopingClient, free_port, port_open

STEPS = '''
import numpy as np
import pandas as pd


def prepare(rows: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    return {"train": pd.DataFrame({"x1": x1, "x2": x2, "y": (x1 + 0.5 * x2 > 0).astype("int64")})}


def train(train, C: float, score: float, target: str = "y"):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C).fit(train[["x1", "x2"]], train[target])
    return {"model": model, "roc_auc": score}
'''

SPEC = """
project: dep
steps:
  prepare: {run: dp.steps:prepare, outputs: [train]}
  train:
    run: dp.steps:train
    inputs: {train: step.prepare.train}
    outputs: [model]
    params: {C: %(C)s, score: %(score)s, target: y}
    metrics: [roc_auc]
models:
  clf:
    from: step.train.model
    metrics: step.train
    gates: {roc_auc: ">= 0.7"}
    promote: {alias: production, if_better: roc_auc}
deployments:
  api: {model: clf@production, port: %(port)s, replicas: %(replicas)s, drain: 5s%(extra)s}
"""


def write_spec(p: Project, *, C=1.0, score=0.8, port: int, replicas=1, extra="") -> None:
    p.write("mlspec.yaml", SPEC % {"C": C, "score": score, "port": port, "replicas": replicas, "extra": extra})


def recorded_pids(p: Project) -> list:
    try:
        resources = p.state()["resources"]
    except (OSError, ValueError):
        return []
    pids = []
    for rec in resources.values():
        svc = rec.get("service") if isinstance(rec, dict) and rec.get("kind") == "deployment" else None
        if svc:
            pids.append(svc["supervisor"]["pid"])
            pids += [r["pid"] for r in svc.get("replicas") or ()]
    return pids


@pytest.fixture
def dep_project(tmp_path, monkeypatch):
    """A project whose services are killed at the end whatever happens (by the pids the state records)."""
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)  # workers import sklearn: use compiled caches
    p = Project(tmp_path / "proj")
    p.write("src/dp/__init__.py", "")
    p.write("src/dp/steps.py", STEPS)
    seen: set = set()
    p.remember = lambda: seen.update(recorded_pids(p))  # type: ignore[attr-defined]
    yield p
    seen.update(recorded_pids(p))
    for pid in seen:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def request(port: int, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    """One request on a new connection (a real HTTP client, as curl makes them)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        text = resp.read()
        return resp.status, json.loads(text) if text else {}
    finally:
        conn.close()


def infer(port: int, x1=0.5, x2=-0.2) -> tuple[int, dict]:
    return request(port, "POST", "/v2/models/clf/infer", {"inputs": [
        {"name": "x1", "datatype": "FP64", "shape": [1], "data": [x1]},
        {"name": "x2", "datatype": "FP64", "shape": [1], "data": [x2]}]})


def deployment(p: Project) -> dict:
    return p.state()["resources"]["deployment.api"]


def test_serve_roll_out_roll_back_repair_and_destroy(dep_project):
    p = dep_project
    port = free_port()
    write_spec(p, port=port)
    plan = p.run("plan")
    assert plan.returncode == 0, plan.stderr
    assert f"+ deployment.api  serve clf@production (known after apply) on port {port}, 1 replica(s)" in plan.stdout

    # apply serves version 1
    r = p.apply()
    p.remember()
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"create: serving clf version 1 at http://127.0.0.1:{port}" in r.stdout
    rec = deployment(p)
    assert rec["version"] == 1 and rec["port"] == port and rec["service"]["port"] == port
    assert process_alive(rec["service"]["supervisor"]["pid"])
    assert "No changes" in p.run("plan").stdout

    # a real HTTP client gets predictions, on /predict and on the v2 protocol; a bad request names the column
    status, body = request(port, "POST", "/predict", {"instances": [{"x1": 2.0, "x2": 1.0}, {"x1": -2.0, "x2": -1.0}]})
    assert status == 200 and body["predictions"] == [1, 0], body
    status, body = infer(port)
    assert status == 200 and body["model_version"] == "1", body
    status, body = request(port, "POST", "/predict", {"instances": [{"x1": 2.0}]})
    assert status == 422 and "x2" in body["error"], body
    status, body = request(port, "GET", "/v2/health/ready")
    assert status == 200

    # version 2 is not better: registered, production stays on 1, the service is left alone
    write_spec(p, C=0.5, score=0.75, port=port)
    plan = p.run("plan")
    assert "~ deployment.api  roll out clf@production (known after apply)" in plan.stdout, plan.stdout
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert deployment(p)["version"] == 1 and deployment(p)["service"] == rec["service"]

    # version 3 is better: promoted and rolled out while a client sends requests: none fails
    write_spec(p, C=2.0, score=0.9, port=port)
    client = LoopingClient(lambda: infer(port))
    client.start()
    r = p.apply()
    client.finish()
    p.remember()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "update: serving clf version 3" in r.stdout
    assert client.failures == [] and client.ok > 0, client.failures[:5]
    assert client.versions[0] == "1" and client.versions[-1] == "3", client.versions
    rec3 = deployment(p)
    assert rec3["version"] == 3 and rec3["service"]["supervisor"] == rec["service"]["supervisor"]  # same port owner
    old_worker = rec["service"]["replicas"][0]["pid"]
    assert not process_alive(old_worker)  # the old replica drained and exited

    # rollback brings version 1 back the same way, recorded, and holds it while production is on 3
    client = LoopingClient(lambda: infer(port))
    client.start()
    r = p.run("rollback", "api", "--reason", "canary errors")
    client.finish()
    p.remember()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Rolled back deployment api: version 3 -> 1" in r.stdout
    assert client.failures == [] and client.versions[-1] == "1", (client.failures[:5], client.versions)
    rec1 = deployment(p)
    assert rec1["version"] == 1 and rec1["hold"]["while"] == 3
    assert [(h["action"], h["from"], h["to"]) for h in rec1["history"]] == \
        [("create", None, 1), ("update", 1, 3), ("rollback", 3, 1)]
    assert rec1["history"][-1]["reason"] == "canary errors"
    verbose = p.run("plan", "--verbose").stdout
    assert "No changes" in verbose and "held on version 1 by `mlspec rollback`" in verbose, verbose

    # killed by hand: refresh sees it gone, plan shows the recreate, apply recreates it
    pids = recorded_pids(p)
    os.kill(rec1["service"]["supervisor"]["pid"], signal.SIGKILL)
    deadline = time.time() + 10
    while any(process_alive(x) for x in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(process_alive(x) for x in pids), "the replicas die with their supervisor"
    r = p.run("refresh")
    assert r.returncode == 0 and "gone" in r.stdout, r.stdout + r.stderr
    assert deployment(p)["observed"]["state"] == "gone"
    plan = p.run("plan")
    assert "+ deployment.api" in plan.stdout and "not running: the supervisor" in plan.stdout, plan.stdout
    r = p.apply()
    p.remember()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "recreate: serving clf version 1" in r.stdout  # still held on 1
    assert infer(port)[1]["model_version"] == "1"
    r = p.run("refresh", "--format", "json")
    assert json.loads(r.stdout)["deployments"][0]["state"] == "running"
    assert "No changes" in p.run("plan").stdout

    # destroy: asks (no terminal: refused), then with --auto-approve leaves no process and a closed port
    r = p.run("destroy")
    assert r.returncode == 1 and "- deployment.api" in r.stdout and "--auto-approve" in r.stderr
    pids = recorded_pids(p)
    r = p.run("destroy", "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deployment.api" not in p.state()["resources"]
    assert not any(process_alive(x) for x in pids)
    assert not port_open(port)
    assert not (p.root / ".mlspec/services/default/api").exists()


def test_replicas_settings_removal_and_port_change(dep_project):
    p = dep_project
    port = free_port()
    write_spec(p, port=port, replicas=2)
    r = p.apply()
    p.remember()
    assert r.returncode == 0, r.stdout + r.stderr
    rec = deployment(p)
    pids = [x["pid"] for x in rec["service"]["replicas"]]
    assert len(set(pids)) == 2 and all(process_alive(x) for x in pids)
    for _ in range(40):
        status, body = request(port, "POST", "/predict", {"instances": [{"x1": 1.0, "x2": 1.0}]})
        assert status == 200
    r = p.run("deployments", "list", "--format", "json")
    row = json.loads(r.stdout)["deployments"][0]
    assert row["state"] == "running" and row["replicas"] == 2 and row["version"] == 1, row

    # one replica: a rolling update (~), not a replacement
    write_spec(p, port=port, replicas=1)
    plan = p.run("plan").stdout
    assert "~ deployment.api" in plan and "replicas: 2 -> 1" in plan, plan
    assert p.apply().returncode == 0
    p.remember()
    assert len(deployment(p)["service"]["replicas"]) == 1

    # another port: -/+ replace; the old port is closed afterwards
    port2 = free_port()
    write_spec(p, port=port2)
    plan = p.run("plan", "--format", "json")
    ch = [c for c in json.loads(plan.stdout)["resource_changes"] if c["address"] == "deployment.api"][0]
    assert ch["actions"] == ["replace"] and ch["reasons"][0] == {
        "code": "changed", "message": f"port: {port} -> {port2}", "path": "port", "before": port, "after": port2}
    r = p.apply()
    p.remember()
    assert r.returncode == 0, r.stdout + r.stderr
    assert infer(port2)[0] == 200 and not port_open(port)

    # removed from the spec: `-` and the service is stopped by the apply
    p.write("mlspec.yaml", (SPEC % {"C": 1.0, "score": 0.8, "port": 1, "replicas": 1, "extra": ""}
                            ).split("deployments:")[0])
    pids = recorded_pids(p)
    plan = p.run("plan").stdout
    assert "- deployment.api  destroy (stop the service)" in plan, plan
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert not any(process_alive(x) for x in pids) and not port_open(port2)


def test_token_is_required_never_stored_and_rotation_rolls_out(dep_project, monkeypatch):
    p = dep_project
    port = free_port()
    monkeypatch.setenv("API_TOKEN", "tok-first-1234")
    extra = ', token: "${secrets.api_token}"'
    write_spec(p, port=port, extra=extra)
    spec = (p.root / "mlspec.yaml").read_text()
    p.write("mlspec.yaml", "secrets:\n  api_token: ${oc.env:API_TOKEN}\n" + spec)
    r = p.apply()
    p.remember()
    assert r.returncode == 0, r.stdout + r.stderr
    assert request(port, "POST", "/predict", {"instances": [{"x1": 1.0, "x2": 0.0}]})[0] == 401
    ok = request(port, "POST", "/predict", {"instances": [{"x1": 1.0, "x2": 0.0}]},
                 {"Authorization": "Bearer tok-first-1234"})
    assert ok[0] == 200, ok
    state_text = (p.root / ".mlspec/state/default.state.json").read_text()
    assert "tok-first-1234" not in state_text and deployment(p)["token"].startswith("keyed:")
    for f in (p.root / ".mlspec/services/default/api").iterdir():
        if f.is_file():
            assert b"tok-first-1234" not in f.read_bytes(), f
    assert "No changes" in p.run("plan").stdout

    monkeypatch.setenv("API_TOKEN", "tok-second-5678")
    plan = p.run("plan").stdout
    assert "~ deployment.api" in plan and "token: (sensitive value changed)" in plan, plan
    assert "tok-second" not in plan
    r = p.apply()
    p.remember()
    assert r.returncode == 0, r.stdout + r.stderr
    assert request(port, "POST", "/predict", {"instances": [{"x1": 1.0, "x2": 0.0}]},
                   {"Authorization": "Bearer tok-second-5678"})[0] == 200
    assert request(port, "POST", "/predict", {"instances": [{"x1": 1.0, "x2": 0.0}]},
                   {"Authorization": "Bearer tok-first-1234"})[0] == 401
    assert p.run("destroy", "--auto-approve").returncode == 0


def test_a_token_in_the_clear_and_a_backend_that_cannot_serve_fail_the_plan_in_one_line(dep_project):
    p = dep_project
    write_spec(p, port=free_port(), extra=", token: abcdefgh")
    r = p.run("plan")
    assert r.returncode == 1 and "deployments.api.token is written in the clear" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "abcdefgh" not in r.stderr + r.stdout

    # a backend that runs steps but serves nothing (local, ray and docker all serve): an installed plugin
    site = p.root.parent / "site"
    (site / "mlspec_stepsonly-0.1.dist-info").mkdir(parents=True)
    (site / "mlspec_stepsonly-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mlspec-stepsonly\nVersion: 0.1\n")
    (site / "mlspec_stepsonly-0.1.dist-info" / "entry_points.txt").write_text(
        "[mlspec.backends]\nstepsonly = mlspec_stepsonly:Backend\n")
    (site / "mlspec_stepsonly.py").write_text(
        "from mlspec.backends.local import LocalBackend\n\n\nclass Backend(LocalBackend):\n"
        "    type = 'stepsonly'\n    supports_services = False\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))}
    write_spec(p, port=free_port(), extra=", backend: stepsonly")
    r = p.run("plan", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.splitlines()[0] == "Error: deployment 'api': backend 'stepsonly' cannot serve models yet", r.stderr
    assert "Traceback" not in r.stderr


def test_a_port_in_use_fails_the_deployment_in_one_line(dep_project):
    p = dep_project
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        write_spec(p, port=port)
        r = p.apply()
        p.remember()
    assert r.returncode == 1, r.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "deployment.api" not in p.state()["resources"]
    status = json.loads((p.root / ".mlspec/services/default/api/status.json").read_text())
    assert status["state"] == "failed"
    deadline = time.time() + 5
    while process_alive(status["pid"]) and time.time() < deadline:
        time.sleep(0.05)
    assert not process_alive(status["pid"])  # the supervisor that could not listen is gone


def processes_in(root) -> list:
    """Pids of the processes whose working directory is ``root`` (a supervisor and its workers run there)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.path.realpath(os.readlink(f"/proc/{entry}/cwd")) == os.path.realpath(root):
                    out.append(int(entry))
            except OSError:
                pass
    return out


def test_a_create_takes_the_worker_started_ahead_and_a_failed_apply_leaves_no_process(dep_project):
    """The supervisor of a deployment being created starts when the apply starts executing, with a standby
    worker importing while the steps run; an apply that fails before the deploy stops them both."""
    p = dep_project
    port = free_port()
    write_spec(p, port=port)
    p.write("src/dp/steps.py", STEPS.replace("    rng = np.random.default_rng(seed)",
                                             "    raise RuntimeError('no data today')"))
    r = p.apply()
    assert r.returncode == 1 and "no data today" in r.stdout + r.stderr
    deadline = time.time() + 10
    while processes_in(p.root) and time.time() < deadline:
        time.sleep(0.1)
    assert processes_in(p.root) == [] and not port_open(port)
    assert not (p.root / ".mlspec/services/default/api").exists()

    p.write("src/dp/steps.py", STEPS)
    r = p.apply()
    p.remember()
    assert r.returncode == 0, r.stdout + r.stderr
    svc = deployment(p)["service"]
    log = (p.root / ".mlspec/services/default/api/service.log").read_text()
    assert f"standby worker (pid {svc['replicas'][0]['pid']}) importing" in log, log
    assert request(port, "POST", "/predict", {"instances": [{"x1": 2.0, "x2": 1.0}]}) == (200, {"predictions": [1]})
    assert p.run("destroy", "--auto-approve").returncode == 0
    assert processes_in(p.root) == [] and not port_open(port)
