"""The acceptance run on the real example: examples/churn on `local`, then with `backend=docker` (nothing
re-runs), then with a fresh state on docker (every step runs in a container, outputs byte-identical)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mlspec_docker.backend import LABEL_OWNER

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "churn"


def _cli(project: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", HOME=str(project.parent / "home"))
    return subprocess.run([sys.executable, "-m", "mlspec", "-C", str(project), *args], env=env, capture_output=True,
                          text=True, timeout=900)


def _hashes(state_dir: Path) -> dict:
    doc = json.loads((state_dir / "default.state.json").read_text())
    return {f"{a}.{n}": o["hash"] for a, r in doc["resources"].items() for n, o in (r.get("outputs") or {}).items()}


def test_churn_example_switches_to_docker_without_reruns_and_reproduces_hashes(tmp_path, docker_engine,
                                                                               docker_client):
    project = tmp_path / "churn"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".mlspec", "__pycache__"))
    (tmp_path / "home").mkdir()
    # the steps and the model: the example's deployment would serve on a fixed port that may be taken here
    target = ("--target", "model.churn-clf")
    r = _cli(project, "apply", "--auto-approve", *target)
    assert r.returncode == 0, r.stdout + r.stderr
    ran = re.search(r"Apply complete: (\d+) ran", r.stdout)
    assert ran and int(ran.group(1)) >= 10, r.stdout  # every step instance and the model version
    local = _hashes(project / ".mlspec/state")
    r = _cli(project, "apply", "--auto-approve", *target, "backend=docker")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No changes" in r.stdout  # switching backend re-runs nothing
    before = {c.id for c in docker_client.containers.list(all=True)}
    r = _cli(project, "apply", "--auto-approve", *target, "backend=docker", f"++storage.state={tmp_path / 'st'}",
             f"++storage.artifacts={tmp_path / 'art'}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Apply complete: {ran.group(1)} ran" in r.stdout  # everything again, in containers this time
    assert _hashes(tmp_path / "st") == local  # byte-identical outputs, computed in containers
    # every step ran in a container: the engine's event log has one container per step instance
    run = sorted((tmp_path / "st" / "runs").glob("*.json"))[-1]
    ran = [a for a, s in json.loads(run.read_text())["steps"].items() if s["status"] == "ran" and a.startswith("step.")]
    recorded = json.loads((project / ".mlspec/state/default.state.json").read_text())["resources"]
    assert sorted(ran) == sorted(a for a in recorded if a.startswith("step.")) and len(ran) >= 9
    events = docker_client.api.events(since=0, until=int(__import__("time").time()) + 1, decode=True,
                                      filters={"event": "start", "label": LABEL_OWNER})
    steps = {e["Actor"]["Attributes"].get("mlspec.step") for e in events}
    assert set(ran) <= steps, (ran, steps)
    left = [c for c in docker_client.containers.list(all=True) if c.id not in before]
    assert not left, "containers left behind"
