"""A deployment with `backend:` naming a Ray backend, end to end through the `mlspec` CLI (subprocesses)
against the session's real cluster: apply serves the alias's version on Ray Serve; a promoted version and a
rollback roll out while clients send requests without pause (0 failed); refresh reads Serve; destroy
leaves no Serve application and a closed port."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
project: rayserve
backends:
  cluster:
    type: ray
    address: "%(address)s"
    serve: {replica_cpus: 0.25}
steps:
  prepare: {run: rs.steps:prepare, outputs: [train]}
  train:
    run: rs.steps:train
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
  api: {model: clf@production, backend: cluster, port: %(port)s, replicas: 1, drain: 5s}
"""


def infer(port: int) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v2/models/clf/infer", body=json.dumps({"inputs": [
            {"name": "x1", "datatype": "FP64", "shape": [1], "data": [0.5]},
            {"name": "x2", "datatype": "FP64", "shape": [1], "data": [-0.2]}]}),
            headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


class Proj:
    def __init__(self, root: Path, address: str, port: int):
        self.root, self.address, self.port = root, address, port
        (root / "src/rs").mkdir(parents=True)
        (root / "src/rs/__init__.py").write_text("")
        (root / "src/rs/steps.py").write_text(textwrap.dedent(STEPS))

    def spec(self, *, C: float, score: float) -> None:
        (self.root / "mlspec.yaml").write_text(SPEC % {"address": self.address, "port": self.port, "C": C,
                                                       "score": score})

    def run(self, *args, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, RAY_AUTH_MODE="disabled")
        env.pop("PYTHONPYCACHEPREFIX", None)  # the steps import sklearn: use the compiled caches
        return subprocess.run([sys.executable, "-m", "mlspec", "-C", str(self.root), *args], capture_output=True,
                              text=True, env=env, timeout=timeout)

    def record(self) -> dict:
        state = json.loads((self.root / ".mlspec/state/default.state.json").read_text())
        return state["resources"].get("deployment.api") or {}


def serve_apps() -> list:
    from ray import serve
    from ray.serve.context import _get_global_client

    if _get_global_client(raise_if_no_controller_running=False) is None:
        return []
    return sorted(serve.status().applications)


def test_a_deployment_on_ray_serve_through_the_cli(ray_cluster, tmp_path):
    import ray

    port = free_port()
    p = Proj(tmp_path / "proj", ray_cluster.address, port)
    p.spec(C=1.0, score=0.8)
    try:
        plan = p.run("plan")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert f"+ deployment.api  serve clf@production (known after apply) on port {port}" in plan.stdout

        r = p.run("apply", "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"create: serving clf version 1 at http://127.0.0.1:{port}" in r.stdout, r.stdout
        rec = p.record()
        assert rec["backend"] == "cluster" and rec["service"]["backend"] == "ray"
        assert rec["service"]["app"] == "mlspec-default-api" and rec["service"]["port"] == port
        status, body = infer(port)
        assert status == 200 and body["model_version"] == "1", body
        assert "No changes" in p.run("plan").stdout

        # a better version is promoted and rolled out on Serve while a client sends requests: none fails
        p.spec(C=2.0, score=0.9)
        client = LoopingClient(lambda: infer(port), linger=0.5)
        client.start()
        r = p.run("apply", "--auto-approve")
        client.finish()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "update: serving clf version 2" in r.stdout, r.stdout
        assert client.failures == [] and client.ok > 0, client.failures[:5]
        assert client.versions[0] == "1" and client.versions[-1] == "2", client.versions

        # rollback, the same way
        client = LoopingClient(lambda: infer(port), linger=0.5)
        client.start()
        r = p.run("rollback", "api", "--reason", "canary errors")
        client.finish()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Rolled back deployment api: version 2 -> 1" in r.stdout, r.stdout
        assert client.failures == [] and client.versions[-1] == "1", (client.failures[:5], client.versions)

        r = p.run("refresh", "--format", "json")
        assert r.returncode == 0, r.stdout + r.stderr
        observed = json.loads(r.stdout)["deployments"][0]
        assert observed["state"] == "running" and observed["version"] == 1, observed

        r = p.run("destroy", "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
        assert p.record() == {}
        assert not port_open(port)
        mine = not ray.is_initialized()
        if mine:
            ray.init(address=ray_cluster.address, logging_level="WARNING", log_to_driver=False)
        try:
            assert serve_apps() == []
        finally:
            if mine:
                ray.shutdown()
    finally:
        if p.record().get("service"):
            p.run("destroy", "--auto-approve")
