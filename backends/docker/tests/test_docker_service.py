"""Deployments in containers: the service part of the conformance suite and the Docker-specific behaviour
(labels, real state from the engine, container replacement without a failed request, no secret in the
container's configuration, nothing left after removal), against a real dockerd started by the tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from mlspec.artifacts import ArtifactStore
from mlspec.backends.api import BackendError
from mlspec.testing import (LoopingClient, ServiceConformance, free_port, make_model_artifact, make_service,
                            port_open)
from mlspec_docker.backend import DockerBackend
from mlspec_docker.service import LABEL_DEPLOYMENT


def docker_backend(context, engine, **settings):
    b = DockerBackend({"type": "docker", "location": "local", "host": engine, **settings}, context)
    b.start()
    return b


class TestDockerServices(ServiceConformance):
    @pytest.fixture
    def service_backend(self, service_context, docker_engine, docker_client):
        b = docker_backend(service_context, docker_engine)
        yield b
        b.close()
        left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_DEPLOYMENT}"})
        for c in left:  # the suite removes what it deploys; a leftover is a defect (reported after cleanup)
            c.remove(force=True)
        assert not left, f"service containers left behind: {[c.name for c in left]}"

    def kill_service(self, record):
        import docker

        client = docker.DockerClient(base_url=record["engine"], version="1.41")
        try:
            client.api.kill(record["container"])  # as an operator would: docker kill
        finally:
            client.close()


# --- Docker-specific behaviour -------------------------------------------------------------------------
def infer(port: int, x1: float = 3.0, headers=None) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v2/models/conf-model/infer", body=json.dumps({"inputs": [
            {"name": "x1", "datatype": "FP64", "shape": [1], "data": [x1]},
            {"name": "x2", "datatype": "FP64", "shape": [1], "data": [0.0]}]}),
            headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture
def svc_env(tmp_path, docker_engine, docker_client):
    """A context with two model versions; every service container of the project is removed at the end."""
    from mlspec.backends.api import Context

    project = tmp_path / "project"
    project.mkdir()
    ctx = Context(project_dir=project, artifacts_url=str(tmp_path / "artifacts"), code_paths=(str(project),))
    store = ArtifactStore(ctx.artifacts_url)
    models = {v: make_model_artifact(store, v) for v in (1, 2)}
    backends = []

    def make(**settings):
        b = docker_backend(ctx, docker_engine, **settings)
        backends.append(b)
        return b

    yield ctx, models, make
    for b in backends:
        b.close()
    for c in docker_client.containers.list(all=True, filters={"label": f"mlspec.project={project}"}):
        c.remove(force=True)


def test_container_is_labelled_health_checked_and_holds_no_secret(svc_env, docker_client):
    ctx, models, make = svc_env
    b = make()
    svc = make_service(ctx, *models[1], 1, port=free_port())
    svc = type(svc)(**{**svc.__dict__, "config": {**svc.config, "token_env": "MLSPEC_SERVE_TOKEN"},
                       "env": {"MLSPEC_SERVE_TOKEN": "tok-very-secret-42"}})
    rec = b.deploy_service(svc)
    try:
        c = docker_client.api.inspect_container(rec["container"])
        labels = c["Config"]["Labels"]
        assert labels["mlspec.deployment"] == "deployment.conformance"
        assert labels["mlspec.workspace"] == "conformance" and labels["mlspec.project"] == str(ctx.project_dir)
        assert c["HostConfig"]["NetworkMode"] == "host" and c["Config"]["Healthcheck"]["Test"][0] == "CMD"
        assert "tok-very-secret-42" not in json.dumps(c), "the token is in the container's configuration"
        for root, _dirs, files in os.walk(ctx.project_dir / ".mlspec"):
            for f in files:
                p = os.path.join(root, f)
                if os.path.isfile(p) and not p.endswith("ctl"):
                    assert b"tok-very-secret-42" not in open(p, "rb").read(), p
        assert infer(rec["port"])[0] == 401
        assert infer(rec["port"], headers={"Authorization": "Bearer tok-very-secret-42"})[0] == 200
        # the engine's own health check passes (it runs every 10 s; the first one within the interval)
        deadline = time.time() + 30
        while time.time() < deadline:
            health = docker_client.api.inspect_container(rec["container"])["State"].get("Health") or {}
            if health.get("Status") == "healthy":
                break
            time.sleep(0.5)
        assert health.get("Status") == "healthy", health
    finally:
        b.remove_service(rec)
    assert not docker_client.containers.list(all=True, filters={"label": "mlspec.deployment=deployment.conformance"})
    assert not port_open(rec["port"])
    assert not os.path.exists(rec["run_dir"])


def test_changed_container_is_replaced_without_a_failed_request(svc_env, docker_client):
    """Other backend settings (here an environment variable of the containers) give another container: the new
    one takes over the listening socket, the old one drains and is removed, and a looping client sees no
    failure; a model version change in the same update rolls out with it."""
    ctx, models, make = svc_env
    port = free_port()
    b1 = make(env={"SERVICE_FLAVOUR": "one"})
    rec1 = b1.deploy_service(make_service(ctx, *models[1], 1, port=port, replicas=2))
    client = LoopingClient(lambda: infer(port))
    client.start()
    time.sleep(0.5)
    b2 = make(env={"SERVICE_FLAVOUR": "two"})
    rec2 = b2.update_service(rec1, make_service(ctx, *models[2], 2, port=port, replicas=2))
    client.finish()
    try:
        assert client.failures == [] and client.ok > 0, client.failures[:5]
        assert client.versions[0] == "1" and client.versions[-1] == "2", client.versions
        assert rec2["container"] != rec1["container"] and rec2["spec"] != rec1["spec"] and rec2["port"] == port
        names = [c.name for c in docker_client.containers.list(all=True, filters={
            "label": "mlspec.deployment=deployment.conformance"})]
        assert names == [rec2["name"]], names  # the old container is removed
        env = docker_client.api.inspect_container(rec2["container"])["Config"]["Env"]
        assert "SERVICE_FLAVOUR=two" in env
        st = b2.service_status(rec2)
        assert st.state == "running" and st.version == 2 and len(st.replicas) == 2, st
        # the same container again: a rolling update inside it, container kept
        client = LoopingClient(lambda: infer(port))
        client.start()
        rec3 = b2.update_service(rec2, make_service(ctx, *models[1], 1, port=port, replicas=2))
        client.finish()
        assert client.failures == [] and client.versions[-1] == "1", (client.failures[:5], client.versions)
        assert rec3["container"] == rec2["container"] and rec3["generation"] == 2
    finally:
        b2.remove_service(rec2)
    assert not port_open(port)


def test_state_from_the_engine_stopped_and_removed_by_hand(svc_env, docker_client):
    ctx, models, make = svc_env
    b = make()
    rec = b.deploy_service(make_service(ctx, *models[1], 1, port=free_port()))
    try:
        docker_client.api.stop(rec["container"], timeout=10)  # docker stop: the supervisor drains and exits 0
        st = b.service_status(rec)
        assert st.state == "gone" and "exited with code 0" in st.detail and rec["name"] in st.detail, st
        assert not port_open(rec["port"])
        docker_client.api.remove_container(rec["container"], force=True)  # docker rm -f
        st = b.service_status(rec)
        assert st.state == "gone" and f"the container {rec['name']} was removed" == st.detail, st
        # an update of a gone service starts it anew
        rec2 = b.update_service(rec, make_service(ctx, *models[2], 2, port=rec["port"]))
        assert rec2["container"] != rec["container"] and infer(rec2["port"])[1]["model_version"] == "2"
        b.remove_service(rec2)
    finally:
        b.remove_service(rec)


def test_a_model_that_does_not_load_fails_in_one_line_and_leaves_nothing(svc_env, docker_client):
    ctx, models, make = svc_env
    b = make()
    art, sig = models[1]
    port = free_port()
    svc = make_service(ctx, {"hash": "0" * 32, "format": art["format"]}, sig, 1, port=port)
    with pytest.raises(BackendError) as err:
        b.deploy_service(svc)
    assert "\n" not in err.value.message and "a replica failed to load" in err.value.message, err.value.message
    assert err.value.hint.startswith("the container's last lines: "), err.value.hint
    assert not docker_client.containers.list(all=True, filters={"label": f"mlspec.project={ctx.project_dir}"})
    assert not port_open(port)


def test_an_engine_on_another_machine_is_refused_in_one_line(svc_env):
    from mlspec_docker.backend import DockerBackend as DB

    ctx, models, _make = svc_env
    b = DB({"type": "docker", "location": "local", "host": "tcp://192.0.2.10:2375"}, ctx)
    with pytest.raises(BackendError) as err:
        b.deploy_service(make_service(ctx, *models[1], 1, port=free_port()))
    assert "on another machine" in err.value.message and "backend: local" in err.value.hint


# --- end to end through the CLI -----------------------------------------------------------------------
STEPS = '''
import numpy as np
import pandas as pd


def prepare(rows: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    return {"train": pd.DataFrame({"x1": x1, "x2": x2, "y": (x1 + 0.5 * x2 > 0).astype("int64")})}


def train(train, C: float, score: float, target: str = "y"):
    from sklearn.linear_model import LogisticRegression

    return {"model": LogisticRegression(C=C).fit(train[["x1", "x2"]], train[target]), "roc_auc": score}
'''

SPEC = """
secrets:
  api_token: ${oc.env:API_TOKEN}
