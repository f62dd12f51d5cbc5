"""Images: the project's step image built from its Dockerfile (content-tagged, not rebuilt when unchanged),
an image holding the project (workdir: task paths remapped), the requirements build's tag, the host root."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import mlspec
from mlspec.artifacts import ArtifactStore
from mlspec.backends.api import Context, TaskStatus
from mlspec.testing import make_task, result_of, write_project
from mlspec_docker import images
from mlspec_docker.backend import LABEL_OWNER, DockerBackend

MLSPEC_ROOT = str(Path(mlspec.__file__).resolve().parent.parent)


def _python_from_host() -> dict:
    """Settings that give an image built on the host root (which has no Python) this machine's Python, the
    way the host environment does, so that images built in the tests can run steps without a registry."""
    mounts = ["/usr:/usr:ro", f"{sys.base_prefix}:{sys.base_prefix}:ro", f"{MLSPEC_ROOT}:{MLSPEC_ROOT}:ro"]
    if not sys.prefix.startswith(MLSPEC_ROOT + "/"):
        mounts.append(f"{sys.prefix}:{sys.prefix}:ro")
    return {"python": sys.executable, "mounts": mounts, "env": {"PYTHONPATH": MLSPEC_ROOT}}


@pytest.fixture
def project(tmp_path, docker_client) -> Path:
    p = write_project(tmp_path / "proj")
    (p / "Dockerfile").write_text(f"FROM {images.ensure_host_root(docker_client)}\nCOPY data.txt /opt/data.txt\n")
    (p / "data.txt").write_text("first\n")
    return p


def _ctx(project: Path) -> Context:
    return Context(project_dir=project, artifacts_url=str(project.parent / "artifacts"), code_paths=(str(project),))


def test_project_image_is_built_once_per_content(project, docker_engine, docker_client):
    settings = {"type": "docker", "host": docker_engine, "network_mode": "none", "build": {"dockerfile": "Dockerfile"},
                **_python_from_host()}
    b = DockerBackend(settings, _ctx(project))
    b.start()
    try:
        tag = b.image()
        assert tag.startswith("mlspec-steps-proj:")
        first_id = docker_client.images.get(tag).id
        res = result_of(b.submit(make_task(_ctx(project), cmd="cat /opt/data.txt > ${outputs.out}", outputs=["out"])))
        assert res.status is TaskStatus.SUCCEEDED, res.error + res.log
        assert ArtifactStore(str(project.parent / "artifacts")).read_bytes(res.outputs["out"]["hash"]) == b"first\n"
    finally:
        b.close()
    # unchanged project: the same tag, and the engine builds nothing (the image keeps its id and creation time)
    again = DockerBackend(settings, _ctx(project))
    assert again.image() == tag and docker_client.images.get(tag).id == first_id
    again.close()
    # ignored files do not count; a changed file in the context gets a new tag
    (project / ".mlspec").mkdir(exist_ok=True)
    (project / ".mlspec" / "noise").write_text("state, not build input")
    assert images.build_plan(project, {"dockerfile": "Dockerfile"}, "python3")[0] == tag
    (project / "data.txt").write_text("second\n")
    changed = DockerBackend(settings, _ctx(project))
    try:
        new_tag = changed.image()
        assert new_tag != tag and new_tag.startswith("mlspec-steps-proj:")
        res = result_of(changed.submit(make_task(_ctx(project), cmd="cat /opt/data.txt > ${outputs.out}",
                                                 outputs=["out"])))
        assert ArtifactStore(str(project.parent / "artifacts")).read_bytes(res.outputs["out"]["hash"]) == b"second\n"
    finally:
        changed.close()


def test_failing_build_is_one_error_with_the_build_output(project, docker_engine, docker_client):
    # a RUN in the host root fails (it has no shell of its own): a build error without any registry
    (project / "Dockerfile").write_text(f"FROM {images.ensure_host_root(docker_client)}\nRUN /opt/no-such-tool\n")
    b = DockerBackend({"type": "docker", "host": docker_engine, "build": {"dockerfile": "Dockerfile"}}, _ctx(project))
    problems = b.preflight([])
    assert len(problems) == 1 and "building the step image mlspec-steps-proj:" in problems[0], problems
    assert "failed" in problems[0] and "RUN /opt/no-such-tool" in problems[0], problems


def test_missing_dockerfile_is_named(project, docker_engine):
    b = DockerBackend({"type": "docker", "host": docker_engine, "build": {"dockerfile": "docker/Steps.Dockerfile"}},
                      _ctx(project))
    problems = b.preflight([])
    assert len(problems) == 1 and "backend.build.dockerfile:" in problems[0] and "Steps.Dockerfile" in problems[0]


def test_project_in_the_image_with_workdir_remaps_task_paths(project, docker_engine, docker_client, tmp_path):
    """An engine that cannot mount the project: the image holds it (COPY), `workdir` says where, and the task's
    project paths are remapped there; the step's module is imported from the image's copy."""
    (project / "where.py").write_text("import os\n\ndef here():\n    return {'info': {'cwd': os.getcwd(), 'file': __file__}}\n")
    (project / "Dockerfile").write_text(f"FROM {images.ensure_host_root(docker_client)}\nCOPY . /project\n")
    settings = {"type": "docker", "host": docker_engine, "network_mode": "none", "workdir": "/project",
                "build": {"dockerfile": "Dockerfile"}, **_python_from_host()}
    ctx = _ctx(project)
    b = DockerBackend(settings, ctx)
    b.start()
    try:
        payload = b.container_payload(make_task(ctx, "here", module="where").payload)
        assert payload["project_dir"] == "/project" and payload["code_paths"] == ["/project"]
        assert str(project) not in {v["bind"] for v in b.binds(payload).values()}  # the project is not mounted
        res = result_of(b.submit(make_task(ctx, "here", module="where", outputs=["info"])))
        assert res.status is TaskStatus.SUCCEEDED, res.error + res.log
        import json

        info = json.loads(ArtifactStore(ctx.artifacts_url).read_bytes(res.outputs["info"]["hash"]))
        assert info == {"cwd": "/project", "file": "/project/where.py"}
    finally:
        b.close()


def test_requirements_build_is_tagged_by_base_requirements_and_mlspec(tmp_path):
    p = tmp_path / "reqproj"
    p.mkdir()
    (p / "requirements.txt").write_text("scikit-learn==1.5.2\n")
    build = {"requirements": "requirements.txt", "base": "python:3.11-slim"}
    tag, how = images.build_plan(p, build, "python3")
    assert tag.startswith("mlspec-steps-reqproj:")
    assert how["dockerfile_text"].startswith("FROM python:3.11-slim\n")
    assert "-r /opt/mlspec-build/requirements.txt" in how["dockerfile_text"]
    assert "'hydra-core>=1.3'" in how["dockerfile_text"]  # mlspec's own requirements
    assert ("mlspec/runner.py", Path(mlspec.__file__).resolve().parent / "runner.py") in how["files"]
    assert images.build_plan(p, build, "python3")[0] == tag  # stable
    assert images.build_plan(p, dict(build, base="python:3.12-slim"), "python3")[0] != tag
    (p / "requirements.txt").write_text("scikit-learn==1.6.0\n")
    assert images.build_plan(p, build, "python3")[0] != tag
    with pytest.raises(Exception) as err:
        images.build_plan(p, {"requirements": "nope.txt"}, "python3")
    assert "backend.build.requirements:" in str(err.value) and "nope.txt" in str(err.value)


def test_host_root_is_the_same_bytes_every_time():
    assert images.host_root_tar() == images.host_root_tar()


def test_containers_of_a_killed_mlspec_are_removed_by_the_next(project, docker_engine, docker_client):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that is gone
    root = images.ensure_host_root(docker_client)
    c = docker_client.containers.create(root, ["/usr/bin/sleep", "300"], network_mode="none",
                                        volumes={"/usr": {"bind": "/usr", "mode": "ro"}},
                                        labels={LABEL_OWNER: f"{socket.gethostname()}:{dead.pid}"})
    c.start()
    alive = docker_client.containers.create(root, ["/usr/bin/true"], network_mode="none",
                                            labels={LABEL_OWNER: f"{socket.gethostname()}:{os.getpid()}"})
    b = DockerBackend({"type": "docker", "host": docker_engine}, _ctx(project))
    b.start()
    b.close()
    ids = {x.id for x in docker_client.containers.list(all=True)}
    assert c.id not in ids  # its mlspec is gone: removed
    assert alive.id in ids  # a live mlspec's (this one): kept
    alive.remove(force=True)
