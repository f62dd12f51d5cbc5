"""The CLI with backend=docker against a real engine: pinned images in the plan, Ctrl-C, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlspec_docker import images
from mlspec_docker.backend import LABEL_OWNER


def _cli(project: Path, *args, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", HOME=str(project.parent / "home"))
    (project.parent / "home").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "mlspec", "-C", str(project), *args], env=env, capture_output=True,
                          text=True, timeout=300, **kw)


def _write(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root


def _build(docker_client, tag: str, tmp_path: Path, content: str) -> str:
    ctx = tmp_path / f"img-{content}"
    ctx.mkdir()
    (ctx / "tag.txt").write_text(content)
    (ctx / "Dockerfile").write_text(f"FROM {images.ensure_host_root(docker_client)}\nCOPY tag.txt /etc/mlspec-tag\n")
    image, _ = docker_client.images.build(path=str(ctx), tag=tag, rm=True)
    return image.id


PIN_SPEC = """
project: pin
defaults:
  - backend: docker
  - _self_
steps:
  make:
    cmd: "cat /etc/mlspec-tag > ${outputs.out}"
    outputs: [out]
    image: mlspec-test-pin:latest
  plain:
    cmd: "echo plain > ${outputs.out}"
    outputs: [out]
"""


def test_pinned_image_digest_is_in_the_fingerprint_and_the_plan(tmp_path, docker_engine, docker_client):
    project = _write(tmp_path / "pin", {"mlspec.yaml": PIN_SPEC})
    first = _build(docker_client, "mlspec-test-pin:latest", tmp_path, "v1")
    try:
        r = _cli(project, "apply", "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
        state = json.loads((project / ".mlspec/state/default.state.json").read_text())
        rec = state["resources"]["step.make"]
        assert rec["facts"]["image"] == {"name": "mlspec-test-pin:latest", "id": first}
        assert "image" not in state["resources"]["step.plain"]["facts"]  # unpinned steps keep their fingerprints
        r = _cli(project, "plan")
        assert r.returncode == 0 and "No changes" in r.stdout, r.stdout + r.stderr
        second = _build(docker_client, "mlspec-test-pin:latest", tmp_path, "v2")  # same name, new digest
        assert second != first
        r = _cli(project, "plan", "--format", "json")
        assert r.returncode == 0, r.stderr
        changes = {c["address"]: c for c in json.loads(r.stdout)["resource_changes"]}
        make = changes["step.make"]
        assert make["verdict"] == "run"
        image_reasons = [x for x in make["reasons"] if x["code"] == "definition_changed" and x["path"] == "image"]
        assert image_reasons and image_reasons[0]["before"]["id"] == first and image_reasons[0]["after"]["id"] == second
        assert changes["step.plain"]["verdict"] != "run"
        text = _cli(project, "plan").stdout
        assert "image" in text and second in text, text
        r = _cli(project, "apply", "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Apply complete: 1 ran" in r.stdout, r.stdout
        out = project / ".mlspec/state/default.state.json"
        h = json.loads(out.read_text())["resources"]["step.make"]["outputs"]["out"]["hash"]
        from mlspec.artifacts import ArtifactStore

        assert ArtifactStore(str(project / ".mlspec/artifacts")).read_bytes(h) == b"v2"  # ran in the new image
    finally:
        docker_client.images.remove("mlspec-test-pin:latest", force=True)


def test_pinned_image_that_is_missing_is_one_line(tmp_path, docker_engine):
    spec = PIN_SPEC.replace("mlspec-test-pin:latest", "mlspec-test-absent:9")
    project = _write(tmp_path / "pin", {"mlspec.yaml": spec})
    r = _cli(project, "plan", "++backend.pull=never")
    assert r.returncode == 1
    assert "steps.make.image: image mlspec-test-absent:9 is missing" in r.stderr, r.stderr
    assert "docker build -t mlspec-test-absent:9" in r.stderr
    assert "Traceback" not in r.stderr


def test_pinned_image_on_a_backend_without_images_is_refused(tmp_path):
    spec = PIN_SPEC.replace("backend: docker", "backend: local")
    project = _write(tmp_path / "pin", {"mlspec.yaml": spec})
    r = _cli(project, "plan")
    assert r.returncode == 1
    assert "steps.make.image: the step runs on backend 'default' (local), which does not run container images" \
        in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


SLEEP_SPEC = """
project: nap
steps:
  nap:
    cmd: "sleep 120; echo late > ${outputs.out}"
    outputs: [out]
    matrix: {i: [1, 2]}
"""


def test_ctrl_c_removes_every_container(tmp_path, docker_engine, docker_client):
    project = _write(tmp_path / "nap", {"mlspec.yaml": SLEEP_SPEC})
    env = dict(os.environ, NO_COLOR="1", HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(project), "apply", "--auto-approve",
                             "backend=docker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    owner = f"{LABEL_OWNER}={socket.gethostname()}:{proc.pid}"

    def running():
        return docker_client.containers.list(filters={"label": owner, "status": "running"})

    deadline = time.monotonic() + 120
    while len(running()) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert len(running()) == 2, "the two steps never ran in containers"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "cancel" in (out + err).lower(), out + err
    left = docker_client.containers.list(all=True, filters={"label": owner})
    assert not left, f"containers left after Ctrl-C: {[c.name for c in left]}"


def test_backends_command_shows_docker_health(tmp_path, docker_engine):
    project = _write(tmp_path / "h", {"mlspec.yaml": "project: h\n"})
    r = _cli(project, "backends", "backend=docker")
    assert r.returncode == 0, r.stderr
    assert "docker  mlspec-docker" in r.stdout
    # the engine URL came from the environment (DOCKER_HOST), so mlspec shows it as (sensitive)
    assert "Configured backend: docker — ok: Docker" in r.stdout, r.stdout
    assert "host environment" in r.stdout


def test_settings_are_schema_checked(tmp_path):
    project = _write(tmp_path / "s", {"mlspec.yaml": SLEEP_SPEC})
    r = _cli(project, "plan", "backend=docker", "++backend.network=none", "++backend.pull=sometimes")
    assert r.returncode == 1
    assert "invalid settings for the docker backend" in r.stderr, r.stderr
    assert "Additional properties are not allowed ('network' was unexpected)" in r.stderr
    assert "backend.pull: 'sometimes' is not one of ['missing', 'never', 'always']" in r.stderr
    assert "backends/docker/README.md" in r.stderr and "Traceback" not in r.stderr