project: dockdep
steps:
  prepare: {run: dd.steps:prepare, outputs: [train]}
  train:
    run: dd.steps:train
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
  api: {model: clf@production, port: %(port)s, drain: 5s, backend: docker, token: "${secrets.api_token}"}
"""

TOKEN = "tok-e2e-docker-7788"


def cli(project, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", HOME=str(project.parent / "home"), API_TOKEN=TOKEN)
    env.pop("PYTHONPYCACHEPREFIX", None)  # the workers import sklearn: use the compiled caches
    (project.parent / "home").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "mlspec", "-C", str(project), *args], env=env, capture_output=True,
                          text=True, timeout=600)


def e2e_infer(port: int) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v2/models/clf/infer", body=json.dumps({"inputs": [
            {"name": "x1", "datatype": "FP64", "shape": [1], "data": [0.5]},
            {"name": "x2", "datatype": "FP64", "shape": [1], "data": [-0.2]}]}),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_cli_serves_in_a_container_rolls_out_repairs_and_destroys(tmp_path, docker_engine, docker_client):
    project = tmp_path / "proj"
    (project / "src/dd").mkdir(parents=True)
    (project / "src/dd/__init__.py").write_text("")
    (project / "src/dd/steps.py").write_text(STEPS)
    port = free_port()

    def write(C, score):
        (project / "mlspec.yaml").write_text(textwrap.dedent(SPEC % {"C": C, "score": score, "port": port}))

    def record():
        return json.loads((project / ".mlspec/state/default.state.json").read_text())["resources"]["deployment.api"]

    def containers():
        return docker_client.containers.list(all=True, filters={"label": [
            "mlspec.deployment=deployment.api", f"mlspec.project={project}"]})

    try:
        write(1.0, 0.8)
        r = cli(project, "apply", "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"create: serving clf version 1 at http://127.0.0.1:{port}" in r.stdout, r.stdout
        rec = record()
        assert rec["backend_type"] == "docker" and rec["service"]["backend"] == "docker"
        [c] = containers()
        assert c.id == rec["service"]["container"] and c.status == "running"
        assert TOKEN not in json.dumps(docker_client.api.inspect_container(c.id))
        status, body = e2e_infer(port)  # a real HTTP client, with the bearer token
        assert status == 200 and body["model_version"] == "1", body

        # a better version is promoted and rolled out while a client loops: 0 failed requests
        write(2.0, 0.9)
        client = LoopingClient(lambda: e2e_infer(port))
        client.start()
        r = cli(project, "apply", "--auto-approve")
        client.finish()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "update: serving clf version 2" in r.stdout, r.stdout
        assert client.failures == [] and client.ok > 0, client.failures[:5]
        assert client.versions[0] == "1" and client.versions[-1] == "2", client.versions
        assert record()["service"]["container"] == c.id  # the model moved inside the same container

        # removed by hand: refresh sees it gone, plan shows the recreate, apply recreates
        subprocess.run(["docker", "-H", docker_engine, "rm", "-f", c.id], check=True, capture_output=True)
        r = cli(project, "refresh")
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"^deployment\.api +gone +- +the container mlspec-default-api-[0-9a-f]{8} was removed$",
                         r.stdout, re.M), r.stdout  # as docs/backends.md shows it
        assert record()["observed"]["state"] == "gone" and "was removed" in record()["observed"]["detail"]
        plan = cli(project, "plan")
        assert "+ deployment.api" in plan.stdout and "was removed" in plan.stdout, plan.stdout
        r = cli(project, "apply", "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "recreate: serving clf version 2" in r.stdout, r.stdout
        [c2] = containers()
        assert c2.id != c.id and e2e_infer(port)[1]["model_version"] == "2"
        r = cli(project, "refresh", "--format", "json")
        assert json.loads(r.stdout)["deployments"][0]["state"] == "running", r.stdout
        assert "No changes" in cli(project, "plan").stdout

        # destroy: no container, the port closed, no run directory
        r = cli(project, "destroy", "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
        assert containers() == [] and not port_open(port)
        assert not list((project / ".mlspec/containers/default/api").glob("*"))
    finally:
        for c in containers():
            c.remove(force=True)
